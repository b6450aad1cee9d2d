"""Helpers for the CLI tests: run ``audit-plugin`` as a subprocess, seed a database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from audit_plugin import Message, MessageAuditTrail, MessageStatus

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


def seed(database_url: str, messages: Sequence[Message], outcomes: Iterable[tuple[str, Outcome]] = ()) -> None:
    """Store ``messages`` (PENDING) and then apply ``outcomes`` (message id, outcome)."""

    async def write() -> None:
        async with MessageAuditTrail(database_url) as trail:
            for message in messages:
                await trail.enqueue_message(message)
            for message_id, outcome in outcomes:
                await trail.update_message_status(
                    message_id, outcome.status, outcome.delivered_at, outcome.error_message, outcome.retry_count
                )

    asyncio.run(write())
