"""What integrity and privacy cost: writer throughput with redaction, hashing, encryption on vs off,
and ``verify()`` speed on a long chain.

Run: ``python benchmarks/bench_integrity.py [--messages 20000] [--runs 3] [--verify-rows 1000000] [--postgres URL]``

Writer throughput: ``--messages`` messages (16 agents, ~200-byte payloads)
queued through ``trail.enqueue_message`` and flushed (group commit, 1,000 per
batch), each configuration on a fresh store; the median of ``--runs`` runs,
with the ratio against the baseline (lifecycle only: no redaction, no
hashing, no encryption) measured in the same run. Every configuration writes
one ``message_audit_log`` row and one lifecycle entry per message.

Verify: a chain of ``--verify-rows`` entries (records with ~200-byte
payloads) is written straight through the backend in 1,000-row batches,
then ``trail.verify()`` walks it; rows/second and how much the resident
memory grew during the walk (sampled every 0.2 s) are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from audit_plugin import Message, MessageAuditTrail, MessageType
from audit_plugin.capture import PayloadPolicy
from audit_plugin.crypto import LocalKeyFileProvider
from audit_plugin.records import record_row

PAYLOAD_TEXT = "lorem ipsum dolor sit amet " * 6
BASELINE = "baseline (lifecycle only)"

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    BASELINE: {"hash_chain": False, "redact": False, "encrypt": False},
    "+ redaction": {"hash_chain": False, "redact": True, "encrypt": False},
    "+ hash chain": {"hash_chain": True, "redact": True, "encrypt": False},
    "+ encryption": {"hash_chain": True, "redact": True, "encrypt": True},
    "encryption, no chain": {"hash_chain": False, "redact": True, "encrypt": True},
}


def make_messages(count: int) -> list[Message]:
    return [
        Message(
            f"agent-{n % 16}",
            f"agent-{(n + 1) % 16}",
            MessageType.COMMAND,
            {"task": "summarise", "n": n, "text": PAYLOAD_TEXT},
            correlation_id=f"conv-{n // 10}",
        )
        for n in range(count)
    ]


class Stores:
    """Fresh SQLite files or PostgreSQL databases, removed afterwards."""

    def __init__(self, folder: Path, postgres: str | None) -> None:
        self.folder = folder
        self.postgres = postgres
        self.created: list[str] = []

    async def new(self, kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite+aiosqlite:///{self.folder / (uuid.uuid4().hex + '.db')}"
        assert self.postgres is not None
        name = f"bench_integrity_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(_dsn(self.postgres))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.created.append(name)
        url = make_url(self.postgres).set(drivername="postgresql+asyncpg", database=name)
        return url.render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        if not self.created:
            return
        assert self.postgres is not None
        admin = await asyncpg.connect(_dsn(self.postgres))
        try:
            for name in self.created:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def current_rss() -> float:
    """Resident memory of this process now, in MiB (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def write_rate(url: str, messages: list[Message], options: dict[str, Any], key_file: Path) -> float:
    trail = MessageAuditTrail(
        url,
        hash_chain=options["hash_chain"],
        payload_policy=None if options["redact"] else PayloadPolicy(redact_fields=frozenset()),
        key_provider=LocalKeyFileProvider(key_file) if options["encrypt"] else None,
    )
    await trail.initialize()
    try:
        for message in messages[:16]:  # warm up: data keys exist, connections are open
            await trail.log_message(message)
        started = time.perf_counter()
        for message in messages[16:]:
            await trail.enqueue_message(message)
        await trail.flush()
        elapsed = time.perf_counter() - started
        assert trail.writer_stats.failed == 0 and trail.writer_stats.dropped == 0
        return (len(messages) - 16) / elapsed
    finally:
        await trail.close()


async def bench_writes(stores: Stores, kind: str, count: int, runs: int, key_file: Path) -> None:
    rates: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    names = list(CONFIGURATIONS)
    for run in range(runs):  # interleaved, starting one later each run, so drift and warm-up hit all alike
        for name in names[run % len(names) :] + names[: run % len(names)]:
            options = CONFIGURATIONS[name]
            url = await stores.new(kind)
            rates[name].append(await write_rate(url, make_messages(count), options, key_file))
    baseline = statistics.median(rates[BASELINE])
    print(f"\n{kind}: writer throughput, {count:,} messages, median of {runs} runs")
    print(f"  {'configuration':<28}{'msgs/s':>10}{'vs baseline':>13}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:<28}{median:>10,.0f}{median / baseline:>12.2f}x")


VERIFY_GOAL = 50_000
"""Entries per second ``verify()`` should walk at least."""


@dataclass(frozen=True)
class VerifyRun:
    """One ``verify()`` of a freshly written chain."""

    entries: int
    write_seconds: float
    """Writing the chain straight through the backend."""
    verify_seconds: float
    rss_growth_mib: float
    """How much the resident memory grew during the walk (sampled every 0.2 s)."""
    report: str

    @property
    def rate(self) -> float:
        """Entries verified per second."""
        return self.entries / self.verify_seconds


async def measure_verify(url: str, rows: int) -> VerifyRun:
    """Write a chain of ``rows`` record entries (~200-byte payloads) into an empty store at ``url``, then verify it."""
    async with MessageAuditTrail(url) as trail:
        started = time.perf_counter()
        batch: list[dict[str, Any]] = []
        for n in range(rows):
            payload = {"n": n, "text": PAYLOAD_TEXT}
            batch.append(record_row(Message(f"agent-{n % 16}", f"agent-{(n + 1) % 16}", MessageType.EVENT, payload)))
            if len(batch) == 1_000:
                await trail.backend.write_batch(batch, [])
                batch = []
        if batch:
            await trail.backend.write_batch(batch, [])
        built = time.perf_counter() - started
        rss_before = current_rss()
        peak = rss_before
        verifying = asyncio.ensure_future(trail.verify())
        started = time.perf_counter()
        while not verifying.done():
            await asyncio.wait([verifying], timeout=0.2)
            peak = max(peak, current_rss())
        report = verifying.result()
        elapsed = time.perf_counter() - started
    assert report.ok and report.entries == rows, report
    return VerifyRun(rows, built, elapsed, peak - rss_before, str(report))


async def bench_verify(stores: Stores, kind: str, rows: int) -> None:
    run = await measure_verify(await stores.new(kind), rows)
    print(f"\n{kind}: verify() of a {rows:,}-entry chain")
    written = rows / run.write_seconds
    print(f"  written in {run.write_seconds:.1f}s ({written:,.0f} entries/s straight through the backend)")
    print(
        f"  verified in {run.verify_seconds:.1f}s: {run.rate:,.0f} entries/s (goal >= {VERIFY_GOAL:,}); "
        f"RSS grew at most {run.rss_growth_mib:.1f} MiB"
    )
    print(f"  {run.report}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--verify-rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="PostgreSQL server URL to also benchmark (creates throwaway databases)")
    parser.add_argument("--postgres-verify-rows", type=int, default=0, help="chain length for PostgreSQL verify")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as folder:
        stores = Stores(Path(folder), args.postgres)
        key_file = Path(folder) / "master.key"
        try:
            for kind in ["sqlite", "postgres"] if args.postgres else ["sqlite"]:
                await bench_writes(stores, kind, args.messages, args.runs, key_file)
            if args.verify_rows:
                await bench_verify(stores, "sqlite", args.verify_rows)
            if args.postgres and args.postgres_verify_rows:
                await bench_verify(stores, "postgres", args.postgres_verify_rows)
        finally:
            await stores.drop_all()


if __name__ == "__main__":
    asyncio.run(main())
