"""``audit-plugin show ID`` (alias ``message``): one record with its lifecycle, replies and trace link."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from audit_plugin import AuditRecord, Message, MessageAuditTrail, MessageStatus, MessageType, Priority
from audit_plugin.cli.conversation import node_label
from audit_plugin.model.messages import short_id
from tests.cli_support import TRACE_ID, assert_one_line_error, run_cli

REQUEST = "0190a1b2-cccc-7000-8000-0000000ab5e1"
REPLY = "0190a1b2-cccc-7000-8000-0000000c0de2"


def seed_retried_and_late(database_url: str) -> None:
    """A request retried twice, then delivered, then reported FAILED late; and its reply."""
    at = datetime.now(UTC) - timedelta(minutes=5)

    async def write() -> None:
        async with MessageAuditTrail(database_url) as trail:
            request = Message(
                "planner", "worker", MessageType.QUERY, {"ask": "stock?"}, message_id=REQUEST, correlation_id="conv-s"
            )
            request.timestamp = at
            await trail.log_message(request, trace_id=TRACE_ID)
            await trail.record_retry(REQUEST, 1, "TimeoutError: first try")
            await trail.record_retry(REQUEST, 2, "TimeoutError: second try")
            await trail.update_message_status(REQUEST, MessageStatus.DELIVERED, at + timedelta(seconds=1))
            await trail.update_message_status(REQUEST, MessageStatus.FAILED, error_message="late report from a broker")
            reply = Message(
                "worker",
                "planner",
                MessageType.RESPONSE,
                {"stock": 4},
                message_id=REPLY,
                correlation_id="conv-s",
                reply_to=REQUEST,
            )
            reply.timestamp = at + timedelta(seconds=2)
            await trail.log_message(reply)

    asyncio.run(write())


def test_show_prints_the_record_its_lifecycle_replies_and_trace_link(database_url: str) -> None:
    seed_retried_and_late(database_url)
    template = "http://jaeger:16686/trace/{trace_id}"
    result = run_cli("show", short_id(REQUEST), database_url=database_url, AUDIT_TRACE_URL_TEMPLATE=template)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        REQUEST,
        "QUERY planner → worker  DELIVERED",
        "2 retries",
        "conv-s",
        f"{short_id(REPLY)}  RESPONSE worker → planner",
        "recorded",
        "retry 1",
        "retry 2",
        "TimeoutError: second try",
        "status change",
        "late report (kept, not applied)",
        "late report from a broker",
        f"http://jaeger:16686/trace/{TRACE_ID}",
        '"ask": "stock?"',
        "5 entries in the hash chain",
    ):
        assert expected in out, (expected, out)
    assert out.index("retry 1") < out.index("retry 2") < out.index("status change") < out.index("late report")


def test_show_json_and_the_message_alias(database_url: str) -> None:
    seed_retried_and_late(database_url)
    shown = run_cli("message", REQUEST[:-3], "--json", database_url=database_url)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["record"]["message_id"] == REQUEST and document["record"]["status"] == "DELIVERED"
    steps = document["lifecycle"]
    assert [step["step"] for step in steps] == [
        "recorded",
        "retry 1",
        "retry 2",
        "status change",
        "late report (kept, not applied)",
    ]
    assert [step["sequence"] for step in steps] == sorted(step["sequence"] for step in steps)
    assert steps[-1]["kind"] == "late" and steps[-1]["status"] == "FAILED"
    assert document["replies"] == [REPLY] and document["chain_id"] == "default"


def test_show_errors_are_one_line(database_url: str) -> None:
    seed_retried_and_late(database_url)
    assert_one_line_error(run_cli("show", "nope", database_url=database_url), 1, "no message with id 'nope'")
    ambiguous = run_cli("show", "0190a1b2-cccc", database_url=database_url)
    assert_one_line_error(ambiguous, 2, "is ambiguous", REQUEST, REPLY)
    assert_one_line_error(run_cli("show", "conv-s", database_url=database_url), 1, "no message")  # a conversation
    assert_one_line_error(run_cli("show", "", database_url=database_url), 2, "id", "empty")
    assert_one_line_error(run_cli("show", REQUEST, "--csv", database_url=database_url), 2, "--csv")


def test_a_retry_error_on_a_delivered_message_is_dim_and_a_final_one_red() -> None:
    def record(status: MessageStatus) -> AuditRecord:
        return AuditRecord(
            message_id="m1",
            from_agent="a",
            to_agent="b",
            message_type=MessageType.QUERY,
            priority=Priority.NORMAL,
            status=status,
            correlation_id="c",
            reply_to=None,
            payload={},
            timestamp=datetime.now(UTC),
            delivered_at=None,
            ttl_seconds=None,
            retry_count=1,
            error_message="TimeoutError: once",
        )

    for status, style in (
        (MessageStatus.DELIVERED, "dim"),
        (MessageStatus.PENDING, "dim"),
        (MessageStatus.FAILED, "red"),
    ):
        label = node_label(record(status), lambda _: None)  # the conversation tree
        assert [str(s.style) for s in label.spans if label.plain[s.start : s.end].strip() == "TimeoutError: once"] == [
            style
        ], status
