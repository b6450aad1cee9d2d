"""Per-message cost of the audit hot path (``audit_pre_send``), in microseconds, measured piece by piece.

    python benchmarks/hot_path.py [--messages 20000] [--repeat 7]

Each piece runs ``messages`` times back to back without yielding to the
event loop (so the writer does not run and the numbers are the in-memory
work alone); queued records are flushed afterwards, untimed. Every piece is
repeated ``repeat`` times on fresh messages and the fastest repetition is
reported: on a shared machine the others measure the neighbours too.

The pieces follow a message's one pass (see :mod:`audit_plugin.privacy.capture`):
the pluggy call, the message check, the payload capture, the row, its
ledger entry (with and without the hash chain's digest), the queue. The
totals are the whole ``audit_pre_send`` of a bus with the audit plugin in
``"buffered"`` durability and no tracing SDK, once with the hash chain on
(as shipped: the goal) and once with ``hash_chain=False``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, hookimpl
from audit_plugin.model.records import build_row, check_message
from benchmarks.common import Row, Store, make_messages, print_table, sqlite_store

GOAL_US = 6.0
"""The most ``audit_pre_send`` may cost per message, hash chain on."""

TOTAL_ON = "audit_pre_send total, buffered, hash chain on"
TOTAL_OFF = "audit_pre_send total, buffered, hash_chain=False"


class _NoOp:
    @hookimpl
    def audit_pre_send(self, message: object) -> None:
        return None


def _best_us(run: Callable[[list[Message]], object], count: int, repeat: int) -> float:
    """Fastest of ``repeat`` runs of ``run`` over ``count`` fresh messages, in µs per message."""
    best = float("inf")
    for _ in range(repeat):
        messages = make_messages(count)
        started = time.perf_counter()
        run(messages)
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def _each(call: Callable[[Message], object]) -> Callable[[list[Message]], None]:
    def run(messages: list[Message]) -> None:
        for message in messages:
            call(message)

    return run


async def _audited_hook_us(store: Store, count: int, repeat: int, *, hash_chain: bool) -> float:
    trail = MessageAuditTrail(store.url, max_queue=count * 2 + 10, hash_chain=hash_chain)
    await trail.initialize()
    bus = MessageBus()
    bus.register(AuditPlugin(trail, durability="buffered"))
    hook = bus.plugin_manager.hook.audit_pre_send
    best = float("inf")
    for _ in range(repeat):
        best = min(best, _best_us(_each(lambda message: hook(message=message)), count, 1))
        await trail.flush()
    await trail.close()
    return best


async def measure(store: Store, count: int, repeat: int = 7) -> dict[str, float]:
    """µs per message of each piece and of the two totals (see the module docstring)."""
    results: dict[str, float] = {}
    bus = MessageBus()
    bus.register(_NoOp())
    hook = bus.plugin_manager.hook.audit_pre_send
    results["pluggy hook call (no-op plugin)"] = _best_us(_each(lambda m: hook(message=m)), count, repeat)

    trail = MessageAuditTrail(store.url, max_queue=count * 2 + 10)
    await trail.initialize()
    payloads = trail.protection.capture
    results["message check (check_message)"] = _best_us(_each(check_message), count, repeat)
    results["payload capture (redaction, JSON, size cap)"] = _best_us(_each(payloads.encode), count, repeat)
    results["row build (build_row)"] = _best_us(_each(lambda m: build_row(m, "{}")), count, repeat)
    for hashing in (True, False):
        trail.ledger.hashing = hashing
        row = build_row(make_messages(1)[0], payloads.encode(make_messages(1)[0]))
        label = f"ledger entry (ledgered), hash chain {'on' if hashing else 'off'}"
        results[label] = _best_us(_each(lambda _, row=row: trail.ledger.ledgered(row)), count, repeat)
    trail.ledger.hashing = True

    writer = trail.writer
    best = float("inf")
    for _ in range(repeat):
        rows = [trail.ledger.ledgered(build_row(m, "{}")) for m in make_messages(count)]
        started = time.perf_counter()
        for row in rows:
            writer.submit(row=row)
        best = min(best, time.perf_counter() - started)
        await trail.flush()
    results["enqueue (writer.submit)"] = best / count * 1e6
    await trail.close()

    results[TOTAL_ON] = await _audited_hook_us(store, count, repeat, hash_chain=True)
    results[TOTAL_OFF] = await _audited_hook_us(store, count, repeat, hash_chain=False)
    return results


def table_rows(results: dict[str, float]) -> list[Row]:
    """One row per piece; the totals against the goal (µs, lower is better)."""
    rows: list[Row] = []
    for piece, micros in results.items():
        ratio = goal = ""
        if piece in (TOTAL_ON, TOTAL_OFF):
            ratio = f"{micros / GOAL_US:.2f} of the goal"
            goal = f"<= {GOAL_US:g} µs" if piece == TOTAL_ON else ""
        rows.append((f"hot path: {piece}", f"{micros:.2f} µs/msg", ratio, goal))
    return rows


async def main(args: argparse.Namespace) -> None:
    async with sqlite_store() as store:
        results = await measure(store, args.messages, args.repeat)
    print(f"{args.messages:,} messages per run, fastest of {args.repeat} runs")
    print_table(table_rows(results))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
