"""What integrity and privacy cost: writer throughput with redaction, hashing, encryption on vs off,
the hash chain's CPU time per message in each hash format, and ``verify()`` speed on a long chain.

Run: ``python benchmarks/bench_integrity.py [--messages 20000] [--runs 3] [--verify-rows 1000000] [--postgres URL]``

Writer throughput: ``--messages`` messages (16 agents, ~200-byte payloads)
queued through ``trail.enqueue_message`` and flushed (group commit, 1,000 per
batch), each configuration on a fresh store; the median of ``--runs`` runs,
with the ratio against the baseline (lifecycle only: no redaction, no
hashing, no encryption) measured in the same run. Every configuration writes
one ``message_audit_log`` row and one lifecycle entry per message; "format 1"
hashes in the chain's earlier format, for comparison.

Hashing: the CPU time per message of a record entry's digests (``Ledger.ledgered``,
run where the record is built) and of a status entry's, in hash format 1 and
format 2, and of one link hash, ``--messages`` times each, interleaved.

Verify: a chain of ``--verify-rows`` entries (records with ~200-byte
payloads) is written straight through the backend in 1,000-row batches,
then, ``--runs`` times interleaved, the walk's rows are read without any
check (the baseline: the same query, streamed the same way) and
``trail.verify()`` walks them; the medians, their ratio, and how much the
resident memory grew during a walk (sampled every 0.2 s) are printed.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from audit_plugin import Message, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.integrity import chain
from audit_plugin.integrity.ledger import Ledger
from audit_plugin.model.records import StatusUpdate, record_row
from audit_plugin.privacy.capture import PayloadPolicy
from audit_plugin.privacy.crypto import LocalKeyFileProvider
from audit_plugin.storage.chain_walk import walk_statement

PAYLOAD_TEXT = "lorem ipsum dolor sit amet " * 6
BASELINE = "baseline (lifecycle only)"

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    BASELINE: {"hash_chain": False, "redact": False, "encrypt": False},
    "+ redaction": {"hash_chain": False, "redact": True, "encrypt": False},
    "+ hash chain, format 1": {"hash_chain": True, "redact": True, "encrypt": False, "hash_version": 1},
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
    trail.ledger.hash_version = options.get("hash_version", chain.HASH_VERSION)
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


def bench_hashing(count: int, runs: int) -> None:
    """CPU time per message of the chain's hashing, format 1 against format 2, measured side by side."""
    rows = [record_row(message) for message in make_messages(count)]
    update = StatusUpdate.build(rows[0]["message_id"], MessageStatus.DELIVERED, datetime.now(UTC))
    ledger = Ledger()
    digest = "ab" * 32

    def per_message(work: Any) -> float:
        started = time.process_time()
        work()
        return (time.process_time() - started) / count * 1e6

    pieces = {
        "record entry (Ledger.ledgered)": lambda: [ledger.ledgered(row) for row in rows],
        "status entry (Ledger.status_entry)": lambda: [ledger.status_entry(update) for _ in rows],
    }
    timings: dict[tuple[str, int], list[float]] = {(name, v): [] for name in pieces for v in (1, 2)}
    links: list[float] = []
    for _ in range(runs):
        for version in (1, 2):
            ledger.hash_version = version
            for name, work in pieces.items():
                timings[name, version].append(per_message(work))
        links.append(per_message(lambda: [chain.link_hash("default", n, digest, digest) for n in range(count)]))
    print(f"\nhashing CPU time per message, {count:,} messages, median of {runs} runs")
    print(f"  {'entry':<38}{'format 1 µs':>12}{'format 2 µs':>12}{'saved':>8}{'v2 vs v1':>10}")
    for name in pieces:
        v1, v2 = (statistics.median(timings[name, version]) for version in (1, 2))
        print(f"  {name:<38}{v1:>12.2f}{v2:>12.2f}{v1 - v2:>8.2f}{v2 / v1:>9.2f}x")
    print(f"  {'one link hash (Ledger.links, per entry)':<38}{'':>12}{statistics.median(links):>12.2f}")


async def read_rate(trail: MessageAuditTrail) -> tuple[float, float]:
    """Rows/s of the walk's own query, streamed as ``verify()`` streams it, with nothing checked; CPU µs per row."""
    started, cpu = time.perf_counter(), time.process_time()
    read = 0
    async with trail.backend.engine.connect() as conn:
        result = await conn.stream(walk_statement(trail.ledger.chain_id, 0))
        async for partition in result.partitions():
            read += len(partition)
    return read / (time.perf_counter() - started), (time.process_time() - cpu) / read * 1e6


async def verify_rate(trail: MessageAuditTrail, rows: int) -> tuple[float, float, float, Any]:
    """Entries/s of ``trail.verify()``, its CPU µs per entry, the RSS growth during it (MiB), and its report."""
    rss_before = current_rss()
    peak = rss_before
    verifying = asyncio.ensure_future(trail.verify())
    started, cpu = time.perf_counter(), time.process_time()
    while not verifying.done():
        await asyncio.wait([verifying], timeout=0.2)
        peak = max(peak, current_rss())
    report = verifying.result()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert report.ok and report.entries == rows, report
    return rows / elapsed, cpu / rows * 1e6, peak - rss_before, report


async def write_chain(trail: MessageAuditTrail, rows: int, hash_version: int) -> float:
    """Seconds to write ``rows`` record entries in format ``hash_version`` straight through the backend."""
    trail.ledger.hash_version = hash_version
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
    return time.perf_counter() - started


async def bench_verify(stores: Stores, kind: str, rows: int, runs: int) -> None:
    """``verify()`` of a format-2 chain and of a format-1 one, against reading the walk's rows, interleaved."""
    trails = {version: MessageAuditTrail(await stores.new(kind)) for version in (1, 2)}
    samples: dict[str, list[tuple[float, float]]] = {"read": [], "verify format 1": [], "verify format 2": []}
    growths = []
    try:
        for version, trail in trails.items():
            await trail.initialize()
            built = await write_chain(trail, rows, version)
        for _ in range(runs):  # interleaved, so the machine's drift hits all alike
            samples["read"].append(await read_rate(trails[2]))
            for version, trail in trails.items():
                rate, cpu, growth, report = await verify_rate(trail, rows)
                samples[f"verify format {version}"].append((rate, cpu))
                growths.append(growth)
    finally:
        for trail in trails.values():
            await trail.close()
    medians = {name: [statistics.median(v) for v in zip(*values, strict=True)] for name, values in samples.items()}
    baseline = medians["read"][0]
    print(f"\n{kind}: verify() of a {rows:,}-entry chain, median of {runs} runs (CPU: this process, all threads)")
    print(f"  written in {built:.1f}s ({rows / built:,.0f} entries/s straight through the backend)")
    print(f"  {'':<44}{'per second':>12}{'vs baseline':>13}{'CPU µs each':>13}")
    names = {"read": "reading the walk's rows, no checks (baseline)", "verify format 1": "verify(), a format-1 chain"}
    names["verify format 2"] = "verify(), a format-2 chain"
    for name, (rate, cpu) in medians.items():
        print(f"  {names[name]:<44}{rate:>12,.0f}{rate / baseline:>12.2f}x{cpu:>13.1f}")
    print(f"  RSS grew at most {max(growths):.1f} MiB during a walk")
    print(f"  {report}")


VERIFY_GOAL = 50_000
"""Entries per second ``verify()`` should walk at least."""


@dataclass(frozen=True)
class VerifyRun:
    """One ``verify()`` of a freshly written chain (format 2)."""

    entries: int
    write_seconds: float
    """Writing the chain straight through the backend."""
    rate: float
    """Entries verified per second."""
    rss_growth_mib: float
    """How much the resident memory grew during the walk (sampled every 0.2 s)."""


async def measure_verify(url: str, rows: int) -> VerifyRun:
    """Write a format-2 chain of ``rows`` record entries into an empty store at ``url``, then verify it once."""
    async with MessageAuditTrail(url) as trail:
        built = await write_chain(trail, rows, chain.HASH_VERSION)
        rate, _, growth, _ = await verify_rate(trail, rows)
    return VerifyRun(rows, built, rate, growth)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--verify-rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="PostgreSQL server URL to also benchmark (creates throwaway databases)")
    parser.add_argument("--postgres-verify-rows", type=int, default=0, help="chain length for PostgreSQL verify")
    parser.add_argument("--skip-writes", action="store_true", help="leave out the writer throughput tables")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as folder:
        stores = Stores(Path(folder), args.postgres)
        key_file = Path(folder) / "master.key"
        try:
            bench_hashing(args.messages, args.runs)
            if not args.skip_writes:
                for kind in ["sqlite", "postgres"] if args.postgres else ["sqlite"]:
                    await bench_writes(stores, kind, args.messages, args.runs, key_file)
            if args.verify_rows:
                await bench_verify(stores, "sqlite", args.verify_rows, args.runs)
            if args.postgres and args.postgres_verify_rows:
                await bench_verify(stores, "postgres", args.postgres_verify_rows, args.runs)
        finally:
            await stores.drop_all()


if __name__ == "__main__":
    asyncio.run(main())
