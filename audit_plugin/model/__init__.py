"""The data model, the bottom floor: what a message, a record, a query and a lifecycle step are.

Owns :mod:`~audit_plugin.model.messages` (``Message``, its enums, the
delivery receipt), :mod:`~audit_plugin.model.records` (the stored record,
queries, statistics, status updates), :mod:`~audit_plugin.model.lifecycle`
(a lifecycle step as read back), :mod:`~audit_plugin.model.transitions`
(which status changes apply), :mod:`~audit_plugin.model.validation` (the
checks every entry point runs, against what every store can hold) and
:mod:`~audit_plugin.model.markers` (what stands in for a payload that is
not shown). It imports nothing of audit-plugin but its exceptions.
"""

from __future__ import annotations

from audit_plugin.model.lifecycle import LifecycleStep
from audit_plugin.model.markers import MARKER_KEY
from audit_plugin.model.messages import DeliveryReceipt, Message, MessageStatus, MessageType, Priority
from audit_plugin.model.records import AuditQuery, AuditRecord, AuditStatistics, RetentionPolicy, StatusUpdate

__all__ = [
    "MARKER_KEY",
    "AuditQuery",
    "AuditRecord",
    "AuditStatistics",
    "DeliveryReceipt",
    "LifecycleStep",
    "Message",
    "MessageStatus",
    "MessageType",
    "Priority",
    "RetentionPolicy",
    "StatusUpdate",
]
