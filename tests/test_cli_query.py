"""``audit-plugin query``, ``conversation`` and ``agent`` as subprocesses on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

from tests.cli_support import BASE, TRACE_ID, assert_one_line_error, run_cli, seed_sample


def ids(result_stdout: str) -> list[str]:
    return [row["message_id"] for row in json.loads(result_stdout)]


def test_query_combines_every_filter(database_url: str) -> None:
    seed_sample(database_url)

    def query(*args: str) -> list[str]:
        result = run_cli("query", "--json", *args, database_url=database_url)
        assert result.returncode == 0, result.stderr
        return ids(result.stdout)

    assert query() == ["p", "cmd", "r1", "q1", "ev", "old"]  # newest first
    assert query("--from", "alice") == ["cmd", "q1", "old"]
    assert query("--from", "alice", "--to", "bob") == ["q1", "old"]
    assert query("--type", "response") == ["r1"]
    assert query("--status", "FAILED") == ["cmd"]
    assert query("--correlation", "c2") == ["cmd", "ev"]
    assert query("--trace", TRACE_ID.upper()) == ["p"]
    assert query("--since", "3d") == ["p", "cmd", "r1", "q1", "ev"]
    assert query("--since", "3d", "--until", (BASE - timedelta(hours=1)).isoformat()) == ["ev"]
    assert query("--since", BASE.strftime("%Y-%m-%dT%H:%M:%S"), "--until", "now", "--from", "alice") == ["cmd", "q1"]
    assert query("--limit", "2") == ["p", "cmd"]
    assert query("--limit", "2", "--offset", "2") == ["r1", "q1"]


def test_query_table_and_csv(database_url: str) -> None:
    seed_sample(database_url)
    table = run_cli("query", "--status", "failed", database_url=database_url)
    assert table.returncode == 0, table.stderr
    assert "Audit records 1-1 of 1" in table.stdout
    for cell in ("COMMAND", "alice → carol", "FAILED", "2 retries", "c2", "handler raised RuntimeError: boom"):
        assert cell in table.stdout

    result = run_cli("query", "--csv", "--correlation", "c1", database_url=database_url)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["message_id"] for row in rows] == ["r1", "q1"]
    assert rows[0]["reply_to"] == "q1" and rows[0]["delivery_seconds"] == "0.02"
    assert json.loads(rows[0]["payload"]) == {"a": 1}


def test_query_errors_are_one_line(database_url: str, tmp_path: Path) -> None:
    seed_sample(database_url)
    assert_one_line_error(run_cli("query", "--from", "nobody", database_url=database_url), 1, "no records match")
    assert_one_line_error(run_cli("query", "--status", "LOST", database_url=database_url), 2, "--status", "LOST")
    assert_one_line_error(run_cli("query", "--since", "yesterday", database_url=database_url), 2, "--since")
    assert_one_line_error(run_cli("query", "--limit", "0", database_url=database_url), 2, "--limit")
    assert_one_line_error(run_cli("query", "--trace", "xyz", database_url=database_url), 2, "'--trace'")
    assert_one_line_error(run_cli("query", "--json", "--csv", database_url=database_url), 2, "--json and --csv")
    assert_one_line_error(run_cli("query", "--nope", database_url=database_url), 2, "--nope")
    assert_one_line_error(
        run_cli("query", "--since", "1h", "--until", "2h", database_url=database_url), 2, "--since is after --until"
    )


def test_database_errors_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    assert_one_line_error(run_cli("query", database_url=f"sqlite+aiosqlite:///{missing}"), 3, str(missing))
    assert not missing.exists()  # reading never creates an empty database
    assert_one_line_error(run_cli("stats", database_url="oracle://scott@db/x"), 2, "oracle")
    assert_one_line_error(run_cli("agent", "x", database_url="postgresql:/one-slash"), 2, "database_url")
    assert_one_line_error(
        run_cli("query", database_url="postgresql+asyncpg://postgres@127.0.0.1:1/audit"), 3, "127.0.0.1"
    )
    env_url = run_cli("query", AUDIT_DATABASE_URL=f"sqlite+aiosqlite:///{missing}")
    assert_one_line_error(env_url, 3, str(missing))


def test_missing_postgres_database_is_one_line(postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/audit_cli_no_such_database"
    assert_one_line_error(run_cli("stats", database_url=url), 3, "audit_cli_no_such_database")


def test_conversation_tree_from_reply_links(database_url: str) -> None:
    seed_sample(database_url)
    tree = run_cli("conversation", "c1", database_url=database_url)
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert lines[0] == "Conversation c1 — 2 messages"
    query_line = next(i for i, line in enumerate(lines) if "QUERY alice → bob  DELIVERED  10.0 ms" in line)
    response_line = next(i for i, line in enumerate(lines) if "RESPONSE bob → alice  DELIVERED  20.0 ms" in line)
    assert response_line > query_line
    assert lines[response_line].index("RESPONSE") > lines[query_line].index("QUERY")  # indented under it

    flat = run_cli("conversation", "r1", "--json", database_url=database_url)  # any message id finds its thread
    assert flat.returncode == 0, flat.stderr
    assert [(row["depth"], row["message_id"]) for row in json.loads(flat.stdout)] == [(0, "q1"), (1, "r1")]


def test_conversation_without_links_is_chronological(database_url: str) -> None:
    seed_sample(database_url)
    result = run_cli("conversation", "c2", "--csv", database_url=database_url)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(row["depth"], row["message_id"], row["status"]) for row in rows] == [
        ("0", "ev", "EXPIRED"),
        ("0", "cmd", "FAILED"),
    ]
    table = run_cli("conversation", "c2", database_url=database_url).stdout
    assert table.index("EVENT carol → alice  EXPIRED") < table.index("COMMAND alice → carol  FAILED")
    assert "handler raised RuntimeError: boom" in table
    assert_one_line_error(run_cli("conversation", "nope", database_url=database_url), 1, "'nope'")


def test_agent_traffic_and_numbers(database_url: str) -> None:
    seed_sample(database_url)
    result = run_cli("agent", "alice", "--json", database_url=database_url)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [row["message_id"] for row in document["recent"]] == ["cmd", "r1", "q1", "ev"]  # 'old' is 100 days back
    assert document["sent"]["by_status"] == {"DELIVERED": 1, "FAILED": 1}
    assert document["received"]["by_status"] == {"DELIVERED": 1, "EXPIRED": 1}
    assert document["sent"]["mean_delivery_seconds"] == 0.01
    assert {peer["agent"] for peer in document["sent"]["top_peers"]} == {"bob", "carol"}

    table = run_cli("agent", "alice", "--days", "200", "--limit", "2", database_url=database_url)
    assert table.returncode == 0, table.stderr
    assert "alice: last 200 days" in table.stdout and "Latest 2 messages" in table.stdout
    cells = {
        cells[1]: cells[2:4]
        for line in table.stdout.splitlines()
        if len(cells := [cell.strip() for cell in line.split("│")]) == 5
    }
    assert cells["messages"] == ["3", "2"]  # sent (with 'old'), received
    assert cells["FAILED"] == ["1", "0"] and cells["EXPIRED"] == ["0", "1"]

    rows = list(csv.DictReader(io.StringIO(run_cli("agent", "bob", "--csv", database_url=database_url).stdout)))
    assert {row["message_id"] for row in rows} == {"q1", "r1", "p"}
    assert_one_line_error(run_cli("agent", "zed", database_url=database_url), 1, "'zed'")


def test_trace_links_when_a_template_is_configured(database_url: str) -> None:
    seed_sample(database_url)
    template = "http://jaeger.local:16686/trace/{trace_id}"
    result = run_cli(
        "query", "--json", "--trace", TRACE_ID, database_url=database_url, AUDIT_TRACE_URL_TEMPLATE=template
    )
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["trace_url"] == f"http://jaeger.local:16686/trace/{TRACE_ID}"
    untraced = json.loads(run_cli("query", "--json", "--correlation", "c1", database_url=database_url).stdout)
    assert {row["trace_url"] for row in untraced} == {None}

    table = run_cli("query", "--correlation", "c3", database_url=database_url, AUDIT_TRACE_URL_TEMPLATE=template)
    assert "trace" in table.stdout and f"{TRACE_ID[:8]}…" in table.stdout
    tree = run_cli("conversation", "c3", database_url=database_url, AUDIT_TRACE_URL_TEMPLATE=template)
    assert f"trace http://jaeger.local:16686/trace/{TRACE_ID}" in tree.stdout


def test_usage_errors_without_a_subcommand_or_argument() -> None:
    assert_one_line_error(run_cli("conversation"), 2, "Missing argument 'ID'")
    assert_one_line_error(run_cli("frobnicate"), 2, "frobnicate")
    bare = run_cli()
    assert bare.returncode == 2 and "Usage: audit-plugin" in bare.stdout and bare.stderr == ""


def test_correlation_filters_take_what_conversation_takes(database_url: str) -> None:
    first = json.loads(run_cli("demo", "--json", database_url=database_url).stdout)
    second = json.loads(run_cli("demo", "--json", database_url=database_url).stdout)
    conversation = first["correlation_id"]
    last_message = first["conversation"][-1]["message_id"]

    def correlations(*args: str) -> set[str]:
        result = run_cli(*args, "--json", database_url=database_url)
        assert result.returncode == 0, result.stderr
        lines = result.stdout if args[0] != "export" else "[" + ",".join(result.stdout.splitlines()) + "]"
        return {row["correlation_id"] for row in json.loads(lines)}

    for typed in (conversation, conversation[:10], last_message, last_message[-8:]):
        assert correlations("query", "--correlation", typed) == {conversation}, typed
        assert correlations("export", "--correlation", typed) == {conversation}, typed
    ambiguous = run_cli("query", "--correlation", "demo-", database_url=database_url)
    assert_one_line_error(ambiguous, 2, "--correlation 'demo-' is ambiguous", conversation, second["correlation_id"])
    unknown = run_cli("query", "--correlation", "no-such-conversation", database_url=database_url)
    assert_one_line_error(unknown, 1, "no records match")
