"""``verify()``'s checks: walk a chain's entries in sequence order and report the first broken link.

The store streams the entries joined with their records (see
``ENTRY_COLUMNS``; :mod:`audit_plugin.storage.chain_walk` reads them), so
memory stays bounded whatever the chain's length. :class:`ChainWalk` checks,
in order, for every entry after the prune point:

* its sequence number is the next one (a gap means entries were deleted);
* its ``prev_hash`` is the previous entry's hash;
* its content still gives its digests, in the entry's own hash format
  (``hash_version``: see :mod:`audit_plugin.integrity.chain`): in format 2 the record's
  columns and stored payload give its ``record_digest``, and the event's
  columns (that digest included) its ``entry_digest``, whether the record is
  still there or not; in format 1 one digest covers both. A record deleted
  by retention is accepted when a later retention entry covers it;
* its ``entry_hash`` links all of that (so a rewritten digest is caught);
* with a checkpoint: the entry at the checkpoint's sequence has its hash, and
  the chain reaches that far.

Then, if the chain is intact, the store checks that every row of
``message_audit_log`` has a record entry (a row inserted behind the writer's
back has none), and that each message's current status is the status of its
last lifecycle entry that applied (a ``"late"`` entry records an update that
was not applied).
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

from audit_plugin.integrity import chain
from audit_plugin.integrity.checkpoint import Checkpoint
from audit_plugin.integrity.ledger import ChainHead

ENTRY_COLUMNS: tuple[str, ...] = (
    "chain_id",
    "sequence",
    "kind",
    "message_id",
    "status",
    "at",
    "retry_count",
    "error",
    "delivered_at",
    "operation_id",
    "record_digest",
    "hash_version",
    "entry_digest",
    "prev_hash",
    "entry_hash",
)
RECORD_COLUMNS: tuple[str, ...] = (*chain.RECORD_FIELDS, "payload_json")
"""A walked row: the entry's ``ENTRY_COLUMNS``, then its record's ``RECORD_COLUMNS`` (all ``None`` if none).

Timestamps come as the store reads them (an aware datetime, or SQLite's
stored UTC text: see :func:`_moment`), the payload as its stored text.
"""
_SPLIT = len(ENTRY_COLUMNS)
_RECORD_ID = _SPLIT + RECORD_COLUMNS.index("message_id")
_PAYLOAD = _SPLIT + RECORD_COLUMNS.index("payload_json")
_SEQUENCE, _ENTRY_HASH, _MESSAGE_ID, _KIND, _AT = (
    ENTRY_COLUMNS.index(name) for name in ("sequence", "entry_hash", "message_id", "kind", "at")
)
_ENTRY_DIGEST, _PREV_HASH, _RECORD_DIGEST, _VERSION = (
    ENTRY_COLUMNS.index(name) for name in ("entry_digest", "prev_hash", "record_digest", "hash_version")
)
_event_v2 = operator.itemgetter(*(ENTRY_COLUMNS.index(name) for name in chain.EVENT_FIELDS_V2))
"""A row's values that a format-2 ``entry_digest`` covers, in their order."""
_E_AT, _E_DELIVERED_AT = chain.EVENT_FIELDS_V2.index("at"), chain.EVENT_FIELDS_V2.index("delivered_at")
_R_TIMESTAMP = chain.RECORD_FIELDS.index("timestamp")


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of verifying a chain (``trail.verify()``).

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
    quarantined: int = 0
    """Transport messages the store keeps in quarantine (refused by an ingester: see ``docs/jetstream.md``)."""

    def __str__(self) -> str:
        held = f"; {self.quarantined} stream message(s) quarantined" if self.quarantined else ""
        if self.ok:
            against = ", matches the checkpoint" if self.checkpoint_checked else ""
            return (
                f"OK: chain {self.chain_id!r}, {self.entries} entries "
                f"(sequence {self.first_sequence}..{self.last_sequence}){against}, head {self.head_hash[:16]}…{held}"
            )
        where = f"entry {self.broken_sequence}" if self.broken_sequence is not None else "outside the chain"
        about = f" (message {self.message_id})" if self.message_id else ""
        return f"BROKEN at {where}{about}: {self.reason}{held}"

    def checkpoint(self, signing_key: Any = None) -> Checkpoint:
        """The head this report verified, as a checkpoint (signed with an ``Ed25519PrivateKey`` if given).

        Unlike ``trail.checkpoint()``, it vouches only for entries that were
        actually checked, even if writers appended more during the walk.
        """
        if not self.ok:
            raise ValueError(f"a broken chain gives no checkpoint: {self}")
        taken = Checkpoint(self.chain_id, self.last_sequence, self.head_hash, datetime.now(UTC))
        return taken.signed(signing_key) if signing_key is not None else taken


@dataclass(frozen=True, slots=True)
class ShardsReport:
    """The outcome of verifying a trail kept in several chains (``trail.verify()`` with ``shards > 1``).

    ``shards`` holds one :class:`VerifyReport` per shard, in shard order
    (each about its own chain: ``shards[k].chain_id`` is ``<chain_id>/<k>``);
    the trail is intact when every one is. A problem outside the chains (a
    record no chain holds, a status its lifecycle does not end in) is in the
    report of the shard its message belongs to.
    """

    chain_id: str
    """The chain's own id, without a shard number."""
    shards: tuple[VerifyReport, ...]
    quarantined: int = 0
    """Transport messages the store keeps in quarantine (see :attr:`VerifyReport.quarantined`)."""

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.shards)

    @property
    def entries(self) -> int:
        """Entries checked, over every shard."""
        return sum(report.entries for report in self.shards)

    @property
    def broken(self) -> tuple[VerifyReport, ...]:
        """The reports of the shards that are not intact."""
        return tuple(report for report in self.shards if not report.ok)

    @property
    def checkpoint_checked(self) -> bool:
        return self.ok and all(report.checkpoint_checked for report in self.shards)

    def __str__(self) -> str:
        held = f"; {self.quarantined} stream message(s) quarantined" if self.quarantined else ""
        if self.ok:
            against = ", matches the checkpoints" if self.checkpoint_checked else ""
            return f"OK: chain {self.chain_id!r}, {len(self.shards)} shards, {self.entries} entries{against}{held}"
        lines = [f"BROKEN: chain {self.chain_id!r}, {len(self.broken)} of {len(self.shards)} shards{held}"]
        lines += [f"  {report.chain_id}: {report}" for report in self.broken]
        return "\n".join(lines)

    def checkpoints(self, signing_key: Any = None) -> tuple[Checkpoint, ...]:
        """Each shard's verified head as a checkpoint (see :meth:`VerifyReport.checkpoint`), in shard order."""
        if not self.ok:
            raise ValueError(f"a broken chain gives no checkpoint: {self}")
        return tuple(report.checkpoint(signing_key) for report in self.shards)


class ChainWalk:
    """State of one verification pass over a chain's rows (see ``ENTRY_COLUMNS``), in sequence order."""

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
        """The reason ``row`` (see ``ENTRY_COLUMNS``) breaks the chain, or ``None`` (and advance)."""
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
    """A timestamp as read (see ``RECORD_COLUMNS``) in the form format 2 hashes: a datetime, or its text.

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
    """A timestamp as read (see ``RECORD_COLUMNS``) as an aware UTC datetime."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if type(value) is str else value


def _content_v1(row: Sequence[Any], digest: str, record_missing: bool) -> str | None:
    """Why a format-1 entry's content does not give its digest, or ``None``.

    One digest covers the event and its record, so a record entry whose
    record was deleted (by retention: checked before) cannot be checked.
    """
    if record_missing:
        return None
    entry = dict(zip(ENTRY_COLUMNS, row[:_SPLIT], strict=True))
    entry["at"], entry["delivered_at"] = _as_datetime(entry["at"]), _as_datetime(entry["delivered_at"])
    record = dict(zip(RECORD_COLUMNS, row[_SPLIT:], strict=True)) if entry["kind"] == "record" else None
    if record is not None:
        record["timestamp"] = _as_datetime(record["timestamp"])
    if chain.entry_digest_v1(entry, record) == digest:
        return None
    what = "record or its payload" if record is not None else "lifecycle event"
    return f"content does not match its digest ({what} altered)"


async def first_break(
    walk: ChainWalk, partitions: AsyncIterator[Sequence[Any]], against: Checkpoint | None
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
