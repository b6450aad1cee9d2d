"""Storage: the backend contract, finding backends, the tables, the shared SQL, the batch write and the writer.

Owns :mod:`~audit_plugin.storage.backend` (the contract a store implements),
:mod:`~audit_plugin.storage.registry` (backends found through the
``audit_plugin`` entry points), :mod:`~audit_plugin.storage.schema` and
:mod:`~audit_plugin.storage.integrity_schema` (the tables),
:mod:`~audit_plugin.storage.sql` (what every SQL backend shares),
:mod:`~audit_plugin.storage.batch_write` (the one batch-write algorithm,
answered by each dialect), :mod:`~audit_plugin.storage.writer` (the queue and
group commit), :mod:`~audit_plugin.storage.chain_store` and
:mod:`~audit_plugin.storage.chain_walk` (the chain's rows),
:mod:`~audit_plugin.storage.history` (a message's lifecycle read back),
:mod:`~audit_plugin.storage.keystore` (wrapped data keys),
:mod:`~audit_plugin.storage.errors` (driver errors mapped once) and the
embedded default backend, :mod:`~audit_plugin.storage.sqlite`.
"""

from __future__ import annotations

from audit_plugin.storage.backend import AuditBackend, KeyStore, LedgerStore, SupportsSubjectKeys
from audit_plugin.storage.registry import create_backend, extension_manager, resolve_database_url
from audit_plugin.storage.sql import SQLBackend
from audit_plugin.storage.writer import AuditWriter, OverflowPolicy, WriterStats

__all__ = [
    "AuditBackend",
    "AuditWriter",
    "KeyStore",
    "LedgerStore",
    "OverflowPolicy",
    "SQLBackend",
    "SupportsSubjectKeys",
    "WriterStats",
    "create_backend",
    "extension_manager",
    "resolve_database_url",
]
