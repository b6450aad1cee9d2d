"""The append-only lifecycle and its hash chain, written in the same transaction as the records.

:class:`Ledger` turns inserted records and status updates (applied, or
``"late"``: see :mod:`audit_plugin.transitions`) into rows of
``message_audit_events``: it numbers them without gaps per chain and links
each to the previous one (see :mod:`audit_plugin.chain`). The backend calls it
inside its write transaction after taking the chain's writer lock, so
concurrent writers (other trails, other processes) extend one unforked chain.
Entry digests are computed before the lock is taken (a record's when the
record is built, see :class:`LedgeredRow`); while it is held, only the link
hashes (one SHA-256 each) are, and the digests of the rare entries known only
then: a late update's, and a :class:`FallbackRow` record's that was inserted.
New entries use hash format :data:`~audit_plugin.chain.HASH_VERSION` when the
store keeps payload text verbatim, else format 1 (see :meth:`Ledger.ensure_chain`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_plugin import chain, transitions
from audit_plugin import validation as v
from audit_plugin.exceptions import ChainError, InvalidFieldError
from audit_plugin.integrity_schema import chains, events, payload_text_kept
from audit_plugin.records import StatusUpdate

DEFAULT_CHAIN_ID = "default"

BOUND_EVENT_FIELDS: tuple[str, ...] = (*chain.EVENT_FIELDS_V2, "hash_version")
"""The event columns of an entry (every key of :attr:`PendingEntry.event`), in the order backends bind them."""

LINKED_COLUMNS: tuple[str, ...] = (
    *BOUND_EVENT_FIELDS,
    "entry_digest",
    "chain_id",
    "sequence",
    "prev_hash",
    "entry_hash",
)
"""``message_audit_events`` columns in the order of a backend's bound entry: the event, its digest, its link."""

e = events.c


@dataclass(slots=True)
class PendingEntry:
    """An entry waiting for its sequence number: its event columns and (when hashing) its digest."""

    event: dict[str, Any]
    digest: str | None
    parameters: tuple[Any, ...] = ()
    """The event columns as a backend binds them, when it prepares them before taking the chain lock."""
    record: Mapping[str, Any] | None = None
    """A record whose digest is still to be computed: a :class:`FallbackRow`'s, only if it is inserted."""

    def complete(self) -> PendingEntry:
        """This entry with its digest computed, if it was left for later (bound parameters then cleared)."""
        if self.record is not None:
            self.digest = seal(self.event, self.record)
            self.record = None
            self.parameters = ()
        return self


class LedgeredRow(dict[str, Any]):
    """A ``message_audit_log`` row that carries its ``"record"`` entry's digests, computed with the row.

    The trail builds it where the record is built (the caller's task), so
    the digests' CPU time is spent there, beside the writer's database work,
    rather than in the writer's critical path. Only the digests and the
    format are kept (the entry's event follows from the row): a queued record
    holds as few objects as it can for the garbage collector to walk.
    """

    __slots__ = ("digest", "hash_version", "record_digest")

    def __init__(
        self,
        row: Mapping[str, Any],
        digest: str | None,
        record_digest: str | None = None,
        hash_version: int | None = None,
    ) -> None:
        super().__init__(row)
        self.digest = digest
        self.record_digest = record_digest
        self.hash_version = hash_version


class FallbackRow(LedgeredRow):
    """A record stored only if its message has none yet (the consume side's copy of the message).

    Usually the producer's record is stored already, so a backend inserts
    these expecting conflicts rather than treating one as a surprise, and
    the digest is computed only for one that is inserted (``digest`` stays
    ``None`` until then).
    """

    __slots__ = ()


@dataclass(slots=True)
class LedgerBatch:
    """The entries a write batch may append, prepared before the batch's transaction.

    Which of them are appended is known only inside it: records whose insert
    was not skipped (already stored), updates whose message exists.
    """

    records: dict[str, PendingEntry]
    """One record entry per distinct ``message_id`` (the first row wins), in batch order."""
    changes: list[tuple[StatusUpdate, PendingEntry]]
    """One status entry per update, in order, with its update."""
    late_entry: Callable[[StatusUpdate], PendingEntry]
    """Builds the ``"late"`` entry of an update found not to apply (rare: built only then)."""

    def __iter__(self) -> Iterator[PendingEntry]:
        """Every prepared entry, appended or not."""
        yield from self.records.values()
        for _, entry in self.changes:
            yield entry

    def only(self, updates: Sequence[StatusUpdate]) -> LedgerBatch:
        """This batch with the status entries of ``updates`` only (a subset of its own, same objects)."""
        if len(updates) == len(self.changes):
            return self
        kept = {id(update) for update in updates}
        return LedgerBatch(self.records, [c for c in self.changes if id(c[0]) in kept], self.late_entry)

    def entries(self, inserted: Iterable[str], kinds: Sequence[str | None]) -> list[PendingEntry]:
        """Record entries of the ``inserted`` ids, then each update's entry of its kind (``None``: none)."""
        entries = [self.records[message_id].complete() for message_id in inserted]
        for (change, entry), kind in zip(self.changes, kinds, strict=True):
            if kind == transitions.APPLIED:
                entries.append(entry)
            elif kind == transitions.LATE:
                entries.append(self.late_entry(change))
        return entries


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last entry of a chain (or the prune point / genesis if it has none)."""

    sequence: int
    hash: str

    @classmethod
    def of(cls, row: Sequence[Any] | None) -> ChainHead:
        """The head from a ``(sequence, hash)`` row: the last entry, else the prune point; genesis if neither."""
        if row is None:
            return cls(0, chain.GENESIS_HASH)
        return cls(row[0], row[1] or chain.GENESIS_HASH)


class Ledger:
    """Appends lifecycle entries for one chain.

    :param chain_id: which chain this writer extends (text, at most 64
        characters, no NUL); one chain per database is the normal set-up.
    :param hashing: compute digests and link hashes (``False`` still records
        the lifecycle, with empty hash columns that ``verify()`` reports).
    """

    def __init__(self, chain_id: str = DEFAULT_CHAIN_ID, *, hashing: bool = True) -> None:
        check_chain_id(chain_id)
        if not isinstance(hashing, bool):
            raise v.FieldTypeError("hash_chain", "bool", hashing)
        self.chain_id = chain_id
        self.hashing = hashing
        self.hash_version = chain.HASH_VERSION
        """The format of the entries this ledger builds (set by :meth:`ensure_chain` from the store)."""
        self._kept_head: ChainHead | None = None

    def take_kept_head(self) -> ChainHead | None:
        """The head this chain's writer committed last, forgotten until :meth:`keep_head` is called again.

        The batch write (:mod:`audit_plugin.batch_write`) links its next batch
        after it without reading the head, relying on the database to refuse
        a taken sequence number (then it reads the head under the lock and
        writes again). Taken before each transaction, kept again only once
        one commits: a failed transaction leaves no head to trust.
        """
        head, self._kept_head = self._kept_head, None
        return head

    def keep_head(self, head: ChainHead | None) -> None:
        """Remember ``head``, the head of a transaction that just committed (``None``: nothing known)."""
        self._kept_head = head

    # -- building entries (no database, no lock) -------------------------------------

    def prepare(self, rows: Sequence[Mapping[str, Any]], updates: Sequence[StatusUpdate]) -> LedgerBatch:
        """Entries (digests included) for a write batch; see :class:`LedgerBatch`."""
        records: dict[str, PendingEntry] = {}
        for row in rows:
            if row["message_id"] not in records:
                if isinstance(row, FallbackRow):
                    deferred = row if self.hashing else None
                    event = record_event(row, self._version())
                    records[row["message_id"]] = PendingEntry(event, None, record=deferred)
                elif isinstance(row, LedgeredRow):
                    event = record_event(row, row.hash_version, row.record_digest)
                    records[row["message_id"]] = PendingEntry(event, row.digest)
                else:
                    records[row["message_id"]] = self.record_entry(row)
        return LedgerBatch(records, [(u, self.status_entry(u)) for u in updates], self.late_entry)

    def ledgered(self, row: Mapping[str, Any], *, fallback: bool = False) -> LedgeredRow:
        """``row`` with its ``"record"`` entry's digests (see :class:`LedgeredRow`); a :class:`FallbackRow` without."""
        if fallback:
            return FallbackRow(row, None)
        if not self.hashing:
            return LedgeredRow(row, None)
        event = record_event(row, self.hash_version)
        return LedgeredRow(row, seal(event, row), event["record_digest"], self.hash_version)

    def record_entry(self, row: Mapping[str, Any]) -> PendingEntry:
        """The ``"record"`` entry for a newly inserted ``message_audit_log`` row."""
        event = record_event(row, self._version())
        return PendingEntry(event, self._seal(event, row))

    def status_entry(self, update: StatusUpdate, kind: str = transitions.APPLIED) -> PendingEntry:
        """The ``"status"`` entry for an applied status change (or retry); ``kind="late"`` for one not applied."""
        event = {
            "kind": kind,
            "message_id": update.message_id,
            "status": update.status.value,
            "at": update.at,
            "retry_count": update.retry_count,
            "error": update.error_message,
            "delivered_at": update.delivered_at,
            "operation_id": update.operation_id,
            "record_digest": None,
            "hash_version": self._version(),
        }
        return PendingEntry(event, self._seal(event))

    def late_entry(self, update: StatusUpdate) -> PendingEntry:
        """The ``"late"`` entry of an update reported after its message's status was final."""
        return self.status_entry(update, transitions.LATE)

    def retention_entry(self, cutoff: datetime, deleted: int) -> PendingEntry:
        """A retention run: records older than ``cutoff`` were deleted (``retry_count`` holds how many)."""
        event = {
            "kind": "retention",
            "message_id": None,
            "status": None,
            "at": cutoff,
            "retry_count": deleted,
            "error": None,
            "delivered_at": None,
            "operation_id": None,
            "record_digest": None,
            "hash_version": self._version(),
        }
        return PendingEntry(event, self._seal(event))

    def _version(self) -> int | None:
        """The ``hash_version`` of a new entry (``None`` when not hashing: the entry has no hashes)."""
        return self.hash_version if self.hashing else None

    def _seal(self, event: dict[str, Any], record: Mapping[str, Any] | None = None) -> str | None:
        return seal(event, record) if self.hashing else None

    # -- in the writer's transaction, with the chain lock held ---------------------------

    async def ensure_chain(self, conn: AsyncConnection) -> None:
        """Pick this ledger's hash format for the store; create this chain's row, or move its version up.

        Format 2 hashes the payload text as stored, so it needs a payload
        column that keeps it verbatim; on one that does not (PostgreSQL
        ``jsonb``, made by earlier versions) entries stay in format 1. The
        chain's ``hash_version`` is the newest format written into it: a
        chain already moved to a format this version does not know is
        refused (``ChainError``), rather than extended with entries its other
        writers' ``verify()`` would not expect.
        """
        self.hash_version = chain.HASH_VERSION if await conn.run_sync(payload_text_kept) else 1
        where = chains.c.chain_id == self.chain_id
        stored = await conn.scalar(select(chains.c.hash_version).where(where))
        if stored is not None:
            if stored > chain.HASH_VERSION:
                raise ChainError(
                    f"chain {self.chain_id!r} is written in hash format {stored}; this version of audit-plugin "
                    f"writes format {chain.HASH_VERSION} at most: upgrade it"
                )
            if stored < self.hash_version:
                await conn.execute(update(chains).where(where).values(hash_version=self.hash_version))
            return
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(chains).values(
                        chain_id=self.chain_id,
                        hash_version=self.hash_version,
                        created_at=datetime.now(UTC),
                        pruned_sequence=0,
                        pruned_hash=chain.GENESIS_HASH,
                    )
                )
        except IntegrityError:
            pass  # another writer created it first

    async def head(self, conn: AsyncConnection) -> ChainHead:
        last = (
            await conn.execute(
                select(e.sequence, e.entry_hash).where(e.chain_id == self.chain_id).order_by(e.sequence.desc()).limit(1)
            )
        ).first()
        return ChainHead.of(last) if last is not None else await self.prune_point(conn)

    async def prune_point(self, conn: AsyncConnection) -> ChainHead:
        row = (
            await conn.execute(
                select(chains.c.pruned_sequence, chains.c.pruned_hash).where(chains.c.chain_id == self.chain_id)
            )
        ).first()
        return ChainHead.of(row)

    def links(
        self, head: ChainHead, entries: Sequence[PendingEntry]
    ) -> tuple[list[tuple[int, str | None, str | None]], ChainHead]:
        """``(sequence, prev_hash, entry_hash)`` of each of ``entries`` after ``head``, and the new head."""
        sequence, previous = head.sequence, head.hash
        links = []
        for entry in entries:
            sequence += 1
            if entry.digest is None:
                links.append((sequence, None, None))
                previous = chain.GENESIS_HASH
            else:
                version = entry.event["hash_version"]
                entry_hash = chain.link_hash(self.chain_id, sequence, previous, entry.digest, version)
                links.append((sequence, previous, entry_hash))
                previous = entry_hash
        return links, ChainHead(sequence, previous)

    def link(self, head: ChainHead, entries: Sequence[PendingEntry]) -> tuple[list[dict[str, Any]], ChainHead]:
        """The ``message_audit_events`` rows for ``entries`` after ``head``, and the new head (no database)."""
        links, new_head = self.links(head, entries)
        rows = [
            {
                **entry.event,
                "chain_id": self.chain_id,
                "sequence": sequence,
                "entry_digest": entry.digest,
                "prev_hash": prev_hash,
                "entry_hash": entry_hash,
            }
            for entry, (sequence, prev_hash, entry_hash) in zip(entries, links, strict=True)
        ]
        return rows, new_head

    async def append(self, conn: AsyncConnection, entries: Sequence[PendingEntry]) -> ChainHead | None:
        """Number, link and insert ``entries`` after the chain's head; return the new head.

        The caller holds the chain's writer lock (see ``SQLBackend.write_transaction``).
        """
        if not entries:
            return None
        rows, head = self.link(await self.head(conn), entries)
        await conn.execute(insert(events), rows)
        return head

    async def prune(
        self, conn: AsyncConnection, cutoff: datetime, deleted: int, *, drop_prefix: bool = True, prefix: ChainPrefix
    ) -> None:
        """Record a retention run in the chain and drop the chain's prefix older than ``cutoff``.

        The prefix ends just before the first entry at or after ``cutoff``
        (the retention entry itself always stays); its last entry becomes the
        prune point that verification starts from. A run deleting in chunks
        records every chunk and drops the prefix after the last one.
        ``prefix`` finds and removes the entries (see :class:`ChainPrefix`).
        """
        marker = await self.append(conn, [self.retention_entry(cutoff, deleted)])
        assert marker is not None
        if not drop_prefix:
            return
        newer = await prefix.first_at_or_after(conn, self.chain_id, cutoff)
        first_kept = marker.sequence if newer is None else min(newer, marker.sequence)
        last_pruned = (
            await conn.execute(
                select(e.sequence, e.entry_hash).where(e.chain_id == self.chain_id, e.sequence == first_kept - 1)
            )
        ).first()
        if last_pruned is None:
            return
        await prefix.drop_through(conn, self.chain_id, last_pruned.sequence)
        await conn.execute(
            update(chains)
            .where(chains.c.chain_id == self.chain_id)
            .values(
                pruned_sequence=last_pruned.sequence,
                pruned_hash=last_pruned.entry_hash or chain.GENESIS_HASH,
                pruned_at=datetime.now(UTC),
            )
        )


class ChainPrefix:
    """How retention finds and removes a chain's prefix: portable SQL; a store with a faster way subclasses it."""

    async def first_at_or_after(self, conn: AsyncConnection, chain_id: str, cutoff: datetime) -> int | None:
        """The lowest sequence number of ``chain_id``'s entries with ``at >= cutoff`` (``None``: none)."""
        # In sequence order, stopping at the first match: reads the prefix being pruned, not the whole chain.
        return await conn.scalar(
            select(e.sequence).where(e.chain_id == chain_id, e.at >= cutoff).order_by(e.sequence).limit(1)
        )

    async def drop_through(self, conn: AsyncConnection, chain_id: str, last: int) -> None:
        """Delete ``chain_id``'s entries numbered ``<= last``."""
        await conn.execute(events.delete().where(e.chain_id == chain_id, e.sequence <= last))


def record_event(row: Mapping[str, Any], hash_version: int | None, record_digest: str | None = None) -> dict[str, Any]:
    """The event columns of the ``"record"`` entry of a ``message_audit_log`` row."""
    return {
        "kind": "record",
        "message_id": row["message_id"],
        "status": row["status"],
        "at": row["timestamp"],
        "retry_count": row["retry_count"],
        "error": row["error_message"],
        "delivered_at": row["delivered_at"],
        "operation_id": None,
        "record_digest": record_digest,
        "hash_version": hash_version,
    }


def seal(event: dict[str, Any], record: Mapping[str, Any] | None = None) -> str:
    """The digest of the entry ``event`` in its ``hash_version``; ``record``: the row of a record entry.

    In format 2 a record entry's ``record_digest`` is computed here and set
    in ``event``, since the entry's digest covers it.
    """
    if event["hash_version"] == 1:
        return chain.entry_digest_v1(event, record)
    if record is not None:
        event["record_digest"] = chain.record_digest(record)
    return chain.entry_digest(event)


def check_chain_id(chain_id: object) -> str:
    value = v.check_text("chain_id", chain_id, max_length=64)
    assert value is not None
    if not value.isprintable():
        raise InvalidFieldError("chain_id", "must be printable text")
    return value
