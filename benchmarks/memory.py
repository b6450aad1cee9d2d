"""Peak memory of a bus pushing many messages, audited or not; run in a subprocess per measurement.

``python -m benchmarks.memory COUNT MODE`` with MODE ``none`` (bare bus),
``buffered`` or ``commit`` prints one JSON line: peak resident set size of
the whole process and, for audited runs, the writer's counters. Messages are
made on the fly, so the input list is not counted.

The peak is ``VmHWM`` from ``/proc/self/status`` where there is one: Linux
carries ``ru_maxrss`` over from the parent across ``fork`` and ``exec``, so a
subprocess started by a large benchmark process would report the parent's
size instead of its own.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType
from benchmarks.common import PAYLOAD_TEXT

SENDERS = 64


async def main(count: int, mode: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="audit-mem-") as folder:
        bus = MessageBus()
        trail = None
        if mode != "none":
            trail = MessageAuditTrail(f"sqlite+aiosqlite:///{Path(folder) / 'audit.db'}")
            await trail.initialize()
            bus.register(AuditPlugin(trail, durability=mode))  # type: ignore[arg-type]

        async def handler(message: Message) -> None:
            return None

        for n in range(16):
            bus.subscribe(f"agent-{n}", handler)
        numbers = iter(range(count))
        deepest = 0

        async def sender() -> None:
            nonlocal deepest
            for n in numbers:
                await bus.send(
                    Message(
                        f"agent-{n % 16}",
                        f"agent-{(n + 1) % 16}",
                        MessageType.COMMAND,
                        {"task": "summarise", "n": n, "text": PAYLOAD_TEXT},
                    )
                )
                if trail is not None and n % 1000 == 0:
                    deepest = max(deepest, trail.writer_stats.queue_depth)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(SENDERS)))
        result: dict[str, object] = {"mode": mode, "messages": count}
        if trail is not None:
            await trail.flush()
            result["written"] = trail.writer_stats.written
            result["dropped"] = trail.writer_stats.dropped
            result["deepest_queue_sampled"] = deepest
            await trail.close()
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["peak_rss_mib"] = round(peak_rss_kib() / 1024, 1)
        return result


def peak_rss_kib() -> int:
    """This process's own peak resident set size, in KiB."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS counts bytes, the others KiB


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(int(sys.argv[1]), sys.argv[2]))))
