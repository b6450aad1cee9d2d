"""FastStream on a real Redis, with and without ``AuditMiddleware``: messages/s and their ratio in one run.

    python benchmarks/faststream.py                # 5,000 messages x 3 repetitions, SQLite store
    python benchmarks/faststream.py --postgres     # the store on PostgreSQL instead
    python benchmarks/faststream.py --quick        # 1,000 messages, one repetition

Workload: one producer broker and one consumer broker (a Redis list
subscriber running 16 handlers at once), 64 concurrent publishers, ~200-byte
JSON payloads. A run is timed from the first publish until every handler has
finished (in ``"commit"`` durability a handler slot is free again only once
its outcome is committed, so those commits are in the time). Variants are
interleaved per repetition; each ratio is audited / bare of the same
repetition, and the median is reported. Afterwards every audited run is
checked: one DELIVERED record per message.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Run as a script, this file's folder comes first on sys.path and its name would hide the faststream package.
sys.path[:] = [str(HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]

from faststream.redis import RedisBroker  # noqa: E402

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus  # noqa: E402
from audit_plugin.integrations.faststream import AuditMiddleware  # noqa: E402
from benchmarks.common import PAYLOAD_TEXT, Store, median, postgres_store, spread, sqlite_store  # noqa: E402

MODES = ("none", "buffered", "commit")
GOALS = {"buffered": 0.7, "commit": 0.4}
PUBLISHERS = 64
HANDLERS = 16


TRAIL_OPTIONS: dict[str, Any] = {}
"""Extra ``MessageAuditTrail`` options for the measured trails (``--batch-interval`` sets one)."""


async def run_once(store: Store, redis_url: str, count: int, mode: str) -> float:
    """Seconds to publish and consume ``count`` messages; the store is checked afterwards."""
    target = f"bench-{uuid.uuid4().hex[:12]}"
    async with MessageAuditTrail(store.url, **TRAIL_OPTIONS) as trail:
        middlewares = [] if mode == "none" else [AuditMiddleware(trail, agent="producer", durability=mode)]
        consumer_middlewares = [] if mode == "none" else [AuditMiddleware(trail, agent="consumer", durability=mode)]
        producer = RedisBroker(redis_url, middlewares=middlewares, logger=None)
        consumer = RedisBroker(redis_url, middlewares=consumer_middlewares, logger=None)
        done = asyncio.Event()
        handled = 0

        @consumer.subscriber(channel=target, max_workers=HANDLERS)
        async def handle(body: dict[str, Any]) -> None:
            nonlocal handled
            handled += 1
            if handled == count:
                done.set()

        async def publish(first: int) -> None:
            for n in range(first, count, PUBLISHERS):
                await producer.publish({"task": "summarise", "n": n, "text": PAYLOAD_TEXT}, channel=target)

        await producer.start()
        await consumer.start()
        try:
            started = time.perf_counter()
            await asyncio.gather(*(publish(first) for first in range(PUBLISHERS)))
            await asyncio.wait_for(done.wait(), 120)
            seconds = time.perf_counter() - started
        finally:
            await consumer.stop()
            await producer.stop()
        if mode != "none":
            await trail.flush()
            delivered = await trail.count_messages(AuditQuery(to_agent=target, status=MessageStatus.DELIVERED))
            assert delivered == count, f"{mode}: {delivered} of {count} records DELIVERED"
    return seconds


async def measure(open_store: Any, redis_url: str, count: int, repeat: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    store_context: AbstractAsyncContextManager[Store] = open_store()
    async with store_context as store:
        await run_once(store, redis_url, min(count, 200), "buffered")  # warm up connections and the schema
        for _ in range(repeat):
            for mode in MODES:
                rates[mode].append(count / await run_once(store, redis_url, count, mode))
    return rates


def report(rates: dict[str, list[float]], store_kind: str) -> list[tuple[str, str, str, str]]:
    rows = [(f"{store_kind}: FastStream/Redis, no audit", f"{median(rates['none']):,.0f} msg/s", "", "")]
    for mode in ("buffered", "commit"):
        ratios = [a / b for a, b in zip(rates[mode], rates["none"], strict=True)]
        noise = f" ±{spread(ratios) / 2:.0%}" if len(ratios) > 1 else ""
        rows.append(
            (
                f"{store_kind}: FastStream/Redis + AuditMiddleware, {mode}",
                f"{median(rates[mode]):,.0f} msg/s",
                f"{median(ratios):.2f}{noise} of bare",
                f">= {GOALS[mode]}",
            )
        )
    return rows


async def main(args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    open_store = postgres_store if args.postgres else sqlite_store
    rates = await measure(open_store, args.redis_url, args.messages, args.repeat)
    return report(rates, "postgresql" if args.postgres else "sqlite")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="store on PostgreSQL (AUDIT_BENCH_POSTGRES_URL)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--quick", action="store_true", help="1,000 messages, one repetition")
    parser.add_argument("--batch-interval", type=float, help="the trails' batch_interval (default: the trail's)")
    args = parser.parse_args(argv)
    if args.batch_interval is not None:
        TRAIL_OPTIONS["batch_interval"] = args.batch_interval
    if args.quick:
        args.messages, args.repeat = 1_000, 1
    return args


if __name__ == "__main__":
    arguments = parse_args()
    rows = asyncio.run(main(arguments))
    print(
        f"messages: {arguments.messages:,} per run, {PUBLISHERS} publishers, {HANDLERS} handlers; "
        f"repetitions: {arguments.repeat} (median ± half the spread)"
    )
    for row in rows:
        print("  ".join(row))
