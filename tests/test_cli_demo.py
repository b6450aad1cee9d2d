"""``audit-plugin demo``, and the scenario module it runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from audit_plugin import MessageAuditTrail, MessageStatus
from audit_plugin.cli.demo_scenario import MAX_RETRIES, run_demo
from tests.cli_support import assert_one_line_error, run_cli


async def test_scenario_records_every_lifecycle(trail: MessageAuditTrail) -> None:
    demo_run = await run_demo(trail)
    records = await trail.get_conversation_history(demo_run.correlation_id)
    by_id = {record.message_id: record for record in records}
    assert len(records) == len(demo_run.receipts) == 6
    assert Counter(record.status for record in records) == {
        MessageStatus.DELIVERED: 4,
        MessageStatus.EXPIRED: 1,
        MessageStatus.FAILED: 1,
    }
    for message_id, receipt in demo_run.receipts.items():
        assert by_id[message_id].status is receipt.status
        assert by_id[message_id].retry_count == receipt.retry_count
    retried = [r for r in records if r.status is MessageStatus.DELIVERED and r.retry_count == 1]
    assert [(r.from_agent, r.to_agent) for r in retried] == [("planner", "worker-b")]
    [failed] = [r for r in records if r.status is MessageStatus.FAILED]
    assert failed.retry_count == MAX_RETRIES and "PermissionError" in (failed.error_message or "")
    [expired] = [r for r in records if r.status is MessageStatus.EXPIRED]
    assert expired.delivered_at is None and "ttl" in (expired.error_message or "")
    responses = [r for r in records if r.message_type.value == "RESPONSE"]
    assert {by_id[r.reply_to].to_agent for r in responses if r.reply_to} == {"worker-a", "worker-b"}
    assert failed.reply_to in by_id  # the failing command follows up worker-b's answer


def test_demo_prints_thread_and_statistics_twice_on_one_database(database_url: str) -> None:
    first = run_cli("demo", database_url=database_url)
    assert first.returncode == 0, first.stderr
    assert "Conversation demo-" in first.stdout
    for expected in ("QUERY planner → worker-a", "RESPONSE worker-b → planner", "EXPIRED", "FAILED", "1 retry"):
        assert expected in first.stdout
    assert "p95 delivery latency" in first.stdout and "By status" in first.stdout

    second = run_cli("demo", "--json", database_url=database_url)
    assert second.returncode == 0, second.stderr
    document = json.loads(second.stdout)
    assert document["correlation_id"] not in first.stdout  # a new conversation each run
    conversation = document["conversation"]
    assert len(conversation) == 6
    assert {row["correlation_id"] for row in conversation} == {document["correlation_id"]}
    assert [row["depth"] for row in conversation] == [0, 0, 1, 0, 1, 2]
    assert document["statistics"]["total_messages"] == 12
    assert document["statistics"]["messages_by_status"] == {"DELIVERED": 8, "EXPIRED": 2, "FAILED": 2}


def test_demo_csv_is_the_thread(tmp_path: Path) -> None:
    result = run_cli("demo", "--csv", database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.startswith("depth,message_id,correlation_id,reply_to,from_agent")
    assert len(rows) == 6


def test_demo_defaults_to_audit_db_in_the_current_directory(tmp_path: Path) -> None:
    result = run_cli("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "audit.db").exists()


def test_demo_reports_a_bad_url_in_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("demo", database_url="mysql+aiomysql://x@y/z"), 2, "mysql", "no audit backend")
    assert_one_line_error(run_cli("demo", database_url="postgresql:/one-slash"), 2, "database_url")
