"""Per-message cost of the audit hot path, in microseconds, measured piece by piece.

Each piece runs ``count`` times back to back without yielding to the event
loop (so the writer does not run and the numbers are the in-memory work
alone); the queue is flushed afterwards, untimed.
"""

from __future__ import annotations

import time

from audit_plugin import AuditPlugin, MessageAuditTrail, MessageBus, hookimpl
from audit_plugin.records import record_row
from benchmarks.common import Store, make_messages


class _NoOp:
    @hookimpl
    def audit_pre_send(self, message: object) -> None:
        return None


def _per_call_us(seconds: float, count: int) -> float:
    return seconds / count * 1e6


async def measure(store: Store, count: int) -> dict[str, float]:
    messages = make_messages(count)
    clock = time.perf_counter
    results: dict[str, float] = {}

    bus = MessageBus()
    bus.register(_NoOp())
    hook = bus.plugin_manager.hook.audit_pre_send
    started = clock()
    for message in messages:
        hook(message=message)
    results["pluggy hook call (no-op plugin)"] = _per_call_us(clock() - started, count)

    started = clock()
    rows = [record_row(message) for message in messages]
    results["record build + validation (record_row)"] = _per_call_us(clock() - started, count)

    trail = MessageAuditTrail(store.url, max_queue=count * 2 + 10)
    await trail.initialize()
    started = clock()
    rows = [trail.ledger.ledgered(row) for row in rows]
    results["hash-chain digest of the record (ledgered)"] = _per_call_us(clock() - started, count)

    writer = trail.writer
    started = clock()
    for row in rows:
        writer.submit(row=row)
    results["enqueue (writer.submit)"] = _per_call_us(clock() - started, count)
    await trail.flush()

    audited = MessageBus()
    audited.register(AuditPlugin(trail, durability="buffered"))
    hook = audited.plugin_manager.hook.audit_pre_send
    fresh = make_messages(count)
    started = clock()
    for message in fresh:
        hook(message=message)
    total = "audit_pre_send total, buffered (hook + capture + build + digest + enqueue)"
    results[total] = _per_call_us(clock() - started, count)
    await trail.flush()
    await trail.close()
    return results
