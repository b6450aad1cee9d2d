"""Helpers for the CLI tests: run ``audit-plugin`` as a subprocess, seed a database with a known sample."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from audit_plugin import Message, MessageAuditTrail, MessageStatus, MessageType

CLI = Path(sys.executable).with_name("audit-plugin")


def cli_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AUDIT_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1"}, **extra)
    return env


def run_cli(
    *args: str, database_url: str | None = None, timeout: float = 120, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``audit-plugin ARGS [--database-url URL]`` and capture its output."""
    command = [str(CLI), *args, *(["--database-url", database_url] if database_url else [])]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=cli_env(**env), cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], exit_code: int, *fragments: str) -> None:
    """The command failed with ``exit_code`` and said why in one line on stderr, no traceback."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("audit-plugin: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@dataclass(frozen=True)
class Outcome:
    """The final status to give a seeded message."""

    status: MessageStatus
    delivered_at: datetime | None = None
    error_message: str | None = None
    retry_count: int | None = None


NOW = datetime.now(UTC).replace(microsecond=0)
BASE = NOW - timedelta(hours=1)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def sample_messages() -> tuple[list[Message], list[tuple[str, Outcome]]]:
    """A small trail with every status, two conversations, a reply link, a trace id and an old record.

    ``q1`` alice→bob QUERY (c1, delivered in 10 ms), ``r1`` bob→alice RESPONSE
    replying to it (c1, 20 ms), ``cmd`` alice→carol COMMAND (c2, FAILED after 2
    retries), ``ev`` carol→alice EVENT two days ago (c2, EXPIRED), ``old``
    alice→bob NOTIFICATION 100 days ago (DELIVERED in 30 ms), ``p`` dave→bob
    QUERY (c3, PENDING, with a trace id).
    """
    messages = [
        Message("alice", "bob", MessageType.QUERY, {"q": 1}, message_id="q1", correlation_id="c1", timestamp=BASE),
        Message(
            "bob",
            "alice",
            MessageType.RESPONSE,
            {"a": 1},
            message_id="r1",
            correlation_id="c1",
            reply_to="q1",
            timestamp=BASE + timedelta(seconds=1),
        ),
        Message(
            "alice",
            "carol",
            MessageType.COMMAND,
            {},
            message_id="cmd",
            correlation_id="c2",
            timestamp=BASE + timedelta(seconds=2),
        ),
        Message(
            "carol",
            "alice",
            MessageType.EVENT,
            {},
            message_id="ev",
            correlation_id="c2",
            timestamp=BASE - timedelta(days=2),
        ),
        Message("alice", "bob", MessageType.NOTIFICATION, {}, message_id="old", timestamp=NOW - timedelta(days=100)),
        Message(
            "dave",
            "bob",
            MessageType.QUERY,
            {},
            message_id="p",
            correlation_id="c3",
            timestamp=BASE + timedelta(seconds=3),
        ),
    ]
    by_id = {message.message_id: message for message in messages}

    def delivered(message_id: str, seconds: float) -> Outcome:
        return Outcome(MessageStatus.DELIVERED, by_id[message_id].timestamp + timedelta(seconds=seconds))

    outcomes = [
        ("q1", delivered("q1", 0.010)),
        ("r1", delivered("r1", 0.020)),
        ("cmd", Outcome(MessageStatus.FAILED, error_message="handler raised RuntimeError: boom", retry_count=2)),
        ("ev", Outcome(MessageStatus.EXPIRED, error_message="ttl of 1s elapsed before delivery")),
        ("old", delivered("old", 0.030)),
    ]
    return messages, outcomes


def seed_sample(database_url: str) -> None:
    messages, outcomes = sample_messages()
    traced = {"p": TRACE_ID}

    async def write() -> None:
        async with MessageAuditTrail(database_url) as trail:
            for message in messages:
                await trail.log_message(message, trace_id=traced.get(message.message_id))
            for message_id, outcome in outcomes:
                await trail.update_message_status(
                    message_id, outcome.status, outcome.delivered_at, outcome.error_message, outcome.retry_count
                )

    asyncio.run(write())
