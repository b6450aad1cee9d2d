"""What a new user meets first: help, value errors, short ids typed back, hints that work, output that fits."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from audit_plugin.cli import COMMANDS, command_name
from audit_plugin.model.messages import short_id
from tests.cli_support import CLI, assert_one_line_error, cli_env, run_cli, seed_sample

SUBCOMMANDS = [command_name(command) for command in COMMANDS]


@pytest.mark.parametrize("subcommand", ["", *SUBCOMMANDS])
def test_help_is_plain_words_within_80_columns(subcommand: str) -> None:
    args = [subcommand, "-h"] if subcommand else ["-h"]
    result = run_cli(*args, COLUMNS="80")
    assert result.returncode == 0, result.stderr
    assert result.stdout == run_cli(*args[:-1], "--help", COLUMNS="80").stdout
    assert "<bool>" not in result.stdout and "<str>" not in result.stdout and "range>" not in result.stdout
    for line in result.stdout.splitlines():
        assert len(line) <= 80 and line == line.rstrip(), line


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and re.fullmatch(r"audit-plugin \d+\.\d+\.\d+\S*\n", result.stdout)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["query", "--status", "delivred"], ["'--status'", "'delivred' is not a status", "did you mean 'delivered'?"]),
        (["query", "--status", "LOST"], ["'LOST' is not a status", "pending, sent, delivered, failed, expired"]),
        (["query", "--type", "qeury"], ["'--type'", "did you mean 'query'?"]),
        (["retention", "--policy", "days_7"], ["'--policy'", "DAYS_30, DAYS_90, DAYS_365, FOREVER"]),
        (["stats", "--bucket", "hr"], ["'--bucket'", "did you mean 'hour'?"]),
        (["query", "--limit", "0"], ["'--limit'", "must be at least 1, not 0"]),
        (["query", "--limit", "ten"], ["'--limit'", "'ten' is not a whole number"]),
        (["tail", "--interval", "0"], ["'--interval'", "at least 0.05"]),
        (["query", "--since", "1h", "--until", "2h"], ["--since is after --until"]),
        (["stats", "--since", "1h", "--until", "2h"], ["--since is after --until"]),
        (["querry"], ["Did you mean 'query'?"]),
    ],
)
def test_bad_values_are_worded_in_option_names(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    result = run_cli(*args, database_url=f"sqlite+aiosqlite:///{tmp_path / 'none.db'}")
    assert_one_line_error(result, 2, *fragments)
    for leaked in ("Value error", "Input should", "AuditQuery.", "start_time", "end_time"):
        assert leaked not in result.stderr


def test_status_values_in_any_case(database_url: str) -> None:
    seed_sample(database_url)
    for spelled in ("failed", "FAILED", "Failed"):
        result = run_cli("query", "--status", spelled, "--json", database_url=database_url)
        assert [record["message_id"] for record in json.loads(result.stdout)] == ["cmd"]


def test_empty_json_is_an_empty_array(database_url: str) -> None:
    seed_sample(database_url)
    result = run_cli("query", "--from", "nobody", "--json", database_url=database_url)
    assert result.returncode == 1 and json.loads(result.stdout) == []
    assert result.stderr == "audit-plugin: no records match\n"
    header = run_cli("query", "--from", "nobody", "--csv", database_url=database_url)
    assert header.returncode == 1 and header.stdout.startswith("message_id,correlation_id,")


def test_short_ids_from_the_tables_can_be_typed_back(database_url: str) -> None:
    first = json.loads(run_cli("demo", "--json", database_url=database_url).stdout)
    second = json.loads(run_cli("demo", "--json", database_url=database_url).stdout)
    message_id = first["conversation"][-1]["message_id"]
    by_message = run_cli("conversation", short_id(message_id), database_url=database_url)  # as tables show it
    assert by_message.returncode == 0, by_message.stderr
    assert f"Conversation {first['correlation_id']} — 6 messages" in by_message.stdout
    by_start = run_cli("conversation", message_id[:-4], database_url=database_url)  # any unique start works too
    assert f"Conversation {first['correlation_id']} — 6 messages" in by_start.stdout
    by_conversation = run_cli("conversation", second["correlation_id"][:12], database_url=database_url)
    assert f"Conversation {second['correlation_id']} — 6 messages" in by_conversation.stdout
    ambiguous = run_cli("conversation", "demo-", database_url=database_url)
    assert_one_line_error(ambiguous, 2, "'demo-' is ambiguous", first["correlation_id"], second["correlation_id"])
    assert_one_line_error(run_cli("conversation", "zz", database_url=database_url), 1, "no conversation or message")


def test_a_prefix_is_matched_literally(database_url: str) -> None:
    seed_sample(database_url)
    assert_one_line_error(run_cli("conversation", "c%", database_url=database_url), 1, "'c%'")
    assert_one_line_error(run_cli("conversation", "_1", database_url=database_url), 1, "'_1'")


def test_each_demo_hint_runs_as_printed(database_url: str, backend_name: str, tmp_path: Path) -> None:
    spelled = database_url if backend_name == "sqlite" else database_url.replace("postgresql+asyncpg://", "postgres://")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    demo = run_cli("demo", database_url=spelled, COLUMNS="80", cwd=cwd)
    assert demo.returncode == 0, demo.stderr
    hints = demo.stdout.split("Next:\n", 1)[1].splitlines()
    assert len(hints) == 4
    for hint in hints:
        args = shlex.split(hint)
        assert args[0] == "audit-plugin" and args[-2:] == ["--database-url", spelled], hint
        ran = subprocess.run(
            [str(CLI), *args[1:], *(["--stop-after", "1", "-n", "1"] if args[1] == "tail" else [])],
            capture_output=True,
            text=True,
            timeout=120,
            env=cli_env(),
            cwd=cwd,
        )
        assert ran.returncode == 0, (hint, ran.stderr)
    assert not (cwd / "audit.db").exists()  # no hint fell back to the default database


def test_demo_hints_on_the_default_database_need_no_url(tmp_path: Path) -> None:
    demo = run_cli("demo", cwd=tmp_path)
    assert "--database-url" not in demo.stdout.split("Next:\n", 1)[1]


def test_tables_fit_80_columns_and_pipes_get_plain_lines(database_url: str) -> None:
    seed_sample(database_url)
    run_cli("demo", database_url=database_url)
    records = json.loads(run_cli("query", "--json", database_url=database_url).stdout)
    for args in (["query"], ["agent", "planner"], ["conversation", "c2"], ["demo"], ["stats"], ["tail", "-n", "5"]):
        extra = ["--stop-after", "5"] if args[0] == "tail" else []
        result = run_cli(*args, *extra, database_url=database_url, COLUMNS="80")
        assert result.returncode == 0, (args, result.stderr)
        for line in result.stdout.splitlines():
            hint = line.startswith("  audit-plugin ")  # a command to copy stays whole, however long
            assert len(line) <= 80 or hint, (args, line)
            assert line == line.rstrip(), (args, line)
            assert "\x1b[" not in line
    table = run_cli("query", database_url=database_url, COLUMNS="80").stdout
    for record in records:
        assert short_id(record["message_id"]) in table  # never wrapped, never cut
    assert "handler raised" in table  # the error, cut to fit on a narrow terminal


def test_tail_stop_after_counts_the_backlog_and_returns_without_traffic(database_url: str) -> None:
    seed_sample(database_url)
    result = run_cli("tail", "-n", "2", "--stop-after", "2", database_url=database_url, timeout=30)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    one = run_cli("tail", "-n", "5", "--stop-after", "1", "--json", database_url=database_url, timeout=30)
    assert [json.loads(line)["message_id"] for line in one.stdout.splitlines()] == ["ev"]


def test_export_to_the_terminal_shows_the_data_without_a_progress_bar(database_url: str) -> None:
    seed_sample(database_url)
    controller, terminal = pty.openpty()
    try:
        command = [str(CLI), "export", "--limit", "1", "--database-url", database_url]
        result = subprocess.run(command, stdout=terminal, stderr=terminal, env=cli_env(TERM="xterm"), timeout=60)
    finally:
        os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once everything written has been read
        while chunk := os.read(controller, 65536):
            shown += chunk
    os.close(controller)
    assert result.returncode == 0, shown
    lines = shown.decode().replace("\r\n", "\n").splitlines()
    assert json.loads(lines[0])["message_id"] == "old"  # oldest first, a whole JSON line
    assert "exporting" not in shown.decode() and "━" not in shown.decode()
    assert "exported 1 record (JSON Lines)" in lines[-1]
