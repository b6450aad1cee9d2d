"""The append-only lifecycle and its hash chain, written in the same transaction as the records.

:class:`Ledger` turns inserted records and status updates (applied, or
``"late"``: see :mod:`audit_plugin.model.transitions`) into rows of
``message_audit_events``: it numbers them without gaps per chain and links
each to the previous one (see :mod:`audit_plugin.integrity.chain`). The backend calls it
inside its write transaction after taking the chain's writer lock, so
concurrent writers (other trails, other processes) extend one unforked chain.
Entry digests are computed before the lock is taken (a record's when the
record is built, see :class:`LedgeredRow`); while it is held, only the link
hashes (one SHA-256 each) are, and the digests of the rare entries known only
then: a late update's, and a :class:`FallbackRow` record's that was inserted.
New entries use hash format :data:`~audit_plugin.integrity.chain.HASH_VERSION` when the
store keeps payload text verbatim, else format 1 (the store decides: :meth:`Ledger.write_in_format`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit_plugin.exceptions import ChainError, InvalidFieldError
from audit_plugin.integrity import chain
from audit_plugin.model import transitions
from audit_plugin.model import validation as v
from audit_plugin.model.access import ACCESS_KIND
from audit_plugin.model.records import StatusUpdate

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


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One committed lifecycle entry, as stored in ``message_audit_events`` (see :mod:`audit_plugin.integrity.chain`).

    ``kind`` is ``"record"``, ``"status"``, ``"late"``, ``"retention"`` or ``"access"`` (a read of the trail:
    its document in ``error``, see :mod:`audit_plugin.model.access`);
    the hash columns are ``None`` in a chain written with ``hash_chain=False``.
    """

    chain_id: str
    sequence: int
    kind: str
    message_id: str | None
    status: str | None
    at: datetime
    retry_count: int | None
    error: str | None
    delivered_at: datetime | None
    operation_id: str | None
    record_digest: str | None
    hash_version: int | None
    entry_digest: str | None
    prev_hash: str | None
    entry_hash: str | None


Link = tuple[int, str | None, str | None]
"""An entry's place in its chain: ``(sequence, prev_hash, entry_hash)``."""


@dataclass(frozen=True, slots=True)
class AppendedEntries:
    """The entries one committed batch appended to a chain, kept as linked (made into :class:`ChainEntry` on demand)."""

    chain_id: str
    entries: Sequence[PendingEntry]
    links: Sequence[Link]

    def chain_entries(self) -> list[ChainEntry]:
        return [
            ChainEntry(
                self.chain_id, sequence, **entry.event, entry_digest=entry.digest, prev_hash=prev, entry_hash=linked
            )
            for entry, (sequence, prev, linked) in zip(self.entries, self.links, strict=True)
        ]


NOTHING_APPENDED = AppendedEntries("", (), ())


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
        """The format of the entries this ledger builds (the store picks it: :meth:`write_in_format`)."""
        self._kept_head: ChainHead | None = None
        self._appended = NOTHING_APPENDED

    def take_kept_head(self) -> ChainHead | None:
        """The head this chain's writer committed last, forgotten until :meth:`committed` is called again.

        The batch write (:mod:`audit_plugin.storage.batch_write`) links its next batch
        after it without reading the head, relying on the database to refuse
        a taken sequence number (then it reads the head under the lock and
        writes again). Taken before each transaction, kept again only once
        one commits: a failed transaction leaves no head to trust.
        """
        head, self._kept_head = self._kept_head, None
        return head

    def write_in_format(self, version: int) -> None:
        """Build entries in hash format ``version`` from now on (the newest the store can keep: see
        :func:`audit_plugin.storage.chain_store.ensure_chain`)."""
        if version not in chain.HASH_VERSIONS:
            raise ChainError(f"hash format {version} is not one this version of audit-plugin writes")
        self.hash_version = version

    def committed(self, head: ChainHead | None, appended: AppendedEntries) -> None:
        """A batch's transaction committed: keep its ``head`` (see :meth:`take_kept_head`) and what it appended."""
        self._kept_head = head
        self._appended = appended

    def take_appended(self) -> AppendedEntries:
        """What the last committed batch appended, forgotten until the next commit (for the post-commit hook)."""
        appended, self._appended = self._appended, NOTHING_APPENDED
        return appended

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

    def access_entry(self, at: datetime, records: int, document: str) -> PendingEntry:
        """A read of the trail (see :mod:`audit_plugin.model.access`): ``document`` in ``error``, ``records`` read.

        An ordinary entry, digested and linked like the others, so a read
        once recorded cannot be removed or changed without breaking the chain.
        """
        event = {
            "kind": ACCESS_KIND,
            "message_id": None,
            "status": None,
            "at": at,
            "retry_count": records,
            "error": document,
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

    # -- linking (no database; the caller holds the chain's writer lock) -------------------

    def links(self, head: ChainHead, entries: Sequence[PendingEntry]) -> tuple[list[Link], ChainHead]:
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
