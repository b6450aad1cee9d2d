"""The same bus with and without the audit plugin: 64 concurrent senders, trivial handlers.

Timed from the first ``send()`` until the last returns and, for the audited
runs, until ``trail.flush()`` returns (every record and status committed), so
``"buffered"`` is not credited with work it merely postponed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus
from benchmarks.common import TRAIL_OPTIONS, Store

SENDERS = 64


@dataclass
class BusRun:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    """Seconds each ``send()`` took."""
    commit_timeouts: int = 0
    dropped: int = 0


async def run_bus(store: Store | None, messages: list[Message], durability: str | None) -> BusRun:
    """Send ``messages`` from ``SENDERS`` tasks; audit into ``store`` when ``durability`` is given."""
    bus = MessageBus()
    trail = plugin = None
    if durability is not None:
        assert store is not None
        trail = MessageAuditTrail(store.url, **TRAIL_OPTIONS)  # type: ignore[arg-type]
        await trail.initialize()
        plugin = AuditPlugin(trail, durability=durability)  # type: ignore[arg-type]
        bus.register(plugin)

    result = await send_all(bus, messages, trail)
    if trail is not None and plugin is not None:
        result.commit_timeouts = plugin.commit_timeouts
        result.dropped = trail.writer_stats.dropped
        await trail.close()
    return result


async def send_all(bus: MessageBus, messages: list[Message], trail: MessageAuditTrail | None = None) -> BusRun:
    """Send ``messages`` from ``SENDERS`` tasks to trivial handlers; timed until ``trail`` (if any) has flushed."""

    async def handler(message: Message) -> None:
        return None

    for agent in {m.to_agent for m in messages}:
        bus.subscribe(agent, handler)
    pending = iter(messages)
    latencies: list[float] = []
    clock = time.perf_counter

    async def sender() -> None:
        for message in pending:
            started = clock()
            await bus.send(message)
            latencies.append(clock() - started)

    started = clock()
    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    if trail is not None:
        await trail.flush()
    return BusRun(clock() - started, latencies)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
