"""Appending to a small store and to a large one: write throughput must not depend on what is stored.

    python benchmarks/append.py             # 1,000,000 stored messages, 3 repetitions: ~25-30 minutes on 2 cores
    python benchmarks/append.py --quick     # 50,000 stored messages, one repetition

Per backend, four stores are opened at once, each with its own trail that
stays open throughout, as in a long-running service (its connections, and
the statements prepared on them, live on): a small and a large store for
each kind of message id, the default time-ordered one (UUIDv7) and random
``uuid4`` text. Each workload first runs once on every store while all are
empty (so statements are prepared on young tables); then ``--rows``
delivered messages are bulk-loaded beside the open trails of the large
stores (records and their lifecycle entries, as the bus leaves them: a
``"record"`` and a ``"status"`` entry each, the stored ids of the store's
kind, hash columns filled with fixed strings; that chain is not verified).
Then each repetition runs every workload on the four stores in turn, so the
ratios compare runs made back to back on a shared machine. The small stores
hold only what the runs wrote (tens of thousands of messages).

Workloads, both through the reference bus with 64 concurrent senders and
the audit plugin:

* ``commit``: every ``send()`` waits until its record is committed, then the
  DELIVERED update follows (small batches: what arrives during one commit);
* ``buffered``: ``send()`` does not wait; the writer drains large batches.

Printed per backend and workload: the rate on the small and on the large
store and their ratio (goal >= 0.8), and the time-ordered/uuid4 ratio on the
large stores; medians over the repetitions with half the spread of the
per-repetition ratios.

PostgreSQL runs on ``AUDIT_BENCH_POSTGRES_URL`` (see ``benchmarks/common.py``),
in throwaway databases; SQLite in temporary files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import uuid_utils

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from audit_plugin import AuditPlugin, MessageAuditTrail, MessageBus
from audit_plugin.integrity import chain
from audit_plugin.model.messages import new_message_id
from audit_plugin.storage.integrity_schema import EVENTS_TABLE, events
from audit_plugin.storage.schema import TABLE_NAME, audit_log
from benchmarks.bus import send_all
from benchmarks.common import (
    PAYLOAD_TEXT,
    TRAIL_OPTIONS,
    Row,
    Store,
    make_messages,
    median,
    print_table,
    ratios,
    reachable_stores,
    spread,
)

WORKLOADS = ("commit", "buffered")
DEFAULT_IDS = "time-ordered"
ID_KINDS: dict[str, Callable[[], str]] = {
    DEFAULT_IDS: new_message_id,  # what Message uses by default
    "uuid4": lambda: str(uuid_utils.uuid4()),
}
COLUMNS = [column.name for column in audit_log.columns]
EVENT_COLUMNS = [column.name for column in events.columns]
LOAD_CHUNK = 50_000
HASHES = ("0123456789abcdef" * 4,) * 3
"""entry_digest, prev_hash, entry_hash of a loaded entry: the database's work, not the hashing."""

SIZES = ("small", "large")
Rates = dict[tuple[str, str, str, str], list[float]]
"""(backend, id kind, workload, size) -> messages/s, one per repetition."""


# -- the stored rows ----------------------------------------------------------------------------


def stored_rows(
    count: int, new_id: Callable[[], str], first_sequence: int, chain_id: str
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """``(records, entries)`` chunks for ``count`` delivered messages, created over the hour before now."""
    start = datetime.now(UTC) - timedelta(hours=1)
    step = timedelta(hours=1) / count
    payload = f'{{"task":"summarise","n":0,"text":"{PAYLOAD_TEXT}"}}'
    sequence = first_sequence
    for offset in range(0, count, LOAD_CHUNK):
        records: list[tuple[Any, ...]] = []
        entries: list[tuple[Any, ...]] = []
        for n in range(offset, min(count, offset + LOAD_CHUNK)):
            message_id, at = new_id(), start + n * step
            delivered = at + timedelta(milliseconds=2)
            envelope = (message_id, f"agent-{n % 16}", f"agent-{(n + 1) % 16}", "COMMAND", "NORMAL")
            outcome = ("DELIVERED", f"conv-{n // 10}", None, payload, at, delivered, None, 0, None, None, None)
            records.append((*envelope, *outcome))
            no_operation, version = None, chain.HASH_VERSION
            record = ("record", message_id, "PENDING", at, 0, None, None, no_operation, HASHES[0], version)
            entries.append((chain_id, sequence, *record, *HASHES))
            status = ("status", message_id, "DELIVERED", delivered, None, None, delivered, no_operation, None, version)
            entries.append((chain_id, sequence + 1, *status, *HASHES))
            sequence += 2
        yield records, entries


async def load(store: Store, count: int, new_id: Callable[[], str], chain_id: str) -> float:
    """Bulk-load ``count`` delivered messages after the chain's head; return the seconds it took."""
    started = time.perf_counter()
    if store.kind == "sqlite":
        await asyncio.to_thread(_load_sqlite, store, count, new_id, chain_id)
    else:
        await _load_postgres(store, count, new_id, chain_id)
    return time.perf_counter() - started


async def _load_postgres(store: Store, count: int, new_id: Callable[[], str], chain_id: str) -> None:
    conn = await asyncpg.connect(store.dsn)
    try:
        query = f"SELECT coalesce(max(sequence), 0) FROM {EVENTS_TABLE} WHERE chain_id = $1"
        head = await conn.fetchval(query, chain_id)
        for records, entries in stored_rows(count, new_id, head + 1, chain_id):
            async with conn.transaction():
                await conn.copy_records_to_table(TABLE_NAME, records=records, columns=COLUMNS)
                await conn.copy_records_to_table(EVENTS_TABLE, records=entries, columns=EVENT_COLUMNS)
    finally:
        await conn.close()


def _load_sqlite(store: Store, count: int, new_id: Callable[[], str], chain_id: str) -> None:
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        insert = f"INSERT INTO {TABLE_NAME} VALUES ({', '.join('?' * len(COLUMNS))})"
        insert_entry = f"INSERT INTO {EVENTS_TABLE} VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
        query = f"SELECT coalesce(max(sequence), 0) FROM {EVENTS_TABLE} WHERE chain_id = ?"
        head = conn.execute(query, (chain_id,)).fetchone()[0]
        for records, entries in stored_rows(count, new_id, head + 1, chain_id):
            conn.execute("BEGIN")
            conn.executemany(insert, [_sqlite_times(r, 9, 10) for r in records])
            conn.executemany(insert_entry, [_sqlite_times(e, 5, 8) for e in entries])
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _sqlite_times(row: tuple[Any, ...], *positions: int) -> tuple[Any, ...]:
    """Timestamps as SQLite stores them (naive UTC text, as the trail's column type writes them)."""
    values = list(row)
    for i in positions:
        if values[i] is not None:
            values[i] = values[i].replace(tzinfo=None).isoformat(sep=" ")
    return tuple(values)


# -- the workloads ------------------------------------------------------------------------------


async def run_workload(trail: MessageAuditTrail, workload: str, count: int, new_id: Callable[[], str]) -> float:
    """Messages/s through the bus with the audit plugin in ``workload`` durability, until flushed."""
    messages = make_messages(count, new_id)
    bus = MessageBus()
    plugin = AuditPlugin(trail, durability=workload)  # type: ignore[arg-type]
    bus.register(plugin)
    run = await send_all(bus, messages, trail)
    assert plugin.commit_timeouts == 0 and trail.writer_stats.dropped == 0
    return count / run.seconds


async def one_backend(
    open_store: Callable[[], AbstractAsyncContextManager[Store]], rates: Rates, args: argparse.Namespace
) -> None:
    """Small and large stores for each id kind on one backend, measured in turn; see the module docstring."""
    async with contextlib.AsyncExitStack() as stack:
        trails: dict[tuple[str, str], tuple[Store, MessageAuditTrail]] = {}
        for kind in args.ids:
            for size in SIZES:
                store = await stack.enter_async_context(open_store())
                trail = MessageAuditTrail(store.url, **TRAIL_OPTIONS)  # type: ignore[arg-type]
                await trail.initialize()
                stack.push_async_callback(trail.close)
                trails[kind, size] = store, trail
        for (kind, _size), (_store, trail) in trails.items():
            for workload in WORKLOADS:  # statements prepared and run on young tables
                await run_workload(trail, workload, args.messages, ID_KINDS[kind])
        for kind in args.ids:
            store, trail = trails[kind, "large"]
            seconds = await load(store, args.rows, ID_KINDS[kind], trail.ledger.chain_id)
            print(f"    {store.kind}, {kind} ids: loaded {args.rows:,} messages in {seconds:.1f} s", file=sys.stderr)
        for repetition in range(args.repeat):
            print(f"    {open_store.__name__}: repetition {repetition + 1} of {args.repeat}", file=sys.stderr)
            order = list(trails.items())
            for (kind, size), (store, trail) in order if repetition % 2 == 0 else reversed(order):
                for workload in WORKLOADS:
                    rate = await run_workload(trail, workload, args.messages, ID_KINDS[kind])
                    rates.setdefault((store.kind, kind, workload, size), []).append(rate)


def _ratio(numerators: list[float], denominators: list[float], label: str) -> str:
    """Median of the per-repetition ratios, with half their spread."""
    each = ratios(numerators, denominators)
    noise = f" ±{spread(each) / 2:.0%}" if len(each) > 1 else ""
    return f"{median(each):.2f}{noise} {label}"


def _rate(values: list[float]) -> str:
    noise = f" ±{spread(values) / 2:.0%}" if len(values) > 1 else ""
    return f"{median(values):,.0f}{noise}"


async def measure(args: argparse.Namespace) -> Rates:
    """Every workload on every reachable backend and id kind, small and large stores, ``args.repeat`` times."""
    backends = await reachable_stores(sqlite=not args.no_sqlite, postgres=not args.no_postgres)
    rates: Rates = {}
    for open_store in backends:
        print(f"... appending: {open_store.__name__}", file=sys.stderr)
        await one_backend(open_store, rates, args)
    return rates


def table_rows(rates: Rates, args: argparse.Namespace) -> list[Row]:
    """One row per backend, workload and id kind (rates and large/small), and one time-ordered/uuid4 ratio."""
    rows: list[Row] = []
    for backend in dict.fromkeys(backend for backend, *_ in rates):
        for workload in WORKLOADS:
            for kind in args.ids:
                small, large = rates[backend, kind, workload, "small"], rates[backend, kind, workload, "large"]
                rows.append(
                    (
                        f"{backend}: append, {workload}, {kind} ids",
                        f"small {_rate(small)} / {args.rows:,} stored {_rate(large)} msg/s",
                        _ratio(large, small, "large/small"),
                        ">= 0.8" if kind == DEFAULT_IDS else "",
                    )
                )
            if len(args.ids) == len(ID_KINDS):
                ordered, random = (rates[backend, kind, workload, "large"] for kind in ID_KINDS)
                label = f"{backend}: append, {workload}, {args.rows:,} stored"
                rows.append((label, "", _ratio(ordered, random, "time-ordered/uuid4 ids"), ""))
    return rows


async def main(args: argparse.Namespace) -> None:
    rates = await measure(args)
    print(f"{args.messages:,} messages per run, 64 senders; repetitions: {args.repeat} (median ± half the spread)")
    print_table(table_rows(rates, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50,000 stored messages, one repetition, small runs")
    parser.add_argument("--rows", type=int, default=1_000_000, help="messages loaded before the second run")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per workload run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--ids", choices=list(ID_KINDS), action="append", help="id kinds to run (default: all)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.messages, args.repeat = 50_000, 5_000, 1
    args.ids = args.ids or list(ID_KINDS)
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
