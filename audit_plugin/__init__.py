"""audit-plugin: a message audit trail for multi-agent systems.

Register :class:`AuditPlugin` on a :class:`MessageBus` (or any bus that calls
the ``audit_plugin`` hooks) and every message, with its outcome, is recorded
in a :class:`MessageAuditTrail` on SQLite or PostgreSQL.

This module is the public face: every name a user imports is here. The
package's wings, bottom floor first (a wing imports only wings below it):
``model`` (messages, records, validation), ``integrity`` (the hash chain),
``storage`` (backends, the writer), ``privacy`` (payload capture,
encryption), ``telemetry`` (spans, metrics), then :mod:`audit_plugin.trail`,
``hooks`` (the plugin, the reference bus, the shared options), the
integrations, the ``jetstream`` transport, ``reading``, and on top the
``web`` viewer and the ``cli``. See ``docs/layout.md``.

Names are imported when first used, so ``import audit_plugin`` is quick and
a part that needs only one wing (checking a proof bundle) loads only that
wing; ``from audit_plugin import X`` works as for any module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit_plugin import hookspecs
    from audit_plugin.exceptions import (
        AuditError,
        AuditStoreError,
        AuditTimeoutError,
        ChainError,
        EncryptionError,
        FieldTypeError,
        InvalidFieldError,
        PayloadNotSerializableError,
        PayloadTooDeepError,
        PayloadTooLargeError,
        QueueFullError,
        RecordDroppedError,
        StoreUnavailableError,
        TrailStateError,
        UnsupportedDatabaseURLError,
        WriteOnlyTrailError,
    )
    from audit_plugin.hooks.bus import MessageBus, call_hook
    from audit_plugin.hooks.options import AuditOptions
    from audit_plugin.hooks.plugin import AuditPlugin
    from audit_plugin.hookspecs import hookimpl
    from audit_plugin.integrity.checkpoint import Checkpoint
    from audit_plugin.integrity.proof_bundle import BundleCheck, ProofBundle, check_bundle
    from audit_plugin.integrity.tree_checkpoint import CheckpointPolicy, TreeCheckpoint
    from audit_plugin.integrity.verify import VerifyReport
    from audit_plugin.model.lifecycle import LifecycleStep
    from audit_plugin.model.messages import DeliveryReceipt, Message, MessageStatus, MessageType, Priority
    from audit_plugin.model.records import AuditQuery, AuditRecord, AuditStatistics, RetentionPolicy
    from audit_plugin.privacy.capture import PayloadPolicy
    from audit_plugin.privacy.crypto import KeyProvider, LocalKeyFileProvider
    from audit_plugin.storage.schema import MessageAuditLog
    from audit_plugin.trail import MessageAuditTrail

_PUBLIC: dict[str, str] = {
    "AuditError": "audit_plugin.exceptions",
    "AuditOptions": "audit_plugin.hooks.options",
    "AuditPlugin": "audit_plugin.hooks.plugin",
    "AuditQuery": "audit_plugin.model.records",
    "AuditRecord": "audit_plugin.model.records",
    "AuditStatistics": "audit_plugin.model.records",
    "AuditStoreError": "audit_plugin.exceptions",
    "AuditTimeoutError": "audit_plugin.exceptions",
    "BundleCheck": "audit_plugin.integrity.proof_bundle",
    "ChainError": "audit_plugin.exceptions",
    "Checkpoint": "audit_plugin.integrity.checkpoint",
    "CheckpointPolicy": "audit_plugin.integrity.tree_checkpoint",
    "DeliveryReceipt": "audit_plugin.model.messages",
    "EncryptionError": "audit_plugin.exceptions",
    "FieldTypeError": "audit_plugin.exceptions",
    "InvalidFieldError": "audit_plugin.exceptions",
    "KeyProvider": "audit_plugin.privacy.crypto",
    "LifecycleStep": "audit_plugin.model.lifecycle",
    "LocalKeyFileProvider": "audit_plugin.privacy.crypto",
    "Message": "audit_plugin.model.messages",
    "MessageAuditLog": "audit_plugin.storage.schema",
    "MessageAuditTrail": "audit_plugin.trail",
    "MessageBus": "audit_plugin.hooks.bus",
    "MessageStatus": "audit_plugin.model.messages",
    "MessageType": "audit_plugin.model.messages",
    "PayloadNotSerializableError": "audit_plugin.exceptions",
    "PayloadPolicy": "audit_plugin.privacy.capture",
    "PayloadTooDeepError": "audit_plugin.exceptions",
    "PayloadTooLargeError": "audit_plugin.exceptions",
    "Priority": "audit_plugin.model.messages",
    "ProofBundle": "audit_plugin.integrity.proof_bundle",
    "QueueFullError": "audit_plugin.exceptions",
    "RecordDroppedError": "audit_plugin.exceptions",
    "RetentionPolicy": "audit_plugin.model.records",
    "StoreUnavailableError": "audit_plugin.exceptions",
    "TrailStateError": "audit_plugin.exceptions",
    "TreeCheckpoint": "audit_plugin.integrity.tree_checkpoint",
    "UnsupportedDatabaseURLError": "audit_plugin.exceptions",
    "VerifyReport": "audit_plugin.integrity.verify",
    "WriteOnlyTrailError": "audit_plugin.exceptions",
    "call_hook": "audit_plugin.hooks.bus",
    "check_bundle": "audit_plugin.integrity.proof_bundle",
    "hookimpl": "audit_plugin.hookspecs",
    "hookspecs": "audit_plugin.hookspecs",
}
"""Each public name and the module it lives in."""

_WINGS = frozenset(
    {"cli", "exceptions", "hooks", "hookspecs", "integrations", "integrity", "jetstream", "model", "privacy"}
    | {"reading", "sinks", "storage", "telemetry", "testing", "trail", "web"}
)


def __getattr__(name: str) -> Any:
    """Import a public name (or a wing, ``audit_plugin.storage``) on first use."""
    module = _PUBLIC.get(name)
    if module is not None:
        value = importlib.import_module(module)
        if module != f"audit_plugin.{name}":
            value = getattr(value, name)
        globals()[name] = value
        return value
    if name in _WINGS:
        return importlib.import_module(f"audit_plugin.{name}")
    raise AttributeError(f"module 'audit_plugin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


__all__ = [
    "AuditError",
    "AuditOptions",
    "AuditPlugin",
    "AuditQuery",
    "AuditRecord",
    "AuditStatistics",
    "AuditStoreError",
    "AuditTimeoutError",
    "BundleCheck",
    "ChainError",
    "Checkpoint",
    "CheckpointPolicy",
    "DeliveryReceipt",
    "EncryptionError",
    "FieldTypeError",
    "InvalidFieldError",
    "KeyProvider",
    "LifecycleStep",
    "LocalKeyFileProvider",
    "Message",
    "MessageAuditLog",
    "MessageAuditTrail",
    "MessageBus",
    "MessageStatus",
    "MessageType",
    "PayloadNotSerializableError",
    "PayloadPolicy",
    "PayloadTooDeepError",
    "PayloadTooLargeError",
    "Priority",
    "ProofBundle",
    "QueueFullError",
    "RecordDroppedError",
    "RetentionPolicy",
    "StoreUnavailableError",
    "TrailStateError",
    "TreeCheckpoint",
    "UnsupportedDatabaseURLError",
    "VerifyReport",
    "WriteOnlyTrailError",
    "call_hook",
    "check_bundle",
    "hookimpl",
    "hookspecs",
]
