"""``verify()``: walk a chain in sequence order and report the first broken link.

Streams entries joined with their records, ``STREAM_CHUNK`` rows per round
trip, so memory stays bounded whatever the chain's length. Checks, in order,
for every entry after the prune point:

* its sequence number is the next one (a gap means entries were deleted);
* its ``prev_hash`` is the previous entry's hash;
* its content still gives its digests, in the entry's own hash format
  (``hash_version``: see :mod:`audit_plugin.chain`): in format 2 the record's
  columns and stored payload give its ``record_digest``, and the event's
  columns (that digest included) its ``entry_digest``, whether the record is
  still there or not; in format 1 one digest covers both. A record deleted
  by retention is accepted when a later retention entry covers it;
* its ``entry_hash`` links all of that (so a rewritten digest is caught);
* with a checkpoint: the entry at the checkpoint's sequence has its hash, and
  the chain reaches that far.

Then, if the chain is intact: every row of ``message_audit_log`` has a record
entry (a row inserted behind the writer's back has none), and each message's
current status is the status of its last lifecycle entry that applied (a
``"late"`` entry records an update that was not applied).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import operator
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Select, Text, and_, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_plugin import chain
from audit_plugin.checkpoint import Checkpoint
from audit_plugin.integrity_schema import events
from audit_plugin.ledger import ChainHead, Ledger
from audit_plugin.schema import UTCDateTime, audit_log
from audit_plugin.transitions import APPLIED

STREAM_CHUNK = 2000
e = events.c
log = audit_log.c
_RECORD_COLUMNS = (*chain.RECORD_FIELDS, "payload_json")
_EVENT_COLUMNS = tuple(column.name for column in events.columns)
"""The walk's rows: these event columns, then ``_RECORD_COLUMNS`` of the joined record (all ``None`` if none)."""
_SPLIT = len(_EVENT_COLUMNS)
_RECORD_ID = _SPLIT + _RECORD_COLUMNS.index("message_id")
_PAYLOAD = _SPLIT + _RECORD_COLUMNS.index("payload_json")
_SEQUENCE, _ENTRY_HASH, _MESSAGE_ID, _KIND, _AT = (
    _EVENT_COLUMNS.index(name) for name in ("sequence", "entry_hash", "message_id", "kind", "at")
)
_ENTRY_DIGEST, _PREV_HASH, _RECORD_DIGEST, _VERSION = (
    _EVENT_COLUMNS.index(name) for name in ("entry_digest", "prev_hash", "record_digest", "hash_version")
)
_event_v2 = operator.itemgetter(*(_EVENT_COLUMNS.index(name) for name in chain.EVENT_FIELDS_V2))
"""A row's values that a format-2 ``entry_digest`` covers, in their order."""
_E_AT, _E_DELIVERED_AT = chain.EVENT_FIELDS_V2.index("at"), chain.EVENT_FIELDS_V2.index("delivered_at")
_R_TIMESTAMP = chain.RECORD_FIELDS.index("timestamp")


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :func:`verify_chain`.

    ``ok`` with ``entries`` checked (from ``first_sequence`` to
    ``last_sequence``, ``head_hash`` the last hash), or the first problem:
    ``broken_sequence`` (``None`` for problems outside the chain),
    ``message_id`` and ``reason``.
    """

    ok: bool
    chain_id: str
    entries: int
    first_sequence: int
    last_sequence: int
    head_hash: str
    broken_sequence: int | None = None
    message_id: str | None = None
    reason: str | None = None
    checkpoint_checked: bool = False

    def __str__(self) -> str:
        if self.ok:
            against = ", matches the checkpoint" if self.checkpoint_checked else ""
            return (
                f"OK: chain {self.chain_id!r}, {self.entries} entries "
                f"(sequence {self.first_sequence}..{self.last_sequence}){against}, head {self.head_hash[:16]}…"
            )
        where = f"entry {self.broken_sequence}" if self.broken_sequence is not None else "outside the chain"
        about = f" (message {self.message_id})" if self.message_id else ""
        return f"BROKEN at {where}{about}: {self.reason}"

    def checkpoint(self, signing_key: Any = None) -> Checkpoint:
        """The head this report verified, as a checkpoint (signed with an ``Ed25519PrivateKey`` if given).

        Unlike ``trail.checkpoint()``, it vouches only for entries that were
        actually checked, even if writers appended more during the walk.
        """
        if not self.ok:
            raise ValueError(f"a broken chain gives no checkpoint: {self}")
        taken = Checkpoint(self.chain_id, self.last_sequence, self.head_hash, datetime.now(UTC))
        return taken.signed(signing_key) if signing_key is not None else taken


class _Walk:
    """State of one verification pass."""

    def __init__(self, chain_id: str, start: ChainHead, retention: list[tuple[int, Any]]) -> None:
        self.chain_id = chain_id
        self.first = start.sequence + 1
        self.sequence = start.sequence
        self.previous = start.hash
        self.count = 0
        self.retention_sequences = [sequence for sequence, _ in retention]
        self.retention_cutoffs = _suffix_max([cutoff for _, cutoff in retention])

    def covered_by_retention(self, sequence: int, at: Any) -> bool:
        """True if a retention run after ``sequence`` deleted records created before ``at``-or-later."""
        index = bisect.bisect_right(self.retention_sequences, sequence)
        return index < len(self.retention_cutoffs) and at < self.retention_cutoffs[index]

    def check(self, row: Sequence[Any]) -> str | None:
        """The reason ``row`` (see ``_EVENT_COLUMNS``) breaks the chain, or ``None`` (and advance)."""
        sequence, expected = row[_SEQUENCE], self.sequence + 1
        if sequence != expected:
            return f"entries {expected}..{sequence - 1} are missing (sequence jumps from {self.sequence})"
        entry_hash, digest = row[_ENTRY_HASH], row[_ENTRY_DIGEST]
        if entry_hash is None or digest is None:
            return "entry is not hashed (written with hash_chain=False)"
        if row[_PREV_HASH] != self.previous:
            return "prev_hash does not match the previous entry's hash (entries removed, inserted or reordered)"
        version = row[_VERSION] or 1
        if version not in chain.HASH_VERSIONS:
            return f"entry is in hash format {version}, which this version of audit-plugin cannot check"
        record_missing = row[_KIND] == "record" and row[_RECORD_ID] is None
        if record_missing and not self.covered_by_retention(sequence, _as_datetime(row[_AT])):
            return "its record is missing from message_audit_log (deleted outside retention)"
        try:
            reason = _content_v2(row, digest) if version == 2 else _content_v1(row, digest, record_missing)
        except (ValueError, TypeError) as exc:
            return f"content cannot be read for hashing ({type(exc).__name__}: {exc})"
        if reason is not None:
            return reason
        if chain.link_hash(self.chain_id, sequence, self.previous, digest, version) != entry_hash:
            return "entry_hash does not match (digest or hash rewritten)"
        self.sequence = sequence
        self.previous = entry_hash
        self.count += 1
        return None


def _content_v2(row: Sequence[Any], digest: str) -> str | None:
    """Why a format-2 entry's content does not give its digests (a deleted record's event still must), or ``None``."""
    if row[_RECORD_ID] is not None and row[_KIND] == "record":
        record = list(row[_SPLIT:_PAYLOAD])
        record[_R_TIMESTAMP] = _moment(record[_R_TIMESTAMP])
        if chain.record_digest_of(record, row[_PAYLOAD]) != row[_RECORD_DIGEST]:
            return "content does not match its digest (record or its payload altered)"
    event = list(_event_v2(row))
    event[_E_AT] = _moment(event[_E_AT])
    event[_E_DELIVERED_AT] = _moment(event[_E_DELIVERED_AT])
    if chain.entry_digest_of(event) != digest:
        return "content does not match its digest (lifecycle event altered)"
    return None


def _moment(value: Any) -> Any:
    """A timestamp as read (see :func:`walk_statement`) in the form format 2 hashes: a datetime, or its text.

    SQLite's stored text ``2026-01-15 12:00:00.000005`` (UTC) becomes the
    RFC 3339 text ``orjson`` writes for that datetime,
    ``2026-01-15T12:00:00.000005+00:00`` (no fraction when it is zero),
    without parsing it into a datetime first; a driver's datetime is kept.
    """
    if type(value) is not str:
        return value
    fraction = value[19:]
    return f"{value[:10]}T{value[11:19]}{'' if fraction == '.000000' else fraction}+00:00"


def _as_datetime(value: Any) -> Any:
    """A timestamp as read (see :func:`walk_statement`) as an aware UTC datetime."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if type(value) is str else value


def _content_v1(row: Sequence[Any], digest: str, record_missing: bool) -> str | None:
    """Why a format-1 entry's content does not give its digest, or ``None``.

    One digest covers the event and its record, so a record entry whose
    record was deleted (by retention: checked before) cannot be checked.
    """
    if record_missing:
        return None
    entry = dict(zip(_EVENT_COLUMNS, row[:_SPLIT], strict=True))
    entry["at"], entry["delivered_at"] = _as_datetime(entry["at"]), _as_datetime(entry["delivered_at"])
    record = dict(zip(_RECORD_COLUMNS, row[_SPLIT:], strict=True)) if entry["kind"] == "record" else None
    if record is not None:
        record["timestamp"] = _as_datetime(record["timestamp"])
    if chain.entry_digest_v1(entry, record) == digest:
        return None
    what = "record or its payload" if record is not None else "lifecycle event"
    return f"content does not match its digest ({what} altered)"


async def _first_break(
    walk: _Walk, partitions: AsyncIterator[Sequence[Any]], against: Checkpoint | None
) -> tuple[str, int, str | None] | None:
    """Check every row; the first problem as (reason, sequence, message id), or ``None``."""
    async with contextlib.aclosing(_read_ahead(partitions)) as ahead:
        async for partition in ahead:
            for row in partition:
                reason = walk.check(row)
                sequence = row[_SEQUENCE]
                if reason is None and against is not None and sequence == against.sequence:
                    reason = None if row[_ENTRY_HASH] == against.hash else "entry differs from the checkpoint"
                if reason is not None:
                    return reason, sequence, row[_MESSAGE_ID]
    return None


async def _read_ahead(partitions: AsyncIterator[Sequence[Any]]) -> AsyncIterator[Sequence[Any]]:
    """``partitions``, the next one fetched while the caller checks the current one.

    The database (SQLite's thread, PostgreSQL's server) then produces rows
    while the walk hashes, instead of each waiting for the other. Stops
    fetching when closed early; a fetch in flight is let finish first (one
    operation at a time on a connection), its rows dropped.
    """
    pending = asyncio.ensure_future(anext(partitions, None))
    try:
        while (partition := await pending) is not None:
            pending = asyncio.ensure_future(anext(partitions, None))
            yield partition
    finally:
        with contextlib.suppress(Exception):
            await pending


def _suffix_max(values: list[Any]) -> list[Any]:
    result = list(values)
    for index in range(len(result) - 2, -1, -1):
        result[index] = max(result[index], result[index + 1])
    return result


def walk_statement(chain_id: str, after: int) -> Select[Any]:
    """The walk's rows (see ``_EVENT_COLUMNS``): the entries after sequence ``after``, in order, with their records.

    Timestamps and the payload come as the driver reads them, without
    SQLAlchemy's per-value conversions (most of the walk's reading cost):
    the payload as its text, timestamps as aware UTC datetimes (PostgreSQL)
    or the stored UTC text (SQLite); see :func:`_moment`.
    """
    joined = events.outerjoin(audit_log, and_(e.kind == "record", log.message_id == e.message_id))
    return (
        select(
            *(_as_read(e[name]) for name in _EVENT_COLUMNS), *(_as_read(log[name], "r_") for name in _RECORD_COLUMNS)
        )
        .select_from(joined)
        .where(e.chain_id == chain_id, e.sequence > after)
        .order_by(e.sequence)
        .execution_options(yield_per=STREAM_CHUNK)
    )


def _as_read(column: Any, prefix: str = "") -> Any:
    """``column`` without result conversion if it has one (timestamps, the payload), labelled ``prefix + name``."""
    converted = isinstance(column.type, (UTCDateTime, JSON))
    return (type_coerce(column, Text()) if converted else column).label(prefix + column.name)


_RECORD_READ = tuple(_as_read(log[name], "r_") for name in _RECORD_COLUMNS)


async def verify_chain(engine: AsyncEngine, ledger: Ledger, against: Checkpoint | None = None) -> VerifyReport:
    """Verify ``ledger``'s chain in ``engine``'s database; see the module docstring."""
    chain_id = ledger.chain_id
    async with engine.connect() as conn:
        start = await ledger.prune_point(conn)
        retention = [
            (row.sequence, row.at)
            for row in await conn.execute(
                select(e.sequence, e.at)
                .where(e.chain_id == chain_id, e.kind == "retention", e.sequence > start.sequence)
                .order_by(e.sequence)
            )
        ]
    walk = _Walk(chain_id, start, retention)

    def report(reason: str | None = None, sequence: int | None = None, message_id: str | None = None) -> VerifyReport:
        return VerifyReport(
            ok=reason is None,
            chain_id=chain_id,
            entries=walk.count,
            first_sequence=walk.first,
            last_sequence=walk.sequence,
            head_hash=walk.previous,
            broken_sequence=sequence,
            message_id=message_id,
            reason=reason,
            checkpoint_checked=reason is None and against is not None,
        )

    if against is not None and against.sequence < start.sequence:
        return report(
            f"checkpoint at {against.sequence} predates the prune point {start.sequence}; it cannot be checked",
            against.sequence,
        )
    if against is not None and against.sequence == start.sequence and against.hash != start.hash:
        return report("the prune point's hash differs from the checkpoint (chain rewritten)", against.sequence)

    async with engine.connect() as conn:
        result = await conn.stream(walk_statement(chain_id, start.sequence))
        broken = await _first_break(walk, result.partitions(), against)
        if broken is not None:
            await result.close()
            return report(*broken)
        if against is not None and walk.sequence < against.sequence:
            return report(
                f"chain ends at {walk.sequence} but the checkpoint is at {against.sequence} (entries truncated)",
                walk.sequence + 1,
            )
        problem = await _state_problem(conn, chain_id)
    if problem is not None:
        return report(problem[1], None, problem[0])
    return report()


async def _state_problem(conn: Any, chain_id: str) -> tuple[str, str] | None:
    """A record outside the chain, or a current status its lifecycle does not end in.

    Both are whole-table aggregates (hash joins), never ``LIMIT 1`` anti-joins:
    the planner would bet on finding a row early and walk the tables in a
    nested loop when there is none, which is the normal case.
    """
    record_entries = select(e.message_id).where(e.kind == "record").distinct().subquery()
    orphan = await conn.scalar(
        select(func.min(log.message_id))
        .select_from(audit_log.outerjoin(record_entries, record_entries.c.message_id == log.message_id))
        .where(record_entries.c.message_id.is_(None))
    )
    if orphan is not None:
        return orphan, "record is in message_audit_log but not in the chain (inserted behind the writer)"
    last = (
        select(e.message_id, func.max(e.sequence).label("sequence"))
        .where(e.chain_id == chain_id, e.kind.in_(("record", APPLIED)))
        .group_by(e.message_id)
        .subquery()
    )
    latest = (
        select(e.message_id, e.status)
        .join(last, and_(last.c.message_id == e.message_id, last.c.sequence == e.sequence))
        .where(e.chain_id == chain_id)
        .subquery()
    )
    mismatched = await conn.scalar(
        select(func.min(log.message_id))
        .join(latest, latest.c.message_id == log.message_id)
        .where(latest.c.status != log.status)
    )
    if mismatched is None:
        return None
    stored, expected = (
        await conn.execute(
            select(log.status, latest.c.status)
            .join(latest, latest.c.message_id == log.message_id)
            .where(log.message_id == mismatched)
        )
    ).one()
    return mismatched, f"current status {stored} differs from its last lifecycle entry ({expected})"
