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
  :class:`~audit_plugin.exceptions.EncryptionError`;
* :class:`SupportsTrees`: the store keeps a Merkle tree over each chain and
  signed checkpoints of them (``prove()``, ``sign_checkpoint()``); without it
  those raise :class:`~audit_plugin.exceptions.ChainError`;
* :class:`ChainFeed`: the store reads its chain back in order after a
  sequence number (``trail.lifecycle_entries()``, what ``audit-plugin export
  --follow`` polls); without it that raises :class:`~audit_plugin.exceptions.ChainError`;
* :class:`QuarantineStore`: the store keeps transport messages an ingester
  could not store (``trail.quarantine()``, counted by ``verify()``).

SQL backends subclass :class:`audit_plugin.storage.sql.SQLBackend`, which implements
all of them except the batch write's statements: a SQL backend is a dialect of
:mod:`audit_plugin.storage.batch_write`. ``docs/backends.md`` is the author's guide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

from audit_plugin.model.records import AuditQuery, AuditRecord, AuditStatistics, IdMatches, StatusUpdate

if TYPE_CHECKING:
    from audit_plugin.integrity.checkpoint import Checkpoint
    from audit_plugin.integrity.ledger import ChainEntry, ChainHead, Ledger, PendingEntry
    from audit_plugin.integrity.shards import ShardedChains
    from audit_plugin.integrity.tiles import TileKey
    from audit_plugin.integrity.tree_checkpoint import TreeCheckpoint
    from audit_plugin.integrity.verify import ShardsReport, VerifyReport
    from audit_plugin.model.lifecycle import LifecycleStep
    from audit_plugin.storage.keystore import StoredKey
    from audit_plugin.storage.quarantine import QuarantinedMessage

BucketUnit = Literal["minute", "hour", "day"]
"""Width of one bucket of a message-volume series."""

BUCKET_UNITS: tuple[str, ...] = get_args(BucketUnit)


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

    async def ids_matching(self, fragment: str, limit: int) -> IdMatches:
        """Message ids starting or ending with ``fragment`` and correlation ids starting with it, each sorted, at
        most ``limit`` of each (any ``limit`` of them when more match: the answer serves to name one id or to
        say the fragment is ambiguous, and is read from indexes).

        ``fragment`` is matched literally (``%``, ``_``, ``*`` are not wildcards) and case by case.
        """

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
    head under the chain's writer lock; :mod:`audit_plugin.storage.batch_write` does
    all of that given a dialect's statements. Retention runs are recorded in
    the chain too (:func:`~audit_plugin.storage.chain_store.prune_chain`).
    """

    def use_ledger(self, ledger: Ledger | ShardedChains) -> None:
        """Extend these chains (their ids, shards, whether they hash); the trail calls it once, before ``initialize()``.

        ``initialize()`` gives the chains the store's shard count (or refuses
        a different one: :meth:`~audit_plugin.integrity.shards.ShardedChains.adopt`).
        """

    async def chain_head(self) -> ChainHead:
        """The (first shard's) chain's last committed entry (or its prune point; genesis for an empty chain)."""

    async def chain_heads(self) -> list[ChainHead]:
        """Each shard's :meth:`chain_head`, in shard order."""

    async def message_history(self, message_id: str) -> list[LifecycleStep]:
        """The lifecycle entries of ``message_id`` (retention entries excluded), oldest first; empty if unknown."""

    async def verify_chain(self, against: Checkpoint | None = None) -> VerifyReport:
        """Walk the (first shard's) chain from its prune point and report the first broken link.

        See :mod:`audit_plugin.integrity.verify` for what is checked.
        """

    async def verify_chains(self, against: Sequence[Checkpoint | None] = ()) -> VerifyReport | ShardsReport:
        """Walk every shard's chain (``against``: a checkpoint or ``None`` per shard) and report per shard.

        One shard: its :class:`~audit_plugin.integrity.verify.VerifyReport`;
        several: a :class:`~audit_plugin.integrity.verify.ShardsReport`.
        """

    async def append_entries(self, entries: Sequence[PendingEntry]) -> ChainHead | None:
        """Link ``entries`` (entries of no write batch: reads of the trail) after the chain's head and commit them.

        In a transaction of its own holding the chain's writer lock, as a
        retention run's entry is; returns the new head.
        """

    async def access_entries(
        self, limit: int, before: int | None = None
    ) -> list[tuple[int, datetime, str, str | None]]:
        """The chain's ``"access"`` entries below ``before``, newest first: ``(sequence, at, document, hash)``."""


@runtime_checkable
class ChainFeed(Protocol):
    """Optional: a :class:`LedgerStore` that reads its chain back in order, for exporters that follow the store.

    Entries are numbered without gaps and committed in order (under the
    chain's writer lock), so a reader that remembers the last sequence it
    handled misses nothing and sees nothing twice; only retention, pruning
    the chain's oldest entries, leaves a gap before the first one still kept.
    """

    async def entries_after(self, after: int, limit: int) -> list[tuple[ChainEntry, AuditRecord | None]]:
        """At most ``limit`` entries of the chain numbered above ``after``, in order.

        A ``"record"`` entry comes with its record as stored now (``None``
        once retention removed it); every other entry with ``None``.
        """


@runtime_checkable
class KeyStore(Protocol):
    """Wrapped per-subject data keys (table ``message_audit_keys`` in a SQL store).

    See :mod:`audit_plugin.privacy.crypto` for how they are made and used.
    """

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


@runtime_checkable
class TreeStorage(Protocol):
    """The Merkle trees over a store's chains, and their signed checkpoints (see :mod:`audit_plugin.storage.tree_log`).

    Tables ``message_audit_trees``, ``message_audit_tiles`` and
    ``message_audit_checkpoints`` in a SQL store
    (:mod:`audit_plugin.storage.tree_store`).
    """

    async def chain_ids(self) -> list[str]:
        """Every chain of the store, sorted."""

    async def tree(self, chain_id: str) -> tuple[int, int, dict[TileKey, bytes]] | None:
        """``(first_sequence, size, tiles of its right edge)`` of the chain's stored tree, or ``None``."""

    async def first_sequence(self, chain_id: str) -> int:
        """The sequence number a new tree of the chain starts at (the entry after its prune point)."""

    async def leaves(self, chain_id: str, first: int, limit: int) -> list[tuple[int, str | None]]:
        """``(sequence, entry_hash)`` of the chain's entries from ``first`` on, in order, at most ``limit``."""

    async def save(
        self, chain_id: str, first_sequence: int, size: int, root: bytes, changed: Mapping[TileKey, bytes]
    ) -> None:
        """Store the grown tree's changed tiles and its size and root in one transaction; never shrink either."""

    async def tiles(self, chain_id: str, keys: Collection[TileKey]) -> dict[TileKey, bytes]:
        """The stored tiles among ``keys``."""

    async def material(self, message_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The message's record as stored (covered columns, payload text) or ``None``, and its entries in order."""

    async def add_checkpoint(self, checkpoint: TreeCheckpoint) -> int:
        """Store a signed checkpoint; return its id."""

    async def checkpoints(self, limit: int | None = None, *, newest_first: bool = True) -> list[TreeCheckpoint]:
        """Stored checkpoints, newest (or oldest) first."""


@runtime_checkable
class SupportsTrees(Protocol):
    """Optional: a store that keeps Merkle trees over its chains (a :class:`LedgerStore` that hashes)."""

    def tree_storage(self) -> TreeStorage:
        """The store's trees (the same object each time)."""


@runtime_checkable
class QuarantineStore(Protocol):
    """Optional: a store that keeps transport messages an ingester could not store (see
    :mod:`audit_plugin.storage.quarantine`)."""

    async def quarantine(self, messages: Sequence[QuarantinedMessage]) -> None:
        """Keep ``messages`` (committed when this returns; one kept already is not doubled)."""

    async def quarantined_count(self) -> int:
        """How many messages are kept."""
