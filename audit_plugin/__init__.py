"""audit-plugin: a message audit trail for multi-agent systems.

Register :class:`AuditPlugin` on a :class:`MessageBus` (or any bus that calls
the ``audit_plugin`` hooks) and every message, with its outcome, is recorded
in a :class:`MessageAuditTrail` on SQLite or PostgreSQL.
"""

from __future__ import annotations

from audit_plugin import hookspecs
from audit_plugin.bus import MessageBus, call_hook
from audit_plugin.capture import PayloadPolicy
from audit_plugin.checkpoint import Checkpoint
from audit_plugin.crypto import KeyProvider, LocalKeyFileProvider
from audit_plugin.hookspecs import hookimpl
from audit_plugin.lifecycle import LifecycleStep
from audit_plugin.messages import DeliveryReceipt, Message, MessageStatus, MessageType, Priority
from audit_plugin.plugin import AuditPlugin
from audit_plugin.records import AuditQuery, AuditRecord, AuditStatistics, RetentionPolicy
from audit_plugin.schema import MessageAuditLog
from audit_plugin.trail import MessageAuditTrail
from audit_plugin.verify import VerifyReport

__all__ = [
    "AuditPlugin",
    "AuditQuery",
    "AuditRecord",
    "AuditStatistics",
    "Checkpoint",
    "DeliveryReceipt",
    "KeyProvider",
    "LifecycleStep",
    "LocalKeyFileProvider",
    "Message",
    "MessageAuditLog",
    "MessageAuditTrail",
    "MessageBus",
    "MessageStatus",
    "MessageType",
    "PayloadPolicy",
    "Priority",
    "RetentionPolicy",
    "VerifyReport",
    "call_hook",
    "hookimpl",
    "hookspecs",
]
