"""What an export sink costs the trail it follows: the audited bus with and without one, healthy or not.

    python benchmarks/sinks.py                  # 20,000 messages, 3 repetitions, SQLite
    python benchmarks/sinks.py --postgres       # PostgreSQL too (AUDIT_BENCH_POSTGRES_URL)

Each repetition sends the same messages through the reference bus (64
senders, ``"commit"`` durability, trivial handlers) into a fresh store,
four ways, back to back:

* ``baseline``: no sink;
* ``jsonl file``: an :class:`~audit_plugin.sinks.ExportSink` appending JSON Lines to a file;
* ``syslog, receiver down``: a sink to a port nothing listens on (every send fails, the
  buffer of 10,000 fills and the oldest batches are dropped);
* ``syslog, live receiver``: a sink to a TCP receiver in another process that reads and
  discards (a stand-in for rsyslog, so the receiver's work does not share this process);
* ``export --follow process``: no sink in the writing process; ``audit-plugin export
  --follow`` runs beside it as its own process, polling the store every 0.2 s and
  writing JSON Lines (what it costs the writers is its reads of the store).

Printed: messages per second of each, its ratio to the baseline of the same
repetition (goal >= 0.9: a sink must not slow the trail), and what the sink
sent and dropped. The time is until the trail has committed everything
(``trail.flush()``); the sink's own backlog is drained afterwards, untimed.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus
from audit_plugin.sinks import ExportSink
from benchmarks.bus import send_all
from benchmarks.common import make_messages, median, print_table, ratios, reachable_stores

DISCARD = textwrap.dedent(
    """
    import socket, sys, threading
    server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
    print(server.getsockname()[1], flush=True)
    def drain(conn):
        while conn.recv(1 << 16):
            pass
    while True:
        conn, _ = server.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(url: str, messages: list[Message], destination: str | None, drain: float) -> tuple[float, int, int]:
    """Seconds until every record and outcome is committed; and the sink's sent and dropped (after ``drain`` s)."""
    if destination is not None and destination.startswith("follow:"):
        return await run_beside_follower(url, messages, Path(destination.removeprefix("follow:")))
    bus = MessageBus()
    async with MessageAuditTrail(url) as trail:
        bus.register(AuditPlugin(trail, durability="commit"))
        sink = ExportSink(destination).attach(trail) if destination else None
        started = time.perf_counter()
        await send_all(bus, messages, trail)
        seconds = time.perf_counter() - started
    if sink is None:
        return seconds, 0, 0
    await sink.close(timeout=drain)
    return seconds, sink.stats.sent, sink.stats.dropped


async def run_beside_follower(url: str, messages: list[Message], out: Path) -> tuple[float, int, int]:
    """The baseline run with ``audit-plugin export --follow`` following the store from its own process."""
    async with MessageAuditTrail(url):  # create the store, so the follower can open it
        pass
    cli = Path(sys.executable).with_name("audit-plugin")
    command = [str(cli), "export", "--follow", "--quiet", "--from-sequence", "0", "--interval", "0.2"]
    follower = await asyncio.create_subprocess_exec(*command, "--to", f"jsonl://{out}", "--database-url", url)
    try:
        await asyncio.sleep(1)  # started and polling
        bus = MessageBus()
        async with MessageAuditTrail(url) as trail:
            bus.register(AuditPlugin(trail, durability="commit"))
            started = time.perf_counter()
            await send_all(bus, messages, trail)
            seconds = time.perf_counter() - started
            expected = trail.writer_stats.written
        for _ in range(1200):  # let it catch up (untimed)
            if lines_in(out) >= expected:
                break
            await asyncio.sleep(0.1)
    finally:
        follower.terminate()
        await follower.wait()
    sent = lines_in(out, remove=True)
    return seconds, sent, 0


def lines_in(path: Path, *, remove: bool = False) -> int:
    if not path.exists():
        return 0
    with path.open() as stream:
        count = sum(1 for _ in stream)
    if remove:
        path.unlink()
    return count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    messages = make_messages(args.messages)
    receiver = await asyncio.create_subprocess_exec(sys.executable, "-c", DISCARD, stdout=asyncio.subprocess.PIPE)
    assert receiver.stdout is not None
    live_port = int(await receiver.stdout.readline())
    try:
        with tempfile.TemporaryDirectory(prefix="audit-bench-sinks-") as folder:
            ways = {  # destination, and how long the sink may drain its backlog once the run is timed
                "baseline": (None, 0.0),
                "jsonl file": (f"jsonl://{folder}/out.jsonl", 120.0),
                "syslog, receiver down": (f"syslog+tcp://127.0.0.1:{free_port()}", 0.0),
                "syslog, live receiver": (f"syslog+tcp://127.0.0.1:{live_port}", 120.0),
                "export --follow process": (f"follow:{folder}/followed.jsonl", 0.0),
            }
            for make_store in await reachable_stores(sqlite=True, postgres=args.postgres):
                seconds: dict[str, list[float]] = {way: [] for way in ways}
                counts: dict[str, tuple[int, int]] = {}
                for _ in range(args.repeat):
                    for way, (destination, drain) in ways.items():
                        async with make_store() as store:
                            elapsed, sent, dropped = await run(store.url, messages, destination, drain)
                            kind = store.kind
                        seconds[way].append(elapsed)
                        counts[way] = (sent, dropped)
                rows = []
                for way in ways:
                    rate = args.messages / median(seconds[way])
                    ratio = median(ratios(seconds["baseline"], seconds[way]))
                    sent, dropped = counts[way]
                    detail = "" if way == "baseline" else f" (sink sent {sent:,}, dropped {dropped:,})"
                    rows.append((f"{kind}: {way}", f"{rate:,.0f} msg/s{detail}", f"{ratio:.2f}", ">= 0.90"))
                print_table(rows)
    finally:
        receiver.kill()
        await receiver.wait()


if __name__ == "__main__":
    asyncio.run(main())
