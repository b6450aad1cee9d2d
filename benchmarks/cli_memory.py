"""Peak memory of ``audit-plugin export`` and ``audit-plugin retention`` on 100k vs 1M rows.

Both are meant to run in constant memory: export streams records through a
server-side cursor (1,000 rows per round trip) and writes each one out at
once; retention deletes in transactions of ``--chunk-size`` rows. If that
holds, peak RSS is the same for 100k and 1M rows. Each command runs as its
own process, which reports its own peak RSS (``VmHWM``) as it exits, so
nothing in this script's own memory counts. Baseline, measured in the same
run on the same database: ``audit-plugin query --limit 1`` (the interpreter,
imports and a connection, nothing streamed).

Rows are ~200-byte payloads with timestamps spread over the year before the
retention cut-off, so ``retention --policy DAYS_30`` deletes every row.

Run::

    python benchmarks/cli_memory.py                          # SQLite, and PostgreSQL if AUDIT_TEST_POSTGRES_URL is set
    python benchmarks/cli_memory.py --sizes 100000 1000000 --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from audit_plugin import Message, MessageAuditTrail, MessageType
from audit_plugin.model.records import record_row

SEED_BATCH = 10_000


@dataclass
class Run:
    seconds: float
    peak_rss_mib: float


REPORT_PEAK = """
import atexit, sys
from audit_plugin.cli import main

def report_peak():
    status = open("/proc/self/status").read()
    peak = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    sys.stderr.write(f"VmHWM_KiB={peak}\\n")

atexit.register(report_peak)
sys.argv[0] = "audit-plugin"
main()
"""
"""Runs the CLI and, at exit, reports the process's own peak RSS (``VmHWM``).

``getrusage``/``wait4`` would not do: Linux carries the peak RSS across
``exec``, so a child forked from this (large) process would start at our size.
"""


def measure(*args: str, database_url: str) -> Run:
    """Run ``audit-plugin ARGS`` with stdout to /dev/null; its wall time and peak RSS."""
    command = [sys.executable, "-c", REPORT_PEAK, *args, "--database-url", database_url]
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - start
    peaks = [line.split("=", 1)[1] for line in result.stderr.splitlines() if line.startswith("VmHWM_KiB=")]
    if result.returncode != 0 or not peaks:
        raise SystemExit(f"audit-plugin {' '.join(args)} failed: {result.stderr}")
    return Run(seconds, int(peaks[0]) / 1024)


async def seed(database_url: str, rows: int) -> None:
    """``rows`` records straight through the backend's batch insert (the writer's own path)."""
    template = record_row(Message("agent-a", "agent-b", MessageType.EVENT, {"text": "x" * 180, "n": 0}))
    oldest = datetime.now(UTC) - timedelta(days=395)
    step = timedelta(days=360) / rows
    async with MessageAuditTrail(database_url) as trail:
        for start in range(0, rows, SEED_BATCH):
            batch = [
                {
                    **template,
                    "message_id": uuid.uuid4().hex,
                    "timestamp": oldest + step * index,
                    "from_agent": f"agent-{index % 50}",
                    "payload_json": template["payload_json"].replace('"n":0', f'"n":{index}'),
                }
                for index in range(start, min(start + SEED_BATCH, rows))
            ]
            await trail.backend.write_batch(batch, [])


def remove_sqlite_files(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


class Database:
    """A fresh database per measurement: a temp SQLite file, or a PostgreSQL database created and dropped here."""

    def __init__(self, backend: str, server_url: str | None, directory: Path) -> None:
        self.backend = backend
        self.server_url = server_url
        self.directory = directory
        self.url = ""

    async def __aenter__(self) -> str:
        name = f"cli_memory_{uuid.uuid4().hex[:12]}"
        if self.backend == "sqlite":
            self.url = f"sqlite+aiosqlite:///{self.directory / (name + '.db')}"
        else:
            assert self.server_url is not None
            await self.admin(f'CREATE DATABASE "{name}"')
            self.url = make_url(self.server_url).set(database=name).render_as_string(hide_password=False)
        return self.url

    async def __aexit__(self, *exc: object) -> None:
        if self.backend == "sqlite":
            remove_sqlite_files(make_url(self.url).database or "")
            return
        await self.admin(f'DROP DATABASE IF EXISTS "{make_url(self.url).database}" WITH (FORCE)')

    async def admin(self, statement: str) -> None:
        """Run ``statement`` on the server's maintenance database (CREATE/DROP DATABASE)."""
        assert self.server_url is not None
        conn = await asyncpg.connect(make_url(self.server_url).set(drivername="postgresql").render_as_string(False))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


async def bench(backend: str, rows: int, server_url: str | None, directory: Path) -> dict[str, Run]:
    async with Database(backend, server_url, directory) as url:
        started = time.perf_counter()
        await seed(url, rows)
        print(f"  {backend} {rows:,} rows seeded in {time.perf_counter() - started:.0f}s", flush=True)
        return {
            "baseline (query --limit 1)": measure("query", "--limit", "1", database_url=url),
            "export JSON Lines": measure("export", database_url=url),
            "export CSV": measure("export", "--csv", database_url=url),
            "retention DAYS_30": measure("retention", "--policy", "DAYS_30", database_url=url),
        }


def cell(run: Run) -> str:
    return f"{run.peak_rss_mib:6.1f} MiB {run.seconds:7.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    default_backends = ["sqlite", "postgres"] if os.environ.get("AUDIT_TEST_POSTGRES_URL") else ["sqlite"]
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgres"], default=default_backends)
    options = parser.parse_args()
    server_url = os.environ.get("AUDIT_TEST_POSTGRES_URL")
    if "postgres" in options.backends and not server_url:
        raise SystemExit("set AUDIT_TEST_POSTGRES_URL=postgresql+asyncpg://user@host:port/db for PostgreSQL")

    results: dict[tuple[str, int], dict[str, Run]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for backend in options.backends:
            for rows in options.sizes:
                results[backend, rows] = asyncio.run(bench(backend, rows, server_url, Path(directory)))

    smallest, largest = min(options.sizes), max(options.sizes)
    print(f"\npeak RSS (MiB) and wall time per command; ratio = RSS at {largest:,} / RSS at {smallest:,} rows")
    print(f"{'backend':<9} {'command':<28}" + "".join(f"{f'{n:,} rows':>24}" for n in options.sizes) + f"{'ratio':>8}")
    for backend in options.backends:
        for command in results[backend, smallest]:
            cells = "".join(f"{cell(results[backend, n][command]):>24}" for n in options.sizes)
            ratio = results[backend, largest][command].peak_rss_mib / results[backend, smallest][command].peak_rss_mib
            print(f"{backend:<9} {command:<28}{cells}{ratio:8.2f}")


if __name__ == "__main__":
    main()
