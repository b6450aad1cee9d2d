"""One batch write for every store: the algorithm here, the statements in a dialect.

A write batch (records to insert, status updates to apply, and the lifecycle
entries of what changed, linked into the hash chain) is one transaction.
Before it starts, the batch is folded (:class:`FoldedBatch`: a status update
of a record in the same batch is written as part of that record's row) and
every value is bound in the dialect's form. How it is written is the same
on every database, so it lives here once, as a generator that does no I/O
(:meth:`BatchWrite.steps`): it yields *requests* (:class:`Begin`,
:class:`InsertNew`, :class:`ApplyUpdates`...) and is sent each one's answer.
A dialect answers them with its own statements, and drives the generator the
way its driver wants: SQLite synchronously on its writer thread, the whole
batch in one hand-off (:func:`run_sync`); PostgreSQL with awaits
(:func:`run_async`). What each request asks and what its answer is, is
written on the request's class; ``docs/backends.md`` says it for authors.

The algorithm, first optimistic: it assumes no record of the batch is stored
yet (except :class:`~audit_plugin.integrity.ledger.FallbackRow` ones, inserted apart to
learn which are), that no operation id is stored yet, and that the chain's
head is the one this writer committed last (kept by the
:class:`~audit_plugin.integrity.ledger.Ledger`). In the common case that is four
requests: begin (with the chain's writer lock), the records, the entries,
commit. An assumption failing shows up as a conflict (fewer records inserted
than given; a sequence number or an operation id taken, by another writer or
a retention run); the transaction is rolled back and the batch written
again, carefully: stored ids and stored operation ids looked up (the batch
re-folded without operations already applied), the head read under the lock.

Errors a dialect raises are mapped here, once, to the documented hierarchy:
:class:`~audit_plugin.exceptions.StoreUnavailableError` when the dialect
classifies the error as transient (retrying the batch later can succeed),
:class:`~audit_plugin.exceptions.AuditStoreError` when the store refused it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Collection, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from audit_plugin.exceptions import AuditError, AuditStoreError, StoreUnavailableError, driver_message
from audit_plugin.integrity.ledger import (
    BOUND_EVENT_FIELDS,
    LINKED_COLUMNS,
    NOTHING_APPENDED,
    AppendedEntries,
    ChainHead,
    FallbackRow,
    Ledger,
    PendingEntry,
)
from audit_plugin.integrity.shards import ShardedChains
from audit_plugin.model.records import StatusUpdate
from audit_plugin.model.transitions import FINAL_STATUS_VALUES, distinct_operations, entry_kinds, operations

EVENT_FIELDS: tuple[str, ...] = BOUND_EVENT_FIELDS
"""The event fields of a lifecycle entry, in the order :meth:`Dialect.event_values` returns them."""

ENTRY_COLUMNS: tuple[str, ...] = LINKED_COLUMNS
"""``message_audit_events`` columns in the order of each row :class:`AppendEntries` carries."""


# -- folding: a batch's updates merged, and folded into the records they follow ---------------------


def first_per_message_id(rows: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """``rows`` without repeated message ids, keeping the first (the stored row always wins)."""
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["message_id"], row)
    return rows if len(unique) == len(rows) else list(unique.values())


def merge_updates(updates: Sequence[StatusUpdate]) -> list[StatusUpdate]:
    """One update per message with the effect of applying ``updates`` in order to a non-final status.

    A later update sets the status; its ``None`` fields keep what earlier
    ones set (as they keep the stored value). Updates after a message's
    first final one are not applied (see :mod:`audit_plugin.model.transitions`).
    Bulk ``UPDATE ... FROM`` needs this: it applies at most one source row
    per target row.
    """
    merged: dict[str, StatusUpdate] = {}
    closed: set[str] = set()
    for later in updates:
        if later.message_id in closed:
            continue
        earlier = merged.get(later.message_id)
        if earlier is not None:
            later = dataclasses.replace(  # keeps the later update's time, not a new one
                later,
                delivered_at=later.delivered_at if later.delivered_at is not None else earlier.delivered_at,
                error_message=later.error_message if later.error_message is not None else earlier.error_message,
                retry_count=later.retry_count if later.retry_count is not None else earlier.retry_count,
            )
        merged[later.message_id] = later
        if later.status.is_final:
            closed.add(later.message_id)
    return list(merged.values())


def with_update(row: dict[str, Any], update: StatusUpdate) -> dict[str, Any]:
    """``row`` as it is after ``update`` (``None`` fields of the update keep the row's value)."""
    return {
        **row,
        "status": update.status.value,
        "delivered_at": update.delivered_at if update.delivered_at is not None else row["delivered_at"],
        "error_message": update.error_message if update.error_message is not None else row["error_message"],
        "retry_count": update.retry_count if update.retry_count is not None else row["retry_count"],
    }


@dataclass(frozen=True, slots=True)
class FoldedBatch:
    """A batch ready to write: status updates of messages inserted in the same batch are folded into their rows.

    In ``"buffered"`` mode a message's PENDING record and its DELIVERED update
    usually land in the same batch; writing the final row once is far cheaper
    than an insert and an ``UPDATE`` (on PostgreSQL a status update rewrites
    the row and every index). If a row turns out to be stored already (so its
    insert is skipped), the writer applies the message's merged update to the
    stored row instead (:meth:`updates_of`), unless that row is final.
    """

    rows: Sequence[dict[str, Any]]
    """Rows to insert, distinct by ``message_id`` (first wins), folded updates applied."""
    folded: list[StatusUpdate]
    """Updates folded into ``rows``."""
    rest: list[StatusUpdate]
    """Updates of messages not inserted in this batch, at most one per message."""
    updates: Sequence[StatusUpdate] = ()
    """Every update of the batch, in order, repeated operations removed."""
    merged: dict[str, StatusUpdate] = dataclasses.field(default_factory=dict)
    """Per message, the merged update a stored non-final row gets."""
    final_rows: frozenset[str] = frozenset()
    """Ids of ``rows`` whose own status is final (nothing folds into them)."""
    fallback_ids: frozenset[str] = frozenset()
    """Ids of ``rows`` that are :class:`~audit_plugin.integrity.ledger.FallbackRow` (probably stored already)."""

    @classmethod
    def of(cls, rows: Sequence[dict[str, Any]], updates: Sequence[StatusUpdate]) -> FoldedBatch:
        rows = first_per_message_id(rows)
        updates = distinct_operations(updates)
        merged = {u.message_id: u for u in merge_updates(updates)}
        fallback_ids = frozenset(row["message_id"] for row in rows if isinstance(row, FallbackRow))
        pending = dict(merged)
        if not rows or not pending:
            return cls(rows, [], list(pending.values()), updates, merged, frozenset(), fallback_ids)
        folded: list[StatusUpdate] = []
        final_rows: set[str] = set()
        out: list[dict[str, Any]] = []
        for row in rows:
            update = pending.pop(row["message_id"], None)
            if update is None:
                out.append(row)
            elif row["status"] in FINAL_STATUS_VALUES:
                final_rows.add(row["message_id"])
                out.append(row)
            else:
                out.append(with_update(row, update))
                folded.append(update)
        return cls(out, folded, list(pending.values()), updates, merged, frozenset(final_rows), fallback_ids)

    def updates_of(self, message_ids: Iterable[str]) -> list[StatusUpdate]:
        """The merged updates of ``message_ids`` (rows found stored), for their stored rows."""
        return [self.merged[message_id] for message_id in message_ids if message_id in self.merged]

    def settle(
        self, inserted: Collection[str], opened: Collection[str], stored: Collection[str]
    ) -> tuple[list[str | None], set[str]]:
        """Each update's entry kind (see :func:`~audit_plugin.model.transitions.entry_kinds`) and the stored ids.

        ``inserted``: ids this batch inserted; ``opened``: ids whose merged
        update was applied to a stored row; ``stored``: ids stored before the
        batch (at least those of the other updates). The stored ids are the
        updated messages that exist: what the callers of their updates learn.
        """
        kinds = entry_kinds(self.updates, final_rows=self.final_rows, inserted=inserted, opened=opened, stored=stored)
        existing = {u.message_id for u, kind in zip(self.updates, kinds, strict=True) if kind is not None}
        return kinds, existing


# -- requests: what the algorithm asks a dialect, and the answer it expects ---------------------


@dataclass(frozen=True, slots=True)
class Begin:
    """Start the batch's transaction, holding the writer lock of each of ``chain_ids`` from its start. Answer: ``None``.

    A lock serialises the writers of one chain (PostgreSQL: an advisory
    lock per chain; SQLite: ``BEGIN IMMEDIATE``, which excludes every other
    writer); it must be held before the head is read. The chains are the
    shards the batch writes to (see :mod:`audit_plugin.integrity.shards`),
    in the order every writer takes their locks in (ascending shard), so
    two batches spanning the same shards never wait for each other in a circle.
    """

    chain_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit the transaction. Answer: ``None``."""


@dataclass(frozen=True, slots=True)
class Rollback:
    """Roll the transaction back (a conflict: the batch is written again). Answer: ``None``."""


@dataclass(frozen=True, slots=True)
class InsertNew:
    """Insert ``records``, expected not to be stored. Answer: ``True`` if every one went in.

    ``False`` when fewer went in than given (a ``message_id`` is stored
    already): the algorithm rolls back, so the dialect may use a path that
    fails on a stored one (``COPY``) and answer ``False`` then.
    """

    records: Sequence[Sequence[Any]]
    """Rows in the dialect's own form (:meth:`Dialect.record_values`)."""


@dataclass(frozen=True, slots=True)
class InsertMissing:
    """Insert those of ``records`` whose ``message_id`` is not stored. Answer: the ids inserted (a set)."""

    records: Sequence[Sequence[Any]]
    """Rows in the dialect's own form (:meth:`Dialect.record_values`)."""


@dataclass(frozen=True, slots=True)
class InsertAndUpdate:
    """:class:`InsertMissing` and :class:`ApplyUpdates` as one statement, for small batches.

    Asked only of a dialect whose :attr:`Dialect.one_statement_max` is at
    least the batch's size. ``updates`` apply to rows stored *before* the
    statement only (not to the rows it inserts), as PostgreSQL's
    data-modifying CTEs see the table. Answer: ``(inserted ids, updated ids)``.
    """

    records: Sequence[Sequence[Any]]
    updates: Sequence[StatusUpdate]


@dataclass(frozen=True, slots=True)
class ApplyUpdates:
    """Apply ``updates`` (at most one per message) to stored rows whose status is not final.

    ``None`` fields keep the stored value. Answer: the ids of the rows updated (a set).
    """

    updates: Sequence[StatusUpdate]


@dataclass(frozen=True, slots=True)
class StoredIds:
    """Which of ``ids`` have a stored record. Answer: a set of ids."""

    ids: Sequence[str]


@dataclass(frozen=True, slots=True)
class StoredOperations:
    """The operation ids the lifecycle holds for messages ``ids``. Answer: a set of ``(message_id, operation_id)``."""

    ids: Sequence[str]


@dataclass(frozen=True, slots=True)
class ReadHead:
    """The chain's head, read under the lock. Answer: ``(sequence, entry_hash)`` or ``None``.

    The chain's last entry; if it has none, its prune point
    (``pruned_sequence, pruned_hash`` of its ``message_audit_chains`` row);
    ``None`` if neither exists (a new chain starts at genesis).
    """

    chain_id: str


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Insert linked lifecycle entries (each a row in :data:`ENTRY_COLUMNS` order). Answer: ``True`` if they went in.

    ``False`` when a ``(chain_id, sequence)`` or an operation id is taken
    already (the database's unique constraints refuse it): the algorithm rolls
    back and reads the head under the lock.
    """

    rows: Sequence[Sequence[Any]]


Request = (
    Begin
    | Commit
    | Rollback
    | InsertNew
    | InsertMissing
    | InsertAndUpdate
    | ApplyUpdates
    | StoredIds
    | StoredOperations
    | ReadHead
    | AppendEntries
)

COMMIT, ROLLBACK = Commit(), Rollback()


class Dialect(Protocol):
    """What a store supplies besides answering requests: its value forms and its error classification."""

    one_statement_max: int
    """Largest batch (records + updates) to ask as one :class:`InsertAndUpdate`; 0: never."""

    def record_values(self, row: Mapping[str, Any]) -> Sequence[Any]:
        """A ``message_audit_log`` row as the dialect binds it (called before the transaction)."""

    def event_values(self, event: Mapping[str, Any]) -> Sequence[Any]:
        """A lifecycle entry's event (:data:`EVENT_FIELDS`) as the dialect binds it (before the transaction)."""

    def is_transient(self, exc: BaseException) -> bool:
        """True if ``exc`` (raised answering a request) means the store is unavailable, not the batch at fault."""


class WriteConflictError(AuditStoreError):
    """Written carefully (stored ids and the head read under the lock), the batch still met a taken row.

    Another writer that does not take this chain's lock wrote the same
    message or operation id meanwhile; the writer isolates the operation
    the store refuses, as for any refused batch.
    """


class _Conflict(Exception):
    """The optimistic write met a stored record or a moved chain head: roll back, write carefully."""


class BatchWrite:
    """One write batch, prepared before its transaction: folded, its entries' digests and every value bound.

    :param chains: the chains the entries extend: a trail's
        :class:`~audit_plugin.integrity.shards.ShardedChains`, or one
        :class:`~audit_plugin.integrity.ledger.Ledger` (each keeps its chain's head between batches).
    :param dialect: gives each row and event its bound form.

    With several shards the batch locks the shards its messages belong to
    (ascending), and links each shard's entries after that shard's head.
    """

    def __init__(
        self,
        chains: ShardedChains | Ledger,
        dialect: Dialect,
        rows: Sequence[dict[str, Any]],
        updates: Sequence[StatusUpdate],
    ) -> None:
        self.chains = ShardedChains.of(chains)
        self.ledger = self.chains.ledgers[0]
        """Prepares the entries (their digests do not depend on the chain they go into)."""
        self.dialect = dialect
        self.rows = rows
        self.update_ids = {u.message_id for u in updates}
        self.batch = FoldedBatch.of(rows, updates)
        self.lifecycle = self.ledger.prepare(rows, self.batch.updates)
        self.records = self._records(self.batch)
        shards = self.chains.shards_of([*self.records, *self.update_ids])
        self.ledgers = [self.chains.ledgers[shard] for shard in shards]
        """The ledgers of the shards the batch writes to, in lock order."""
        for entry in self.lifecycle:
            entry.parameters = (*dialect.event_values(entry.event), entry.digest)

    def _records(self, batch: FoldedBatch) -> dict[str, Sequence[Any]]:
        return {row["message_id"]: self.dialect.record_values(row) for row in batch.rows}

    def steps(self) -> Generator[Request, Any, set[str]]:
        """The batch's requests; returns the ids among the batch's updates that are stored."""
        try:
            return (yield from self._attempt(optimistic=True))
        except _Conflict:
            yield ROLLBACK
        try:
            return (yield from self._attempt(optimistic=False))
        except _Conflict:
            yield ROLLBACK
            raise WriteConflictError("a row the batch writes was taken by another writer meanwhile") from None

    def _attempt(self, *, optimistic: bool) -> Generator[Request, Any, set[str]]:
        kept_heads = {ledger.chain_id: ledger.take_kept_head() for ledger in self.ledgers}
        batch, lifecycle, records = self.batch, self.lifecycle, self.records
        yield Begin(tuple(kept_heads))
        stored: set[str] = set()
        if not optimistic:
            looked_up = [*records, *(self.update_ids - records.keys())]
            stored = (yield StoredIds(looked_up)) if looked_up else set()
            with_operations = [message_id for message_id, _ in operations(batch.updates)]
            if with_operations:
                applied = yield StoredOperations(with_operations)
                distinct = distinct_operations(batch.updates, applied)
                if len(distinct) != len(batch.updates):
                    batch = FoldedBatch.of(self.rows, distinct)
                    lifecycle = lifecycle.only(batch.updates)
                    records = self._records(batch)
        new_ids = [message_id for message_id in records if message_id not in stored]
        one_statement_max = self.dialect.one_statement_max
        if one_statement_max and len(new_ids) + len(batch.rest) + len(batch.folded) <= one_statement_max:
            taken, opened = yield InsertAndUpdate([records[m] for m in new_ids], batch.rest + batch.updates_of(records))
            stored.update(message_id for message_id in new_ids if message_id not in taken)
        else:
            if optimistic:
                regular = [m for m in new_ids if m not in batch.fallback_ids]
                if not (yield InsertNew([records[m] for m in regular])):
                    raise _Conflict
                fallback = [m for m in new_ids if m in batch.fallback_ids]
                if fallback:
                    taken = yield InsertMissing([records[m] for m in fallback])
                    stored.update(message_id for message_id in fallback if message_id not in taken)
            elif not (yield InsertNew([records[m] for m in new_ids])):
                raise _Conflict
            pending = batch.rest + batch.updates_of(m for m in records if m in stored)
            opened = (yield ApplyUpdates(pending)) if pending else set()
        if optimistic:
            unknown = [u.message_id for u in batch.rest if u.message_id not in opened]
            if unknown:  # late updates, or updates of messages not stored: rare
                stored |= yield StoredIds(unknown)
        inserted = [message_id for message_id in records if message_id not in stored]
        kinds, existing = batch.settle(inserted, opened, stored)
        entries = lifecycle.entries(inserted, kinds)
        heads = dict.fromkeys(kept_heads) if not optimistic else kept_heads
        appended: dict[str, AppendedEntries] = {}
        if entries:
            rows: list[Sequence[Any]] = []
            for ledger, chain_entries in self._per_chain(entries):
                head = heads[ledger.chain_id]
                if head is None:
                    head = ChainHead.of((yield ReadHead(ledger.chain_id)))
                heads[ledger.chain_id], appended[ledger.chain_id] = self._link(ledger, head, chain_entries, rows)
            if not (yield AppendEntries(rows)):
                raise _Conflict
        yield COMMIT
        for ledger in self.ledgers:
            ledger.committed(heads[ledger.chain_id], appended.get(ledger.chain_id, NOTHING_APPENDED))
        return existing | (stored & self.update_ids)

    def _per_chain(self, entries: list[PendingEntry]) -> list[tuple[Ledger, list[PendingEntry]]]:
        """``entries`` split by the shard of their message (order kept within each), in lock order."""
        if len(self.ledgers) == 1:
            return [(self.ledgers[0], entries)]
        split: dict[Ledger, list[PendingEntry]] = {ledger: [] for ledger in self.ledgers}
        for entry in entries:
            split[self.chains.ledger_of(entry.event["message_id"])].append(entry)
        return [(ledger, chain_entries) for ledger, chain_entries in split.items() if chain_entries]

    def _link(
        self, ledger: Ledger, head: ChainHead, entries: list[PendingEntry], rows: list[Sequence[Any]]
    ) -> tuple[ChainHead, AppendedEntries]:
        """Link ``entries`` after ``head`` in ``ledger``'s chain, adding their bound rows to ``rows``."""
        links, new_head = ledger.links(head, entries)
        chain_id = ledger.chain_id
        rows.extend(
            (*(entry.parameters or (*self.dialect.event_values(entry.event), entry.digest)), chain_id, *link)
            for entry, link in zip(entries, links, strict=True)
        )
        return new_head, AppendedEntries(chain_id, entries, links)


def run_sync(write: BatchWrite, answer: Callable[[Request], Any]) -> set[str]:
    """Write ``write``, answering each request with ``answer`` (blocking); its errors mapped (see the module)."""
    steps = write.steps()
    reply: Any = None
    while True:
        try:
            request = steps.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            reply = answer(request)
        except AuditError:
            raise
        except Exception as exc:
            raise mapped_error(exc, write.dialect) from exc


async def run_async(write: BatchWrite, answer: Callable[[Request], Awaitable[Any]]) -> set[str]:
    """Write ``write``, awaiting each request's answer from ``answer``; its errors mapped (see the module)."""
    steps = write.steps()
    reply: Any = None
    while True:
        try:
            request = steps.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            reply = await answer(request)
        except AuditError:
            raise
        except Exception as exc:
            raise mapped_error(exc, write.dialect) from exc


def mapped_error(exc: BaseException, dialect: Dialect) -> AuditStoreError:
    """``exc`` as the documented error: :class:`StoreUnavailableError` if the dialect says transient.

    The message is the driver's error type and first line (what the writer
    logs after "store unavailable" or "store refused ..."), never a statement.
    """
    text = driver_message(exc)
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if dialect.is_transient(exc):
        return StoreUnavailableError(reason)
    return AuditStoreError(reason)
