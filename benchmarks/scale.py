"""The read queries, a lookup, a status update and a day's retention on a large PostgreSQL store.

    python benchmarks/scale.py                  # 10,000,000 records: loading takes most of an hour on 2 cores
    python benchmarks/scale.py --rows 1000000   # what docs/benchmarks.md shows

The store is made by ``initialize()`` (its indexes, the statistics
rollup's triggers), then ``--rows`` records spread evenly over ``--days``
days before now are loaded by one ``INSERT ... SELECT FROM
generate_series`` per chunk (so the triggers keep the rollup as they would
for any writer), and ``VACUUM ANALYZE`` runs. Records: 50 agents (receiver
and status independent of the sender, by multiplicative hashing), the five
message types, 90% DELIVERED (latency under a second), 5% FAILED, 3%
EXPIRED, 2% SENT, none PENDING; conversations of ten messages; one trace per
record; time-ordered (UUIDv7) ids that carry their record's time; no
lifecycle entries.

Each measurement goes through the public API (``MessageAuditTrail``), is
run once to warm up and then ``--repeat`` times; the median is printed.
"First page" is ``limit=50``, newest first, as the command line and the
viewer ask. The same run measures a store per table layout: unpartitioned
(``?partitioning=none``) and, when the installed backend supports
time-partitioned tables (detected, see :func:`partitioning_supported`), the
default layout partitioned by day; their ratio is printed.

PostgreSQL runs on ``AUDIT_BENCH_POSTGRES_URL`` (see ``benchmarks/common.py``),
in throwaway databases.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.storage.schema import TABLE_NAME
from audit_plugin.storage.sql import SQLBackend
from benchmarks.common import PAYLOAD_TEXT, median, postgres_available, postgres_store

AGENTS = 50
CHUNK = 500_000
PAGE = 50
RETENTION_RUNS = 3
"""Days deleted by the retention measurement (after one to warm up): each run deletes the oldest day."""

POINT, FIRST_PAGE, STATISTICS, RETENTION = "< 5 ms", "< 5 ms", "< 100 ms", "< 50 ms"

_LOAD = f"""
INSERT INTO {TABLE_NAME} (message_id, from_agent, to_agent, message_type, priority, status, correlation_id,
                          payload_json, "timestamp", delivered_at, retry_count, error_message, trace_id, span_id)
SELECT substr(t, 1, 8) || '-' || substr(t, 9, 4) || '-7' || substr(r, 1, 3) || '-8' || substr(r, 4, 3) || '-'
           || substr(r, 7, 12),
       'agent-' || n % {AGENTS}, 'agent-' || (n * 2246822519 % 4294967296) * {AGENTS} / 4294967296,
       (ARRAY['COMMAND', 'QUERY', 'RESPONSE', 'EVENT', 'NOTIFICATION'])[n / 7 % 5 + 1], 'NORMAL', status,
       'conv-' || n / 10,
       jsonb_build_object('task', 'summarise', 'n', n, 'text', '{PAYLOAD_TEXT}'),
       at, CASE WHEN status = 'DELIVERED' THEN at + (n % 997) * interval '1 ms' END, 0,
       CASE WHEN status = 'FAILED' THEN 'handler raised' END, md5(n::text), substr(md5(n::text), 1, 16)
FROM generate_series($1::bigint, $2::bigint) AS n,
     LATERAL (SELECT $3::timestamptz + n * $4::interval AS at) AS moment,
     LATERAL (SELECT lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0') AS t,
                     lpad(to_hex(n), 18, '0') AS r,
                     CASE WHEN h < 90 THEN 'DELIVERED' WHEN h < 95 THEN 'FAILED'
                          WHEN h < 98 THEN 'EXPIRED' ELSE 'SENT' END AS status
              FROM (SELECT n * 2654435761 % 4294967296 * 100 / 4294967296 AS h) AS hashed) AS derived
"""


async def partitioning_supported() -> bool:
    """Whether the installed backend makes ``message_audit_log`` a partitioned table when asked to."""
    async with postgres_store() as store:
        try:
            async with MessageAuditTrail(store.url + "?partitioning=day"):
                pass
        except Exception:  # an unknown URL parameter: the option does not exist (yet)
            return False
        conn = await asyncpg.connect(store.dsn)
        try:
            kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = $1", TABLE_NAME)
        finally:
            await conn.close()
        return kind == "p"


async def make_partitions_for(trail: MessageAuditTrail, start: datetime, days: int) -> None:
    """A partitioned store: the day partitions of the history about to be loaded, as an operator (or the
    migration) makes them before importing old records; without them the records would all go to the
    default partition. Unpartitioned: nothing to do."""
    layout = getattr(trail.backend, "layout", None)
    if layout is None or not layout.partitioned:
        return
    from audit_plugin_postgres import partitions

    async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        await partitions.create_intervals(conn, layout, [start + timedelta(days=day) for day in range(days + 1)])


async def refill_time_extents(trail: MessageAuditTrail, rows: int) -> None:
    """Partitioned: time filling the time extents from the loaded records, as a store partitioned before they
    existed has them filled when a new version first starts (the load kept them through the trigger)."""
    if not getattr(trail.backend, "partitioned", False):
        return
    from audit_plugin_postgres import extents

    async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        kept = (await conn.execute(text(f"SELECT bucket, low, high FROM {extents.EXTENTS_TABLE}"))).all()
        await conn.execute(text(f"DROP TABLE {extents.EXTENTS_TABLE}"))
        started = time.perf_counter()
        await extents.install_extents(conn, trail.backend.layout.unit)  # type: ignore[attr-defined]
        seconds = time.perf_counter() - started
        filled = (await conn.execute(text(f"SELECT bucket, low, high FROM {extents.EXTENTS_TABLE}"))).all()
    assert sorted(filled) == sorted(kept), "the trigger and the fill disagree"
    print(f"    time extents filled from {rows:,} records in {seconds:.1f} s ({len(filled)} buckets)", file=sys.stderr)


async def load(dsn: str, rows: int, start: datetime, step: timedelta) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for first in range(0, rows, CHUNK):
            await conn.execute(_LOAD, first, min(rows, first + CHUNK) - 1, start, step)
            print(f"      loaded {min(rows, first + CHUNK):,} of {rows:,}", file=sys.stderr)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def clocked(run: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Median milliseconds of ``run`` over ``repeat`` runs after one to warm up."""
    await run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def measurements(
    trail: MessageAuditTrail,
    ids: list[str],
    start: datetime,
    days: int,
    statistics: Callable[..., Awaitable[Any]],
) -> list[tuple[str, str, Callable[[], Awaitable[Any]]]]:
    """(name, goal, call) for every measured read; ``statistics(start, end)`` answers the statistics ones."""
    day = (start + timedelta(days=days // 2)).replace(hour=0, minute=0, second=0, microsecond=0)

    def first_page(**fields: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: trail.query_messages(AuditQuery(limit=PAGE, **fields))

    lookups = iter(ids * 1000)
    return [
        ("message lookup by id", POINT, lambda: trail.get_message(next(lookups))),
        ("conversation (10 messages)", POINT, lambda: trail.get_conversation_history("conv-123457")),
        ("trace id", POINT, lambda: trail.get_trace(hashlib.md5(b"123457").hexdigest())),
        ("first page: newest", FIRST_PAGE, first_page()),
        ("first page: by sender", FIRST_PAGE, first_page(from_agent="agent-7")),
        ("first page: by receiver", FIRST_PAGE, first_page(to_agent="agent-7")),
        ("first page: by type", FIRST_PAGE, first_page(message_type=MessageType.NOTIFICATION)),
        ("first page: by status FAILED", FIRST_PAGE, first_page(status=MessageStatus.FAILED)),
        ("first page: by status PENDING (no match)", FIRST_PAGE, first_page(status=MessageStatus.PENDING)),
        ("first page: sender + status", FIRST_PAGE, first_page(from_agent="agent-7", status=MessageStatus.FAILED)),
        ("first page: sender + receiver", FIRST_PAGE, first_page(from_agent="agent-7", to_agent="agent-0")),
        ("first page: one hour's window", FIRST_PAGE, first_page(start_time=day, end_time=day + timedelta(hours=1))),
        ("first page: by correlation id", FIRST_PAGE, first_page(correlation_id="conv-123457")),
        (
            f"agent history (7 days, newest {PAGE})",
            FIRST_PAGE,
            lambda: trail.get_agent_communication_history("agent-7", days=7, limit=PAGE),
        ),
        ("statistics: a day", STATISTICS, lambda: statistics(day, day + timedelta(days=1))),
        (
            "statistics: a day, not on the hour",
            STATISTICS,
            lambda: statistics(day + timedelta(minutes=17), day + timedelta(days=1, minutes=41)),
        ),
        ("statistics: everything", STATISTICS, lambda: statistics(None, None)),
        ("find ids: an id's start", POINT, lambda: trail.find_ids(ids[0][:13])),
        ("find ids: a short id (an id's end)", POINT, lambda: trail.find_ids(ids[0][-8:])),
    ]


Columns = dict[str, dict[str, float]]
"""Column (a store, or the same store with other indexes) -> measurement name -> median milliseconds."""

SHIPPED, SEED = "shipped", "seed indexes, stats by scan"
SEED_INDEXES = [
    "DROP INDEX idx_status_timestamp",
    "DROP INDEX idx_from_agent_timestamp",
    "DROP INDEX idx_to_agent_timestamp",
    f"CREATE INDEX idx_agents ON {TABLE_NAME} (from_agent, to_agent)",
    f"ANALYZE {TABLE_NAME}",
]
"""The index set before this one, on the same store: the baseline of the queries."""


async def measure_layout(suffix: str, args: argparse.Namespace, *, baseline: bool) -> tuple[Columns, dict[str, str]]:
    """Every measurement on one store of ``args.rows`` records made with URL ``suffix``, and each one's goal.

    With ``baseline``, the queries are measured again on the same store with
    :data:`SEED_INDEXES` and statistics scanning the records (column
    :data:`SEED`); the shipped indexes are then restored by ``initialize()``.
    """
    columns: Columns = {SHIPPED: {}}
    goals: dict[str, str] = {}
    async with postgres_store() as store:
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=args.days)
        step = timedelta(days=args.days) / args.rows
        async with MessageAuditTrail(store.url + suffix) as trail:
            await make_partitions_for(trail, start, args.days)
            started = time.perf_counter()
            await load(store.dsn, args.rows, start, step)  # type: ignore[arg-type]
            print(f"    loaded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            await refill_time_extents(trail, args.rows)
            page = await trail.query_messages(AuditQuery(limit=args.repeat + 1))
            ids = [record.message_id for record in page]
            for name, goal, call in measurements(trail, ids, start, args.days, trail.get_statistics):
                goals[name] = goal
                columns[SHIPPED][name] = await clocked(call, args.repeat)
            if baseline:
                columns[SEED] = await measure_seed_indexes(store.dsn, trail, ids, start, args)  # type: ignore[arg-type]
                async with MessageAuditTrail(store.url + suffix):  # initialize() restores the shipped set
                    pass
            updates = iter(ids)
            goals["status update (committed)"] = ""
            columns[SHIPPED]["status update (committed)"] = await clocked(
                lambda: trail.update_message_status(next(updates), MessageStatus.FAILED, error_message="late"),
                args.repeat,
            )
            goals["retention: one day"] = RETENTION
            goals["retention: one day, until its files are removed"] = ""
            call, removed = await retention_days(trail, start, min(args.repeat, RETENTION_RUNS))
            columns[SHIPPED]["retention: one day"] = call
            columns[SHIPPED]["retention: one day, until its files are removed"] = removed
    return columns, goals


async def retention_days(trail: MessageAuditTrail, start: datetime, days: int) -> tuple[float, float]:
    """Median milliseconds, over ``days`` runs after one to warm up, each deleting the oldest day: until
    ``delete_older_than`` returns (the records are out of every read), and until the files of the partitions it
    dropped are removed too (``wait_for_drops``: they are in the background; unpartitioned, nothing is)."""
    backend: Any = trail.backend
    calls, removals = [], []
    for n in range(days + 1):
        started = time.perf_counter()
        await backend.delete_older_than(start + timedelta(days=n + 1))
        returned = time.perf_counter()
        await backend.wait_for_drops()
        if n:
            calls.append((returned - started) * 1000)
            removals.append((time.perf_counter() - started) * 1000)
    return median(calls), median(removals)


async def measure_seed_indexes(
    dsn: str, trail: MessageAuditTrail, ids: list[str], start: datetime, args: argparse.Namespace
) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in SEED_INDEXES:
            await conn.execute(statement)
    finally:
        await conn.close()

    def scanned(start_time: datetime | None = None, end_time: datetime | None = None) -> Awaitable[Any]:
        return SQLBackend.statistics(trail.backend, start_time, end_time)  # type: ignore[arg-type]

    return {
        name: await clocked(call, args.repeat)
        for name, _goal, call in measurements(trail, ids, start, args.days, scanned)
    }


def print_columns(columns: Columns, goals: dict[str, str]) -> None:
    """A Markdown table: each column's milliseconds, the ratios to the shipped store's, the goal."""
    names = list(columns)
    header = ["measurement", *(f"{name}, ms" for name in names), *(f"{name} / {SHIPPED}" for name in names[1:]), "goal"]
    lines = [header, ["---", *["---:"] * (len(header) - 2), "---"]]
    for measurement, goal in goals.items():
        times = [columns[name].get(measurement) for name in names]
        cells = ["" if ms is None else f"{ms:,.1f}" for ms in times]
        ratios = ["" if ms is None else f"{ms / times[0]:.2f}" for ms in times[1:]]  # type: ignore[operator]
        lines.append([measurement, *cells, *ratios, goal])
    for line in lines:
        print("| " + " | ".join(line) + " |")


async def main(args: argparse.Namespace) -> None:
    if not await postgres_available():
        sys.exit("PostgreSQL is not reachable (AUDIT_BENCH_POSTGRES_URL)")
    partitioned = await partitioning_supported()
    if not partitioned:
        print("this backend has no partitioned layout: measuring the table as initialize() makes it", file=sys.stderr)
    print(f"... unpartitioned: {args.rows:,} records over {args.days} days", file=sys.stderr)
    plain = "?partitioning=none" if partitioned else ""
    columns, goals = await measure_layout(plain, args, baseline=not args.no_baseline)
    if partitioned:
        print(f"... partitioned by day: {args.rows:,} records over {args.days} days", file=sys.stderr)
        by_day, _ = await measure_layout("", args, baseline=False)
        columns["partitioned by day"] = by_day[SHIPPED]
    print(f"PostgreSQL, {args.rows:,} records over {args.days} days; median of {args.repeat} runs")
    print_columns(columns, goals)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="records loaded (default 10,000,000)")
    parser.add_argument("--days", type=int, default=30, help="days the records span, ending today")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per measurement")
    parser.add_argument("--no-baseline", action="store_true", help="skip the seed index set's column")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
