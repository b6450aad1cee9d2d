"""What each index (and the statistics rollup) costs the write path: the shipped set against the set without it.

    python benchmarks/indexes.py                # 20,000 messages per run, 3 repetitions: ~10 minutes on 2 cores
    python benchmarks/indexes.py --quick        # 5,000 messages per run, one repetition

Per backend, one store per variant is opened, each with its own trail kept
open throughout: the schema as ``initialize()`` makes it (*shipped*), and
the shipped schema minus one secondary index of the records or of the
lifecycle (``idx_events_message``), and the seed's index set (the three
``(…, timestamp)`` indexes replaced by ``(from_agent, to_agent)``). On PostgreSQL one more store runs
without the statistics rollup's triggers; on SQLite, where the rollup is
not shipped, one more runs with per-row triggers keeping the same hourly
rollup (an upsert per dimension of each inserted row; a status change moves
a count), to price them. ``--rows`` delivered messages are loaded into
every store first (records only, by the raw driver), so index upkeep is
measured on a table of some size.

Workloads, each through the reference bus with 64 concurrent senders and
the audit plugin (``commit``: each ``send()`` waits for its record;
``buffered``: large batches), run on every store in turn per repetition.
Printed: each variant's rate and its ratio to the shipped set's rate in
the same repetition (median, ± half the spread; *best*: the best rates'
ratio, less sensitive to other work on the machine): a ratio above 1 is
what the missing index or trigger costs the writes. ``raw insert`` is the
database's own part: each repetition also inserts five times ``--messages``
records per store by the raw driver (asyncpg ``COPY``, ``sqlite3``
``executemany`` in one transaction), which index upkeep weighs on most.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from audit_plugin import AuditPlugin, MessageAuditTrail, MessageBus
from audit_plugin.model.messages import new_message_id
from audit_plugin.storage.integrity_schema import EVENTS_TABLE
from audit_plugin.storage.schema import TABLE_NAME, audit_log
from audit_plugin_postgres.rollups import ROLLUP_TABLE
from benchmarks.bus import send_all
from benchmarks.common import (
    PAYLOAD_TEXT,
    Row,
    Store,
    make_messages,
    median,
    print_table,
    reachable_stores,
    spread,
    sqlite_store,
)

WORKLOADS = ("commit", "buffered")
RAW = "raw insert"
RAW_ROWS_PER_MESSAGE = 5
"""Each repetition also inserts this many records per workload message by the raw driver (``raw insert``)."""
NEW_INDEXES = ("idx_status_timestamp", "idx_from_agent_timestamp", "idx_to_agent_timestamp")
"""The shipped indexes the seed's set lacked (it had ``idx_agents (from_agent, to_agent)`` instead)."""
SHIPPED = "shipped"


@dataclass(frozen=True)
class Variant:
    name: str
    sql: dict[str, list[str]]
    """Statements per backend kind that turn the shipped schema into this variant (no entry: not run there)."""


def _sqlite_rollup_triggers() -> list[str]:
    """Per-row triggers keeping an hourly rollup like PostgreSQL's (per dimension: count; delivered seconds)."""

    def upsert(dimension: str, value: str, row: str, sign: int, latency: bool) -> str:
        bucket = f"strftime('%Y-%m-%d %H:00:00', {row}.timestamp)"
        counted = f"({row}.status = 'DELIVERED' AND {row}.delivered_at IS NOT NULL)" if latency else "0"
        seconds = f"(julianday({row}.delivered_at) - julianday({row}.timestamp)) * 86400"
        return (
            f"INSERT INTO {ROLLUP_TABLE} VALUES ({bucket}, '{dimension}', {value}, {sign}, {sign} * {counted}, "
            f"CASE WHEN {counted} THEN {sign} * {seconds} ELSE 0 END) "
            "ON CONFLICT DO UPDATE SET messages = messages + excluded.messages, "
            "delivered = delivered + excluded.delivered, "
            "delivered_seconds = delivered_seconds + excluded.delivered_seconds;"
        )

    dimensions = [("status", "status", True), ("type", "message_type", False)]
    dimensions += [("sender", "from_agent", False), ("receiver", "to_agent", False)]
    on_insert = " ".join(upsert(d, f"NEW.{column}", "NEW", 1, latency) for d, column, latency in dimensions)
    on_update = upsert("status", "OLD.status", "OLD", -1, True) + upsert("status", "NEW.status", "NEW", 1, True)
    return [
        f"CREATE TABLE {ROLLUP_TABLE} (bucket TEXT, dimension TEXT, value TEXT, messages INTEGER, "
        "delivered INTEGER, delivered_seconds REAL, PRIMARY KEY (bucket, dimension, value))",
        f"CREATE TRIGGER rollup_insert AFTER INSERT ON {TABLE_NAME} BEGIN {on_insert} END",
        f"CREATE TRIGGER rollup_update AFTER UPDATE OF status, delivered_at ON {TABLE_NAME} BEGIN {on_update} END",
    ]


def variants() -> list[Variant]:
    both = ("sqlite", "postgresql")
    found = [Variant(SHIPPED, {kind: [] for kind in both})]
    for index in sorted(index.name for index in audit_log.indexes):
        found.append(Variant(f"without {index}", {kind: [f"DROP INDEX {index}"] for kind in both}))
    found.append(Variant("without idx_events_message", {kind: ["DROP INDEX idx_events_message"] for kind in both}))
    seed = [f"DROP INDEX {name}" for name in NEW_INDEXES] + [
        f"CREATE INDEX idx_agents ON {TABLE_NAME} (from_agent, to_agent)"
    ]
    found.append(Variant("with the seed's index set", {kind: seed for kind in both}))
    drop_triggers = [f"DROP TRIGGER {ROLLUP_TABLE}_{event} ON {TABLE_NAME}" for event in ("insert", "update", "delete")]
    found.append(Variant("without rollup triggers", {"postgresql": drop_triggers}))
    found.append(Variant("with per-row rollup triggers", {"sqlite": _sqlite_rollup_triggers()}))
    return found


async def load(store: Store, trail: MessageAuditTrail, count: int) -> float:
    """Records/s loading ``count`` delivered records over the day before now, by the raw driver (records only)."""
    start = datetime.now(UTC) - timedelta(days=1)
    step = timedelta(days=1) / count
    payload = f'{{"task":"summarise","n":0,"text":"{PAYLOAD_TEXT}"}}'
    columns = [column.name for column in audit_log.columns]
    rows = []
    for n in range(count):
        at = start + n * step
        envelope = (new_message_id(), f"agent-{n % 16}", f"agent-{(n + 1) % 16}", "COMMAND", "NORMAL", "DELIVERED")
        outcome = (at, at + timedelta(milliseconds=2), None, 0, None, None, None)
        rows.append((*envelope, f"conv-{n // 10}", None, payload, *outcome))
    if store.kind == "postgresql":
        conn = await asyncpg.connect(store.dsn)
        try:
            started = time.perf_counter()
            await conn.copy_records_to_table(TABLE_NAME, records=rows, columns=columns)
            elapsed = time.perf_counter() - started
            await conn.execute(f"ANALYZE {TABLE_NAME}; ANALYZE {EVENTS_TABLE}")
        finally:
            await conn.close()
        return count / elapsed
    naive = [(*row[:9], _naive(row[9]), _naive(row[10]), *row[11:]) for row in rows]
    insert = f"INSERT INTO {TABLE_NAME} VALUES ({', '.join('?' * len(columns))})"
    conn = sqlite3.connect(store.path, isolation_level=None)  # type: ignore[arg-type]
    try:
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(insert, naive)
        conn.execute("COMMIT")
        return count / (time.perf_counter() - started)
    finally:
        conn.close()


def _naive(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(sep=" ")


async def run_workload(trail: MessageAuditTrail, workload: str, count: int) -> float:
    """Messages/s through the audited bus until flushed."""
    bus = MessageBus()
    plugin = AuditPlugin(trail, durability=workload)  # type: ignore[arg-type]
    bus.register(plugin)
    run = await send_all(bus, make_messages(count), trail)
    assert plugin.commit_timeouts == 0 and trail.writer_stats.dropped == 0
    return count / run.seconds


Rates = dict[tuple[str, str, str], list[float]]
"""(backend, variant, workload) -> rate per repetition."""


async def one_backend(
    open_store: Callable[[], AbstractAsyncContextManager[Store]], rates: Rates, args: argparse.Namespace
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        trails: list[tuple[str, Store, MessageAuditTrail]] = []
        kind = "sqlite" if open_store is sqlite_store else "postgresql"
        for variant in variants():
            if kind not in variant.sql:
                continue
            store = await stack.enter_async_context(open_store())
            trail = MessageAuditTrail(store.url)
            await trail.initialize()
            stack.push_async_callback(trail.close)
            async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
                for statement in variant.sql[store.kind]:
                    await conn.exec_driver_sql(statement)
            await load(store, trail, args.rows)
            for workload in WORKLOADS:  # warm up: statements prepared, connections open
                await run_workload(trail, workload, min(args.messages, 2_000))
            trails.append((variant.name, store, trail))
        for repetition in range(args.repeat):
            print(f"    {open_store.__name__}: repetition {repetition + 1} of {args.repeat}", file=sys.stderr)
            order = trails if repetition % 2 == 0 else list(reversed(trails))
            for name, store, trail in order:
                for workload in WORKLOADS:
                    rate = await run_workload(trail, workload, args.messages)
                    rates.setdefault((store.kind, name, workload), []).append(rate)
                rate = await load(store, trail, RAW_ROWS_PER_MESSAGE * args.messages)
                rates.setdefault((store.kind, name, RAW), []).append(rate)


def table_rows(rates: Rates) -> list[Row]:
    rows: list[Row] = []
    for backend, name, workload in rates:
        if name == SHIPPED:
            continue
        shipped, measured = rates[backend, SHIPPED, workload], rates[backend, name, workload]
        ratios = [m / s for m, s in zip(measured, shipped, strict=True)]
        noise = f" ±{spread(ratios) / 2:.0%}, best {max(measured) / max(shipped):.2f}" if len(ratios) > 1 else ""
        rows.append(
            (
                f"{backend}: {workload}, {name}",
                f"{median(measured):,.0f} vs shipped {median(shipped):,.0f} msg/s",
                f"{median(ratios):.2f}{noise}",
                "",
            )
        )
    return rows


async def main(args: argparse.Namespace) -> None:
    backends = await reachable_stores(sqlite=not args.no_sqlite, postgres=not args.no_postgres)
    rates: Rates = {}
    for open_store in backends:
        print(f"... indexes: {open_store.__name__}", file=sys.stderr)
        await one_backend(open_store, rates, args)
    print(
        f"{args.messages:,} messages per run on {args.rows:,} stored, 64 senders; repetitions: {args.repeat}; "
        "ratio = variant / shipped (above 1: what it costs the writes)"
    )
    print_table(table_rows(rates))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 messages per run, one repetition")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per workload run")
    parser.add_argument("--rows", type=int, default=100_000, help="records loaded into every store first")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rows, args.repeat = 5_000, 20_000, 1
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
