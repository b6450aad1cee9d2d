"""Retention of one day on PostgreSQL: dropping its partition against deleting its rows.

    python benchmarks/retention.py                  # one day of 1,000,000 messages: ~3-4 minutes on 2 cores
    python benchmarks/retention.py --rows 100000    # a quicker run

Two throwaway databases, one partitioned by day (the default layout) and
one unpartitioned (``?partitioning=none``), each loaded by ``COPY`` with the
same ``--rows`` messages of one day a week ago (records with the seed's
indexes, and a ``"record"`` lifecycle entry each) and a tenth as many of
today. On each, timed: removing the old day's records alone (partitions
detached, or ``DELETE``; in a transaction rolled back: what writers wait
for), then the whole retention run ``apply_retention_policy`` makes
(``delete_older_than``: the records, the hash chain's prefix, the retention
entry; timed until it returns, and, partitioned, until the detached tables
it drops in the background are gone: ``wait_for_drops``),
then ``VACUUM`` of both tables (after a ``DELETE`` the space is reusable only
once vacuumed).
Printed: each time and the ratio unpartitioned / partitioned.

PostgreSQL runs on ``AUDIT_BENCH_POSTGRES_URL`` (see ``benchmarks/common.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import uuid_utils
from sqlalchemy import delete

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from audit_plugin.storage.integrity_schema import EVENTS_TABLE
from audit_plugin.storage.schema import TABLE_NAME, audit_log
from audit_plugin_postgres import PostgresBackend, partitions
from benchmarks.common import Row, Store, make_messages, postgres_available, postgres_store, print_table
from benchmarks.stores import COLUMNS, EVENT_COLUMNS, _raw_entry, _raw_row

CHUNK = 10_000
TODAY = partitions.interval_start(datetime.now(UTC), "day")
OLD_DAY = TODAY - timedelta(days=7)


def _ids(start: datetime, count: int) -> list[str]:
    """``count`` UUIDv7 ids made during the day starting at ``start``, in time order."""
    step = 86_400_000_000_000 // count
    base = int(start.timestamp() * 1_000_000_000)
    return [str(uuid_utils.uuid7(nanoseconds=base + n * step)) for n in range(count)]


async def load(store: Store, partitioning: str, rows: int) -> PostgresBackend:
    """An initialised backend on ``store`` holding ``rows`` messages of ``OLD_DAY`` and ``rows // 10`` of today."""
    backend = PostgresBackend(f"{store.url}?partitioning={partitioning}")
    await backend.initialize()
    if backend.layout is not None and backend.layout.partitioned:
        async with backend.engine.begin() as conn:
            await partitions.create_intervals(conn, backend.layout, [OLD_DAY])
            await partitions.create_spans(conn, backend.layout, through=rows + rows // 10)
    conn = await asyncpg.connect(store.dsn)
    try:
        sequence = 0
        for day, count in ((OLD_DAY, rows), (TODAY, rows // 10)):
            messages = make_messages(count)
            for message, message_id in zip(messages, _ids(day, count), strict=True):
                message.message_id = message_id
            for start in range(0, count, CHUNK):
                chunk = messages[start : start + CHUNK]
                stamps = [day + timedelta(seconds=(start + n) * 86_400 / count) for n in range(len(chunk))]
                async with conn.transaction():
                    pairs = list(zip(chunk, stamps, strict=True))
                    records = [_raw_row(m, at) for m, at in pairs]
                    await conn.copy_records_to_table(TABLE_NAME, records=records, columns=COLUMNS)
                    entries = [_raw_entry(sequence + n + 1, m, at) for n, (m, at) in enumerate(pairs)]
                    await conn.copy_records_to_table(EVENTS_TABLE, records=entries, columns=EVENT_COLUMNS)
                sequence += len(chunk)
        await conn.execute(f"VACUUM ANALYZE {TABLE_NAME}, {EVENTS_TABLE}")
    finally:
        await conn.close()
    return backend


async def records_only(backend: PostgresBackend, cutoff: datetime) -> float:
    """Seconds to remove the records older than ``cutoff`` (no lifecycle), in a transaction then rolled back."""
    async with backend.engine.connect() as conn:
        transaction = await conn.begin()
        started = time.perf_counter()
        if backend.layout is not None and backend.layout.partitioned:
            await partitions.detach_partitions_before(conn, cutoff)
            await partitions.delete_records_before(conn, cutoff)
        else:
            await conn.execute(delete(audit_log).where(audit_log.c.timestamp < cutoff))
        elapsed = time.perf_counter() - started
        await transaction.rollback()
    return elapsed


async def measure(rows: int) -> list[Row]:
    seconds: dict[str, float] = {}
    cutoff = OLD_DAY + timedelta(days=1)
    for layout in ("day", "none"):
        async with postgres_store() as store:
            backend = await load(store, layout, rows)
            try:
                seconds[f"{layout} records"] = await records_only(backend, cutoff)
                started = time.perf_counter()
                deleted = await backend.delete_older_than(cutoff)
                seconds[layout] = time.perf_counter() - started
                await backend.wait_for_drops()  # partitioned: the detached tables' files, removed in the background
                seconds[f"{layout} files"] = time.perf_counter() - started
                assert deleted == rows, deleted
                conn = await asyncpg.connect(store.dsn)
                try:
                    started = time.perf_counter()
                    await conn.execute(f"VACUUM {TABLE_NAME}, {EVENTS_TABLE}")
                    seconds[f"{layout}+vacuum"] = seconds[f"{layout} files"] + time.perf_counter() - started
                finally:
                    await conn.close()
            finally:
                await backend.close()
    ms = {name: f"{value * 1000:.0f} ms" for name, value in seconds.items()}

    def ratio(name: str) -> str:
        return f"{seconds['none' + name] / seconds['day' + name]:.1f}x"

    return [
        (f"records of one day ({rows:,}), partitioned: detach", ms["day records"], "1.0x", "< 50 ms"),
        ("  unpartitioned: DELETE", ms["none records"], ratio(" records"), ""),
        ("whole retention run, partitioned: until it returns", ms["day"], "1.0x", "< 50 ms"),
        ("  unpartitioned", ms["none"], ratio(""), ""),
        ("  partitioned, until the detached tables' files are removed", ms["day files"], "1.0x", ""),
        ("  partitioned, then VACUUM", ms["day+vacuum"], "1.0x", ""),
        ("  unpartitioned, then VACUUM", ms["none+vacuum"], ratio("+vacuum"), ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, metavar="N", help="messages in the day removed")
    args = parser.parse_args()
    if not asyncio.run(postgres_available()):
        sys.exit("PostgreSQL is not reachable (AUDIT_BENCH_POSTGRES_URL)")
    print_table(asyncio.run(measure(args.rows)))


if __name__ == "__main__":
    main()
