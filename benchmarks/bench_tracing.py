"""Per-message cost of tracing on the hot path of ``MessageBus.send()`` with ``AuditPlugin``.

Every configuration is the same bus + plugin sending the same messages to a
trivial handler in ``"buffered"`` durability (so the store's commit latency
is not in the timed path: the hot path is what an agent feels). Baseline:
the same bus and plugin with their tracing and metrics calls swapped out for
nothing (done here, in the benchmark; the package has no such switch - pass
``NoOpTracerProvider()`` to turn spans off). Rows:

* no SDK: only ``opentelemetry-api`` installed/configured (global proxies);
* SDK, sampling off: ``TracerProvider(sampler=ParentBased(ALWAYS_OFF))``;
* SDK, sampled: every span recorded and handed to a ``BatchSpanProcessor``
  (exporter discards, so export cost stays off the event loop as in production);
* SDK, sampled + metrics: the above plus an SDK ``MeterProvider``.

Rounds interleave the configurations; each is timed in chunks of 50 sends.
Printed per configuration: the median chunk and the mean of the fastest
tenth of chunks (less disturbed by other processes on a shared machine), as
microseconds per message and as ratios against the baseline of the same run.
Each message produces one send span (plugin) and one process span (bus).
A second, smaller table repeats this in ``"commit"`` durability (the
default), where each send waits for two SQLite commits: the end-to-end view.

Run: ``python benchmarks/bench_tracing.py [--messages 2000] [--rounds 7]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType
from audit_plugin.hooks.plugin import Durability


class DiscardingExporter(SpanExporter):
    """Accepts spans and throws them away: the cost measured is the SDK's, not a network's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _NoTracing:
    """Stands in for the plugin's SendTracer and SendMetrics in the baseline."""

    def start(self, message: Message) -> None:
        return None

    def inject(self, span: None, message: Message) -> None:
        pass

    def end(self, span: trace.Span, receipt: Any) -> None:
        pass

    def record(self, *args: Any) -> None:
        pass


class UntracedBus(MessageBus):
    async def _run_handler(self, handler: Any, message: Message, retries: int) -> None:
        await handler(message)


@dataclass
class Config:
    name: str
    bus: MessageBus
    tracer_provider: TracerProvider | None = None
    samples: list[float] = field(default_factory=list)


async def handle(message: Message) -> None:
    pass


def make_config(
    name: str,
    trail: MessageAuditTrail,
    *,
    durability: Durability = "buffered",
    untraced: bool = False,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> Config:
    bus = (UntracedBus if untraced else MessageBus)(tracer_provider=tracer_provider, meter_provider=meter_provider)
    plugin = AuditPlugin(trail, durability=durability, tracer_provider=tracer_provider, meter_provider=meter_provider)
    if untraced:
        plugin._tracer = plugin._send_metrics = _NoTracing()  # type: ignore[assignment]
    bus.register(plugin)
    bus.subscribe("worker", handle)
    return Config(name, bus, tracer_provider)


async def run_round(config: Config, trail: MessageAuditTrail, count: int, chunk: int = 50) -> None:
    """Time ``count`` sends in chunks, the writer drained in between (untimed), as in steady state.

    Each chunk's time per message is one sample.
    """
    send = config.bus.send
    for start in range(0, count, chunk):
        messages = [Message("planner", "worker", MessageType.COMMAND, {"step": i}) for i in range(start, start + chunk)]
        started = time.perf_counter()
        for message in messages:
            await send(message)
        config.samples.append((time.perf_counter() - started) / chunk)
        await trail.flush()
    if config.tracer_provider is not None:
        config.tracer_provider.force_flush()


def sampled_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=1 << 16))
    return provider


def configurations(trail: MessageAuditTrail, durability: Durability) -> list[Config]:
    return [
        make_config("bus + plugin, tracing swapped out (baseline)", trail, durability=durability, untraced=True),
        make_config("no SDK (opentelemetry-api only)", trail, durability=durability),
        make_config(
            "SDK, sampling off (ParentBased(ALWAYS_OFF))",
            trail,
            durability=durability,
            tracer_provider=TracerProvider(sampler=ParentBased(ALWAYS_OFF)),
        ),
        make_config(
            "SDK, sampled, BatchSpanProcessor", trail, durability=durability, tracer_provider=sampled_provider()
        ),
        make_config(
            "SDK, sampled, + SDK metrics",
            trail,
            durability=durability,
            tracer_provider=sampled_provider(),
            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        ),
    ]


async def measure(trail: MessageAuditTrail, durability: Durability, count: int, rounds: int) -> None:
    configs = configurations(trail, durability)
    for config in configs:  # warm up
        await run_round(config, trail, min(count, 200))
        config.samples.clear()
    for _ in range(rounds):
        for config in configs:
            await run_round(config, trail, count)
    baseline_median = statistics.median(configs[0].samples)
    baseline_fastest = fastest(configs[0].samples)
    print(f"\ndurability={durability!r}: {count} sends x {rounds} rounds, timed in chunks, µs per message\n")
    print("| configuration | median | ratio | +µs | fastest decile | ratio | +µs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for config in configs:
        median, quick = statistics.median(config.samples), fastest(config.samples)
        print(
            f"| {config.name} | {median * 1e6:.1f} | {median / baseline_median:.2f}x | "
            f"{(median - baseline_median) * 1e6:.1f} | {quick * 1e6:.1f} | {quick / baseline_fastest:.2f}x | "
            f"{(quick - baseline_fastest) * 1e6:.1f} |"
        )


def fastest(samples: list[float]) -> float:
    """Mean of the fastest tenth of the chunks: the cost with the least interference from other processes."""
    ordered = sorted(samples)
    return statistics.fmean(ordered[: max(1, len(ordered) // 10)])


async def main(count: int, rounds: int, commit_count: int) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "no global SDK for the no-SDK row"
    with tempfile.TemporaryDirectory() as tmp:
        async with MessageAuditTrail(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}") as trail:
            await measure(trail, "buffered", count, rounds)
            if commit_count:
                await measure(trail, "commit", commit_count, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per round and configuration")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--commit-messages", type=int, default=200, help="messages per round in 'commit' durability (0: skip)"
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.rounds, arguments.commit_messages))
