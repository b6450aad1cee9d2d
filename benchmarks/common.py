"""Shared pieces of the benchmarks: the workload, throwaway stores, timing helpers."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from audit_plugin import Message, MessageType
from audit_plugin.model.messages import new_message_id

POSTGRES_URL = os.environ.get("AUDIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
"""Server the PostgreSQL benchmarks create their throwaway databases on."""

PAYLOAD_TEXT = "lorem ipsum dolor sit amet " * 6  # ~160 characters: a ~200-byte JSON payload


def make_messages(count: int, new_id: Callable[[], str] = new_message_id) -> list[Message]:
    """``count`` messages like a busy agent fleet sends: 16 agents, ~200-byte payloads, ids from ``new_id``."""
    return [
        Message(
            from_agent=f"agent-{n % 16}",
            to_agent=f"agent-{(n + 1) % 16}",
            message_type=MessageType.COMMAND,
            payload={"task": "summarise", "n": n, "text": PAYLOAD_TEXT},
            correlation_id=f"conv-{n // 10}",
            message_id=new_id(),
        )
        for n in range(count)
    ]


@dataclass
class Store:
    """A throwaway database: ``url`` for the trail, ``dsn``/``path`` for the raw drivers."""

    kind: str
    url: str
    dsn: str | None = None
    path: Path | None = None


@contextlib.asynccontextmanager
async def sqlite_store() -> AsyncIterator[Store]:
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as folder:
        path = Path(folder) / "audit.db"
        yield Store("sqlite", f"sqlite+aiosqlite:///{path}", path=path)


@contextlib.asynccontextmanager
async def postgres_store() -> AsyncIterator[Store]:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        url = make_url(dsn).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        try:
            yield Store("postgresql", url, dsn=dsn)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def postgres_available() -> bool:
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def timed(run: Callable[[], Awaitable[object]]) -> float:
    """Seconds ``run()`` takes."""
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> float:
    """(max - min) / median: the run-to-run noise of one measurement, as a fraction."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-repetition ratios (each pair measured back to back)."""
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


Row = tuple[str, str, str, str]
"""One line of a results table: measurement, result, ratio, goal."""


HEADER: Row = ("measurement", "result", "ratio", "goal")


def print_table(rows: list[Row], header: Row = HEADER) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(line)


TRAIL_OPTIONS: dict[str, object] = {}
"""Extra ``MessageAuditTrail`` options for the measured trails (``run.py --no-hash-chain`` sets ``hash_chain``)."""


async def reachable_stores(*, sqlite: bool, postgres: bool) -> list[Callable[[], AbstractAsyncContextManager[Store]]]:
    """The throwaway-store makers asked for; PostgreSQL only if it answers (said on stderr if not)."""
    makers: list[Callable[[], AbstractAsyncContextManager[Store]]] = [sqlite_store] if sqlite else []
    if postgres:
        if await postgres_available():
            makers.append(postgres_store)
        else:
            print("PostgreSQL not reachable; skipping it", file=sys.stderr)
    return makers
