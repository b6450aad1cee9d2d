"""The consume side's outcome paths against the producer's own status updates, ratios measured in the same run.

    python benchmarks/bench_outcomes.py                     # SQLite, and PostgreSQL if reachable
    python benchmarks/bench_outcomes.py --messages 5000 --repeat 1

Each case writes ``--messages`` outcomes through one trail (buffered: every
operation queued at once, then awaited) and reports outcomes per second and
the ratio to its baseline, the same work done with ``update_message_status``
semantics (``enqueue_status``):

* record and outcome in one batch: the producer's record and the consumer's
  ``enqueue_outcome`` queued together (the FastStream test broker's case);
* outcome after the record was committed: the consumer's outcome meets a
  stored record (its fallback copy is inserted apart, with ``RETURNING``);
* outcome without any record: a publisher that is not audited;
* redelivered outcomes: every outcome again with the same ``operation_id``
  (the batch meets the unique index and is written the careful way);
* late outcomes: a different outcome with a new ``operation_id`` after the
  final one (kept as ``"late"`` steps, not applied).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from audit_plugin import Message, MessageAuditTrail, MessageStatus
from audit_plugin.model.records import StatusUpdate
from benchmarks.common import (
    Store,
    make_messages,
    median,
    postgres_available,
    postgres_store,
    spread,
    sqlite_store,
    timed,
)

Setup = Callable[[MessageAuditTrail, list[Message]], Awaitable[None]]
Work = Callable[[MessageAuditTrail, list[Message]], Awaitable[None]]


async def nothing(trail: MessageAuditTrail, messages: list[Message]) -> None:
    return None


async def records(trail: MessageAuditTrail, messages: list[Message]) -> None:
    await asyncio.gather(*[await trail.enqueue_message(m) for m in messages])


async def outcomes(trail: MessageAuditTrail, messages: list[Message], operation: str = "ack") -> None:
    await asyncio.gather(
        *[await trail.enqueue_outcome(m, MessageStatus.DELIVERED, operation_id=operation) for m in messages]
    )


async def statuses(trail: MessageAuditTrail, messages: list[Message], operation: str | None = None) -> None:
    futures = [
        await trail.enqueue_status(StatusUpdate.build(m.message_id, MessageStatus.DELIVERED, operation_id=operation))
        for m in messages
    ]
    await asyncio.gather(*futures)


async def records_with_outcomes(trail: MessageAuditTrail, messages: list[Message]) -> None:
    futures = []
    for m in messages:
        futures.append(await trail.enqueue_message(m))
        futures.append(await trail.enqueue_outcome(m, MessageStatus.DELIVERED, operation_id="ack"))
    await asyncio.gather(*futures)


async def records_with_statuses(trail: MessageAuditTrail, messages: list[Message]) -> None:
    futures = []
    for m in messages:
        futures.append(await trail.enqueue_message(m))
        futures.append(await trail.enqueue_status(StatusUpdate.build(m.message_id, MessageStatus.DELIVERED)))
    await asyncio.gather(*futures)


async def late_failures(trail: MessageAuditTrail, messages: list[Message]) -> None:
    futures = [
        await trail.enqueue_status(StatusUpdate.build(m.message_id, MessageStatus.FAILED, operation_id="reject"))
        for m in messages
    ]
    await asyncio.gather(*futures)


async def delivered(trail: MessageAuditTrail, messages: list[Message]) -> None:
    await records(trail, messages)
    await outcomes(trail, messages)


CASES: list[tuple[str, Setup, Work, Setup, Work]] = [
    # (case, setup, measured, baseline setup, baseline measured)
    ("record and outcome in one batch", nothing, records_with_outcomes, nothing, records_with_statuses),
    ("outcome after the record was committed", records, outcomes, records, statuses),
    ("outcome without any record", nothing, outcomes, records, statuses),
    ("redelivered outcome (same operation_id)", delivered, outcomes, records, outcomes),
    ("late outcome (after the final one)", delivered, late_failures, records, statuses),
]


async def measure(
    make_store: Callable[[], AbstractAsyncContextManager[Store]], setup: Setup, work: Work, n: int
) -> float:
    """Outcomes per second of ``work`` on a fresh store prepared by ``setup``."""
    async with make_store() as store:
        trail = MessageAuditTrail(store.url)
        await trail.initialize()
        try:
            messages = make_messages(n)
            await setup(trail, messages)
            await trail.flush()
            seconds = await timed(lambda: work(trail, messages))
        finally:
            await trail.close()
    return n / seconds


async def main(args: argparse.Namespace) -> None:
    stores: list[tuple[str, Any]] = [("sqlite", sqlite_store)]
    if await postgres_available():
        stores.append(("postgresql", postgres_store))
    print(f"{'store':<11} {'case':<42} {'outcomes/s':>11} {'baseline/s':>11} {'ratio':>6} {'spread':>7}")
    for kind, make_store in stores:
        for case, setup, work, base_setup, base_work in CASES:
            rates, bases = [], []
            for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits both alike
                rates.append(await measure(make_store, setup, work, args.messages))
                bases.append(await measure(make_store, base_setup, base_work, args.messages))
            ratios = [rate / base for rate, base in zip(rates, bases, strict=True)]
            print(
                f"{kind:<11} {case:<42} {median(rates):>11,.0f} {median(bases):>11,.0f} "
                f"{median(ratios):>6.2f} {spread(ratios):>6.0%}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
