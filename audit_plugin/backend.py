"""The backend contract: everything the trail asks of a store, and nothing more.

A backend is found through the ``audit_plugin`` entry-point group (see
:func:`audit_plugin.hookspecs.audit_create_backend`). Every backend implements
:class:`AuditBackend`. Two capabilities are optional, and the trail checks for
them with ``isinstance`` (these protocols are runtime-checkable):

* :class:`LedgerStore`: the store keeps the lifecycle and its hash chain
  (``get_message_history()``, ``verify()``, ``checkpoint()``); without it those
  raise :class:`~audit_plugin.exceptions.ChainError` and records are written
  without lifecycle entries;
* :class:`SupportsSubjectKeys`: the store keeps wrapped per-subject data keys
  (encryption at rest, ``erase_subject()``); without it those raise
  :class:`~audit_plugin.exceptions.EncryptionError`.

SQL backends subclass :class:`audit_plugin.sql.SQLBackend`, which implements
all three except the batch write's statements: a SQL backend is a dialect of
:mod:`audit_plugin.batch_write`. ``docs/backends.md`` is the author's guide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

from audit_plugin.records import AuditQuery, AuditRecord, AuditStatistics, StatusUpdate

if TYPE_CHECKING:
    from audit_plugin.checkpoint import Checkpoint
    from audit_plugin.keystore import StoredKey
    from audit_plugin.ledger import ChainHead, Ledger
    from audit_plugin.lifecycle import LifecycleStep
    from audit_plugin.verify import VerifyReport

BucketUnit = Literal["minute", "hour", "day"]
"""Width of one bucket of a message-volume series."""

BUCKET_UNITS: tuple[str, ...] = get_args(BucketUnit)

IdColumn = Literal["message_id", "correlation_id"]
"""The id columns a prefix can be looked up in."""


@runtime_checkable
class AuditBackend(Protocol):
    """A store for audit records."""

    name: str
    """Short name shown to users (``"sqlite"``, ``"postgresql"``)."""

    async def initialize(self) -> None:
        """Create tables and indexes if missing; safe to call on an existing store."""

    async def write_batch(self, rows: Sequence[dict[str, Any]], updates: Sequence[StatusUpdate]) -> set[str]:
        """Insert ``rows`` and apply ``updates`` (in order) in one transaction.

        Inserting a ``message_id`` that is already stored is a no-op, so a
        batch retried after a lost commit acknowledgement creates no
        duplicates. Returns the ids among ``updates`` that exist (those
        updates were applied). Raises on failure with nothing committed:
        :class:`~audit_plugin.exceptions.StoreUnavailableError` when the
        store is unavailable (the writer retries the batch later),
        :class:`~audit_plugin.exceptions.AuditStoreError` when it refuses the
        batch (the writer splits it to find the operation at fault). A
        :class:`LedgerStore` also appends the lifecycle entries of what it
        inserted and applied, in the same transaction.
        """

    async def query(self, query: AuditQuery, *, oldest_first: bool = False) -> list[AuditRecord]:
        """Records matching every filter of ``query``, one page."""

    async def get(self, message_id: str) -> AuditRecord | None:
        """The record of ``message_id``, or ``None``."""

    def stream(self, query: AuditQuery, *, oldest_first: bool = True) -> AsyncIterator[AuditRecord]:
        """All records matching ``query``'s filters (ignoring limit/offset), in constant memory."""

    async def ids_with_prefix(self, column: IdColumn, prefix: str, limit: int) -> list[str]:
        """Distinct values of ``column`` starting with ``prefix``, sorted, at most ``limit``.

        ``prefix`` is matched literally (``%`` and ``_`` are not wildcards).
        """

    async def ids_with_suffix(self, column: IdColumn, suffix: str, limit: int) -> list[str]:
        """Distinct values of ``column`` ending with ``suffix``, sorted, at most ``limit`` (matched literally)."""

    async def agent_history(self, agent_id: str, since: datetime, limit: int | None) -> list[AuditRecord]:
        """Messages ``agent_id`` sent or received since ``since``, newest first."""

    async def statistics(self, start_time: datetime | None, end_time: datetime | None) -> AuditStatistics:
        """Aggregates over messages with ``start_time <= timestamp <= end_time``."""

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Delete records with ``timestamp < cutoff``; return how many."""

    async def count(self, query: AuditQuery) -> int:
        """How many records match ``query``'s filters (limit/offset ignored)."""

    async def count_older_than(self, cutoff: datetime) -> int:
        """How many records have ``timestamp < cutoff`` (what retention would delete)."""

    def delete_older_than_in_chunks(self, cutoff: datetime, chunk_size: int) -> AsyncIterator[int]:
        """Delete records with ``timestamp < cutoff`` in transactions of at most ``chunk_size`` rows.

        Yields each committed chunk's count (for progress); memory stays flat.
        """

    async def delivery_percentiles(
        self, start_time: datetime | None, end_time: datetime | None, percentiles: Sequence[float]
    ) -> dict[float, float | None]:
        """Nearest-rank percentiles (0-100) of delivery seconds of delivered messages in the window."""

    async def message_volume(
        self, start_time: datetime | None, end_time: datetime | None, unit: BucketUnit
    ) -> list[tuple[datetime, int]]:
        """``(bucket start, count)`` per ``unit`` ("minute", "hour", "day"), oldest first, empty ones absent."""

    async def close(self) -> None:
        """Release connections."""


@runtime_checkable
class LedgerStore(Protocol):
    """Optional: a store that keeps each message's lifecycle and the hash chain linking it.

    Its :meth:`AuditBackend.write_batch` appends, in the batch's
    transaction, the entries of ``ledger.prepare(rows, updates)`` for the
    records it inserted and the updates it applied, linked after the chain's
    head under the chain's writer lock; :mod:`audit_plugin.batch_write` does
    all of that given a dialect's statements. Retention runs are recorded in
    the chain too (:meth:`~audit_plugin.ledger.Ledger.prune`).
    """

    def use_ledger(self, ledger: Ledger) -> None:
        """Extend ``ledger``'s chain (its id, whether it hashes); the trail calls it once, before ``initialize()``."""

    async def chain_head(self) -> ChainHead:
        """The chain's last committed entry (or its prune point; genesis for an empty chain)."""

    async def message_history(self, message_id: str) -> list[LifecycleStep]:
        """The lifecycle entries of ``message_id`` (retention entries excluded), oldest first; empty if unknown."""

    async def verify_chain(self, against: Checkpoint | None = None) -> VerifyReport:
        """Walk the chain from its prune point and report the first broken link (see :mod:`audit_plugin.verify`)."""


@runtime_checkable
class KeyStore(Protocol):
    """Wrapped per-subject data keys (table ``message_audit_keys`` in a SQL store); see :mod:`audit_plugin.crypto`."""

    async def live_key(self, subject_id: str, master_key_id: str) -> StoredKey | None:
        """The newest unerased key of ``subject_id`` wrapped by ``master_key_id``, if any."""

    async def add(self, key_id: str, subject_id: str, master_key_id: str, wrapped_key: bytes) -> None:
        """Store a new wrapped key (committed when this returns)."""

    async def load(self, key_ids: Collection[str]) -> dict[str, StoredKey]:
        """The keys of ``key_ids`` that exist (erased ones with ``wrapped_key`` ``None``), by key id."""

    async def erase(self, subject_id: str) -> int:
        """Destroy every wrapped key of ``subject_id`` (keep the row, mark it erased); return how many."""


@runtime_checkable
class SupportsSubjectKeys(Protocol):
    """Optional: a store that keeps wrapped data keys, for encryption at rest and crypto-shredding."""

    def subject_keys(self) -> KeyStore:
        """The store's key store (the same object each time)."""
