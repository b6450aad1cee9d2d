"""Reading a chain for ``verify()``: the SQL around :mod:`audit_plugin.integrity.verify`'s checks.

Streams the chain's entries joined with their records, ``STREAM_CHUNK`` rows
per round trip, into a :class:`~audit_plugin.integrity.verify.ChainWalk`, then
checks the records against the chain (none outside it, every current status
the one its lifecycle ends in).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import JSON, Select, Text, and_, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_plugin.integrity.checkpoint import Checkpoint
from audit_plugin.integrity.shards import ShardedChains
from audit_plugin.integrity.verify import (
    ENTRY_COLUMNS,
    RECORD_COLUMNS,
    ChainWalk,
    ShardsReport,
    VerifyReport,
    first_break,
)
from audit_plugin.model.transitions import APPLIED
from audit_plugin.storage.chain_store import prune_point
from audit_plugin.storage.integrity_schema import events
from audit_plugin.storage.quarantine import quarantined_count
from audit_plugin.storage.schema import UTCDateTime, audit_log

STREAM_CHUNK = 2000
CONCURRENT_WALKS = 4
"""Shards walked at once (each on a connection of its own): the database reads one while another is hashed."""
e = events.c
log = audit_log.c


def walk_statement(chain_id: str, after: int) -> Select[Any]:
    """The walk's rows (see ``ENTRY_COLUMNS``): the entries after sequence ``after``, in order, with their records.

    Timestamps and the payload come as the driver reads them, without
    SQLAlchemy's per-value conversions (most of the walk's reading cost):
    the payload as its text, timestamps as aware UTC datetimes (PostgreSQL)
    or the stored UTC text (SQLite), as ``audit_plugin.integrity.verify`` expects them.
    """
    joined = events.outerjoin(audit_log, and_(e.kind == "record", log.message_id == e.message_id))
    return (
        select(*(_as_read(e[name]) for name in ENTRY_COLUMNS), *(_as_read(log[name], "r_") for name in RECORD_COLUMNS))
        .select_from(joined)
        .where(e.chain_id == chain_id, e.sequence > after)
        .order_by(e.sequence)
        .execution_options(yield_per=STREAM_CHUNK)
    )


def _as_read(column: Any, prefix: str = "") -> Any:
    """``column`` without result conversion if it has one (timestamps, the payload), labelled ``prefix + name``."""
    converted = isinstance(column.type, (UTCDateTime, JSON))
    return (type_coerce(column, Text()) if converted else column).label(prefix + column.name)


async def verify_chains(
    engine: AsyncEngine, sharded: ShardedChains, against: Sequence[Checkpoint | None] = ()
) -> VerifyReport | ShardsReport:
    """Verify every shard's chain in ``engine``'s database, the shards' walks concurrently; see the module docstring.

    ``against``: a checkpoint (or ``None``) per shard, in shard order. One
    shard gives its :class:`VerifyReport` as it always did; several give a
    :class:`ShardsReport` holding one per shard. The checks of the records
    against the chains run once, after the walks, and a problem they find is
    reported in the report of the shard its message belongs to.
    """
    checkpoints = list(against) + [None] * (sharded.shards - len(against))
    room = asyncio.Semaphore(CONCURRENT_WALKS)

    async def walk(chain_id: str, checkpoint: Checkpoint | None) -> tuple[VerifyReport, Reporter]:
        async with room:
            return await _walk(engine, chain_id, checkpoint)

    pairs = zip(sharded.chain_ids, checkpoints, strict=True)
    walks = await asyncio.gather(*(walk(chain_id, checkpoint) for chain_id, checkpoint in pairs))
    reports = [report for report, _ in walks]
    if all(report.ok for report in reports):
        async with engine.connect() as conn:
            problem = await _state_problem(conn, sharded.chain_ids)
        if problem is not None:
            message_id, reason = problem
            shard = sharded.shard_of(message_id)
            reports[shard] = walks[shard][1](reason, None, message_id)
    async with engine.connect() as conn:
        quarantined = await quarantined_count(conn)
    if sharded.shards == 1:
        return dataclasses.replace(reports[0], quarantined=quarantined)
    return ShardsReport(sharded.base_id, tuple(reports), quarantined)


Reporter = Callable[[str | None, int | None, str | None], VerifyReport]
"""Makes a walk's report: ``(reason, broken sequence, message id)``; ``None`` reason for OK."""


async def _walk(engine: AsyncEngine, chain_id: str, against: Checkpoint | None) -> tuple[VerifyReport, Reporter]:
    """Walk one chain; its report (before the checks of the records) and how to make another report of it."""
    async with engine.connect() as conn:
        start = await prune_point(conn, chain_id)
        retention = [
            (row.sequence, row.at)
            for row in await conn.execute(
                select(e.sequence, e.at)
                .where(e.chain_id == chain_id, e.kind == "retention", e.sequence > start.sequence)
                .order_by(e.sequence)
            )
        ]
    walk = ChainWalk(chain_id, start, retention)

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
        ), report
    if against is not None and against.sequence == start.sequence and against.hash != start.hash:
        return report("the prune point's hash differs from the checkpoint (chain rewritten)", against.sequence), report

    async with engine.connect() as conn:
        result = await conn.stream(walk_statement(chain_id, start.sequence))
        broken = await first_break(walk, result.partitions(), against)
        if broken is not None:
            await result.close()
            return report(*broken), report
    if against is not None and walk.sequence < against.sequence:
        return report(
            f"chain ends at {walk.sequence} but the checkpoint is at {against.sequence} (entries truncated)",
            walk.sequence + 1,
        ), report
    return report(), report


async def _state_problem(conn: Any, chain_ids: Sequence[str]) -> tuple[str, str] | None:
    """A record outside the chains, or a current status its lifecycle does not end in.

    Both are whole-table aggregates (hash joins), never ``LIMIT 1`` anti-joins:
    the planner would bet on finding a row early and walk the tables in a
    nested loop when there is none, which is the normal case. A message's
    entries are all in one shard's chain, so its last entry is found within it.
    """
    record_entries = select(e.message_id).where(e.kind == "record").distinct().subquery()
    orphan = await conn.scalar(
        select(func.min(log.message_id))
        .select_from(audit_log.outerjoin(record_entries, record_entries.c.message_id == log.message_id))
        .where(record_entries.c.message_id.is_(None))
    )
    if orphan is not None:
        return orphan, "record is in message_audit_log but not in the chain (inserted behind the writer)"
    in_chains = e.chain_id == chain_ids[0] if len(chain_ids) == 1 else e.chain_id.in_(chain_ids)
    last = (
        select(e.chain_id, e.message_id, func.max(e.sequence).label("sequence"))
        .where(in_chains, e.kind.in_(("record", APPLIED)))
        .group_by(e.chain_id, e.message_id)
        .subquery()
    )
    latest = (
        select(e.message_id, e.status)
        .join(
            last,
            and_(last.c.chain_id == e.chain_id, last.c.message_id == e.message_id, last.c.sequence == e.sequence),
        )
        .where(in_chains)
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
