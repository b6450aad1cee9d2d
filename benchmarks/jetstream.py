"""Ingesting through NATS JetStream against writing straight into PostgreSQL, measured side by side.

    python benchmarks/jetstream.py                 # 20,000 messages, 3 repetitions
    python benchmarks/jetstream.py --messages 5000 --repeat 1

The same messages (16 agents, ~200-byte payloads) reach a fresh PostgreSQL
database four ways:

* ``publish``: a ``nats://`` trail publishes their records to a fresh stream
  (the producer's side: queued, published concurrently per batch, each
  acknowledged by the stream);
* ``ingest x2``: two ingester processes drain that stream into the database
  (decode, check, write through the trail's writer, acknowledge); timed from
  the moment both are connected until the stream is empty;
* ``writer``: one ``MessageAuditTrail`` on the database, fed directly (what a
  producer does without the transport);
* ``raw COPY``: asyncpg ``copy_records_to_table`` of the same records, 1,000
  per transaction, no lifecycle, no checks: the database's own limit.

Ratios are against ``raw COPY`` of the same run. NATS on
``AUDIT_BENCH_NATS_URL`` (default ``nats://127.0.0.1:4222``); PostgreSQL as
the other benchmarks (``AUDIT_BENCH_POSTGRES_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import nats

from audit_plugin import Message, MessageAuditTrail
from benchmarks import stores
from benchmarks.common import make_messages, median, postgres_available, postgres_store, spread

NATS_URL = os.environ.get("AUDIT_BENCH_NATS_URL", "nats://127.0.0.1:4222")
INGESTERS = 2


async def publish(source: str, messages: list[Message]) -> float:
    """Seconds to publish every record through a ``nats://`` trail (until the stream acknowledged all)."""
    async with MessageAuditTrail(source, batch_size=1000) as trail:
        started = time.perf_counter()
        for message in messages:
            if trail.enqueue_message_nowait(message) is None:
                await trail.enqueue_message(message)
            if trail.writer_stats.queue_depth >= 1000:
                await asyncio.sleep(0)
        await trail.flush()
        return time.perf_counter() - started


def _ingester_process(source: str, database_url: str, ready: multiprocessing.Barrier) -> None:  # type: ignore[type-arg]
    from audit_plugin.jetstream.ingest import JetStreamIngester

    async def run() -> None:
        async with MessageAuditTrail(database_url) as trail:
            ingester = JetStreamIngester(source, trail, batch_size=1000, fetch_timeout=0.5)
            await asyncio.to_thread(ready.wait)
            await ingester.run(exit_when_idle=True)

    asyncio.run(run())


async def ingest(source: str, database_url: str) -> float:
    """Seconds for two ingester processes to drain ``source`` into ``database_url``."""
    async with MessageAuditTrail(database_url):
        pass  # the schema, once
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(INGESTERS + 1)
    processes = [
        context.Process(target=_ingester_process, args=(source, database_url, ready)) for _ in range(INGESTERS)
    ]
    for process in processes:
        process.start()
    await asyncio.to_thread(ready.wait)
    started = time.perf_counter()
    for process in processes:
        await asyncio.to_thread(process.join)
        if process.exitcode != 0:
            raise RuntimeError(f"an ingester failed with exit code {process.exitcode}")
    return time.perf_counter() - started


async def delete_stream(name: str) -> None:
    client = await nats.connect(NATS_URL)
    try:
        await client.jetstream().delete_stream(name)
    finally:
        await client.close()


async def one_round(count: int) -> dict[str, float]:
    """Rows per second of each path for ``count`` fresh messages."""
    messages = make_messages(count)
    rates: dict[str, float] = {}
    stream = f"bench_{uuid.uuid4().hex[:10]}"
    source = f"{NATS_URL}/{stream}"
    try:
        rates["publish"] = count / await publish(source, messages)
        async with postgres_store() as store:
            rates["ingest x2"] = count / await ingest(source, store.url)
            assert await stores.count_rows(store) == count
    finally:
        await delete_stream(stream)
    async with postgres_store() as store:
        await stores.prepare(store)
        started = time.perf_counter()
        await stores.write_with_writer(store, messages)
        rates["writer"] = count / (time.perf_counter() - started)
    async with postgres_store() as store:
        await stores.prepare(store)
        started = time.perf_counter()
        await stores.write_raw(store, messages)
        rates["raw COPY"] = count / (time.perf_counter() - started)
    return rates


async def main(args: argparse.Namespace) -> None:
    if not await postgres_available():
        raise SystemExit("PostgreSQL is not reachable (AUDIT_BENCH_POSTGRES_URL)")
    rounds = [await one_round(args.messages) for _ in range(args.repeat)]
    print(f"{args.messages:,} messages into PostgreSQL, median of {args.repeat} (spread)")
    print(f"{'path':<12} {'rows/s':>10}  {'vs raw COPY':>11}")
    raw = [r["raw COPY"] for r in rounds]
    for path in ("publish", "ingest x2", "writer", "raw COPY"):
        values = [r[path] for r in rounds]
        ratio = median([v / c for v, c in zip(values, raw, strict=True)])
        print(f"{path:<12} {median(values):>10,.0f}  {ratio:>10.2f}x  ({spread(values):.0%})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
