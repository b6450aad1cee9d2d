"""``audit-plugin export`` and ``tail`` as subprocesses on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import pty
import subprocess
from collections.abc import Callable
from pathlib import Path

from audit_plugin import Message, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.cli.output import RECORD_FIELDS
from tests.cli_support import CLI, NOW, assert_one_line_error, cli_env, run_cli, seed_sample


def test_export_json_lines_oldest_first(database_url: str) -> None:
    seed_sample(database_url)
    result = run_cli("export", database_url=database_url)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["message_id"] for record in records] == ["old", "ev", "q1", "r1", "cmd", "p"]
    assert all(list(record) == list(RECORD_FIELDS) for record in records)
    q1 = records[2]
    assert q1["timestamp"].endswith("Z") and q1["delivered_at"].endswith("Z")
    assert q1["delivery_seconds"] == 0.01 and q1["payload"] == {"q": 1} and q1["status"] == "DELIVERED"
    assert "exported 6 records (JSON Lines)" in result.stderr


def test_export_csv_to_file_with_filters(database_url: str, tmp_path: Path) -> None:
    seed_sample(database_url)
    target = tmp_path / "out.csv"
    result = run_cli(
        "export", "--csv", "--from", "alice", "--since", "3d", "-o", str(target), database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    with target.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["message_id"] for row in rows] == ["q1", "cmd"]
    assert list(rows[0]) == list(RECORD_FIELDS)
    assert rows[1]["error_message"] == "handler raised RuntimeError: boom" and rows[1]["retry_count"] == "2"

    limited = run_cli("export", "--limit", "2", database_url=database_url)
    assert [json.loads(line)["message_id"] for line in limited.stdout.splitlines()] == ["old", "ev"]
    assert_one_line_error(run_cli("export", "--status", "SENT", database_url=database_url), 1, "no records match")
    assert_one_line_error(
        run_cli("export", "-o", str(tmp_path / "no" / "such" / "dir.jsonl"), database_url=database_url),
        2,
        "cannot write",
    )


def _log(database_url: str, *messages: Message, status: tuple[str, MessageStatus] | None = None) -> None:
    async def write() -> None:
        async with MessageAuditTrail(database_url) as trail:
            for message in messages:
                await trail.log_message(message)
            if status is not None:
                await trail.update_message_status(status[0], status[1], delivered_at=NOW)

    asyncio.run(write())


def follow(database_url: str, args: list[str], backlog: int, *steps: Callable[[], None]) -> list[str]:
    """Run ``tail ARGS``; read its ``backlog`` lines, then run each step and read the one line it causes.

    Reading before the next step keeps the test independent of poll timing.
    """
    command = [str(CLI), "tail", *args, "-n", str(backlog), "--interval", "0.1", "--database-url", database_url]
    command += ["--stop-after", str(backlog + len(steps))]  # the backlog counts
    tail = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert tail.stdout is not None
        header = 1 if "--csv" in args else 0
        lines = [tail.stdout.readline() for _ in range(header + backlog)]
        for step in steps:
            step()
            lines.append(tail.stdout.readline())
        _, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
        tail.wait()
    assert tail.returncode == 0, err
    return [line.rstrip("\n") for line in lines]


def test_tail_follows_new_records_and_status_changes(database_url: str) -> None:
    seed_sample(database_url)
    _log(database_url, Message("erin", "bob", MessageType.EVENT, {}, message_id="t0"))

    def log(sender: str, message_id: str) -> Callable[[], None]:
        return lambda: _log(database_url, Message(sender, "bob", MessageType.EVENT, {}, message_id=message_id))

    def filtered_then_logged() -> None:
        log("zoe", "other")()  # filtered out: the next line is t2
        log("erin", "t2")()

    lines = follow(
        database_url,
        ["--json", "--from", "erin"],
        1,
        log("erin", "t1"),
        filtered_then_logged,
        lambda: _log(database_url, status=("t1", MessageStatus.DELIVERED)),
    )
    events = [(record["message_id"], record["status"]) for record in map(json.loads, lines)]
    assert events == [("t0", "PENDING"), ("t1", "PENDING"), ("t2", "PENDING"), ("t1", "DELIVERED")]


def test_tail_table_and_csv(database_url: str) -> None:
    seed_sample(database_url)

    def new_event(message_id: str) -> Callable[[], None]:
        return lambda: _log(database_url, Message("erin", "bob", MessageType.EVENT, {}, message_id=message_id))

    lines = follow(database_url, [], 2, new_event("t3"))
    assert len(lines) == 3
    assert "COMMAND alice → carol  FAILED" in lines[0] and "QUERY dave → bob  PENDING" in lines[1]
    assert "EVENT erin → bob  PENDING" in lines[2] and "t3" in lines[2]

    rows = list(csv.reader(follow(database_url, ["--csv"], 2, new_event("t4"))))
    assert rows[0] == list(RECORD_FIELDS)
    assert [row[0] for row in rows[1:]] == ["p", "t3", "t4"]


def run_on_terminal(*args: str, database_url: str) -> str:
    """Run ``audit-plugin ARGS`` with stderr on a pseudo-terminal; return what the terminal showed."""
    controller, terminal = pty.openpty()
    try:
        command = [str(CLI), *args, "--database-url", database_url]
        result = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=terminal, env=cli_env(TERM="xterm"), timeout=60
        )
    finally:
        os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once everything written has been read
        while chunk := os.read(controller, 65536):
            shown += chunk
    os.close(controller)
    assert result.returncode == 0, shown
    return shown.decode()


def test_progress_bars_on_a_terminal(database_url: str, tmp_path: Path) -> None:
    seed_sample(database_url)
    exported = run_on_terminal("export", "-o", str(tmp_path / "all.jsonl"), database_url=database_url)
    assert "exporting" in exported and "6/6" in exported and "exported 6 records" in exported
    deleted = run_on_terminal("retention", "--policy", "DAYS_30", "--chunk-size", "1", database_url=database_url)
    assert "deleting" in deleted and "1/1" in deleted


def test_export_into_a_pipe_closed_early_ends_quietly(database_url: str) -> None:
    seed_sample(database_url)
    command = [str(CLI), "export", "--database-url", database_url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env()) as export:
        assert export.stdout is not None and export.stderr is not None
        export.stdout.close()  # like `export | head -0`
        stderr = export.stderr.read().decode()
    assert export.returncode == 0 and stderr == ""  # the reader had what it wanted: success
