"""Crash harness: a child process sending through the audited bus is SIGKILLed at a random moment.

Every send the child acknowledged (``send()`` returned) must be in the store
with its final status in ``"commit"`` mode; in ``"buffered"`` mode at most
``max_queue`` operations may be missing (a message is two operations: its
PENDING record and its final status). The writer's ``max_queue`` counts the
batch being written, so a batch as large as the queue is the worst case for
the bound and is what runs here. The hash chain must verify after every kill.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from audit_plugin import MessageAuditTrail
from audit_plugin.storage.schema import audit_log

ROOT = Path(__file__).resolve().parent.parent
MAX_QUEUE = 200
BATCH_SIZE = 200
SENDERS = 64
RUNS = 3


@dataclass
class Run:
    acknowledged: list[str]
    missing: int
    unsettled: int

    @property
    def lost_operations(self) -> int:
        """A missing message lost both its operations; a PENDING one lost its final status."""
        return 2 * self.missing + self.unsettled


def _kill_child_while_sending(database_url: str, durability: str, seconds: float) -> list[str]:
    """Start the child, let it send for ``seconds``, SIGKILL it; return the ids it acknowledged."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.crash_child",
            database_url,
            durability,
            str(MAX_QUEUE),
            str(BATCH_SIZE),
            str(SENDERS),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    lines: list[bytes] = []
    ready = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:  # only complete lines: a line cut by the kill has no newline
            if line == b"READY\n":
                ready.set()
            elif line.endswith(b"\n"):
                lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), child.stderr.read().decode() if child.poll() is not None else "child not ready"
        time.sleep(seconds)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        reader.join(10)
        child.stdout.close()
        assert child.stderr is not None
        child.stderr.close()
    return [line.decode().strip() for line in lines]


async def _check(database_url: str, acknowledged: list[str]) -> Run:
    async with MessageAuditTrail(database_url) as trail:
        stored: dict[str, str] = {}
        async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
            for start in range(0, len(acknowledged), 1000):
                chunk = acknowledged[start : start + 1000]
                rows = await conn.execute(
                    select(audit_log.c.message_id, audit_log.c.status).where(audit_log.c.message_id.in_(chunk))
                )
                stored.update({message_id: status for message_id, status in rows})
        report = await trail.verify()
        assert report.ok, report
    missing = sum(message_id not in stored for message_id in acknowledged)
    unsettled = sum(stored.get(message_id) == "PENDING" for message_id in acknowledged)
    return Run(acknowledged, missing, unsettled)


@pytest.mark.parametrize("durability", ["commit", "buffered"])
def test_sigkill_loses_nothing_acknowledged_in_commit_mode_and_at_most_max_queue_in_buffered(
    database_url: str, backend_name: str, durability: str
) -> None:
    rng = random.Random()
    runs: list[Run] = []
    for _ in range(RUNS):
        acknowledged = _kill_child_while_sending(database_url, durability, rng.uniform(0.3, 1.5))
        runs.append(asyncio.run(_check(database_url, acknowledged)))
    summary = [(len(run.acknowledged), run.missing, run.unsettled, run.lost_operations) for run in runs]
    print(f"\n{backend_name} {durability}: (acknowledged, missing, pending, lost operations) per kill: {summary}")
    assert all(run.acknowledged for run in runs), summary  # the child did send before each kill
    if durability == "commit":
        assert all(run.lost_operations == 0 for run in runs), summary
    else:
        assert all(run.lost_operations <= MAX_QUEUE for run in runs), summary
