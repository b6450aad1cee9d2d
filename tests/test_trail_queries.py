"""Reading records: every filter, combined filters, pagination, conversations, agents, statistics, retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus, MessageType, RetentionPolicy
from tests.helpers import BASE_TIME, make_message


async def _seed(trail: MessageAuditTrail) -> dict[str, str]:
    """A small fixed traffic pattern; returns name -> message_id."""
    plan = [
        ("q1", "planner", "worker-a", MessageType.QUERY, 0, "conv-1", MessageStatus.DELIVERED),
        ("q2", "planner", "worker-b", MessageType.QUERY, 1, "conv-1", MessageStatus.DELIVERED),
        ("r1", "worker-a", "planner", MessageType.RESPONSE, 2, "conv-1", MessageStatus.DELIVERED),
        ("r2", "worker-b", "planner", MessageType.RESPONSE, 3, "conv-1", MessageStatus.FAILED),
        ("c1", "planner", "worker-a", MessageType.COMMAND, 60, "conv-2", MessageStatus.EXPIRED),
        ("e1", "monitor", "planner", MessageType.EVENT, 120, None, MessageStatus.PENDING),
    ]
    ids: dict[str, str] = {}
    for name, sender, receiver, kind, seconds, conv, status in plan:
        message = make_message(sender, receiver, kind, seconds=seconds, correlation_id=conv)
        ids[name] = await trail.log_message(message)
        if status is not MessageStatus.PENDING:
            delivered = message.timestamp + timedelta(seconds=0.5) if status is MessageStatus.DELIVERED else None
            await trail.update_message_status(message.message_id, status, delivered_at=delivered)
    return ids


def _names(records: list, ids: dict[str, str]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[r.message_id] for r in records]


async def test_each_filter_alone(trail: MessageAuditTrail) -> None:
    ids = await _seed(trail)

    async def names(**filters: object) -> list[str]:
        return _names(await trail.query_messages(AuditQuery(**filters)), ids)  # type: ignore[arg-type]

    # Newest first.
    assert await names() == ["e1", "c1", "r2", "r1", "q2", "q1"]
    assert await names(from_agent="planner") == ["c1", "q2", "q1"]
    assert await names(to_agent="planner") == ["e1", "r2", "r1"]
    assert await names(message_type=MessageType.RESPONSE) == ["r2", "r1"]
    assert await names(message_type="query") == ["q2", "q1"]
    assert await names(status=MessageStatus.FAILED) == ["r2"]
    assert await names(status="EXPIRED") == ["c1"]
    assert await names(correlation_id="conv-2") == ["c1"]
    assert await names(start_time=BASE_TIME + timedelta(seconds=60)) == ["e1", "c1"]
    assert await names(end_time=BASE_TIME + timedelta(seconds=2)) == ["r1", "q2", "q1"]


async def test_time_bounds_are_inclusive(trail: MessageAuditTrail) -> None:
    ids = await _seed(trail)
    exact = AuditQuery(start_time=BASE_TIME + timedelta(seconds=1), end_time=BASE_TIME + timedelta(seconds=3))
    assert _names(await trail.query_messages(exact), ids) == ["r2", "r1", "q2"]


async def test_filters_combine_with_and(trail: MessageAuditTrail) -> None:
    ids = await _seed(trail)
    query = AuditQuery(
        from_agent="planner",
        to_agent="worker-a",
        message_type=MessageType.QUERY,
        status=MessageStatus.DELIVERED,
        correlation_id="conv-1",
        start_time=BASE_TIME,
        end_time=BASE_TIME + timedelta(hours=1),
    )
    assert _names(await trail.query_messages(query), ids) == ["q1"]
    assert await trail.query_messages(AuditQuery(from_agent="planner", status=MessageStatus.FAILED)) == []


async def test_pagination_is_stable_with_equal_timestamps(trail: MessageAuditTrail) -> None:
    same_time = [make_message(at=BASE_TIME) for _ in range(25)]
    await asyncio.gather(*(trail.log_message(m) for m in same_time))
    pages = [await trail.query_messages(AuditQuery(limit=7, offset=offset)) for offset in range(0, 28, 7)]
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    seen = [r.message_id for page in pages for r in page]
    assert len(seen) == len(set(seen)) == 25
    assert seen == sorted(seen, reverse=True)  # equal timestamps: message_id breaks the tie
    again = [r.message_id for r in await trail.query_messages(AuditQuery(limit=7, offset=7))]
    assert again == [r.message_id for r in pages[1]]


@pytest.mark.parametrize(
    "hostile",
    ["' OR '1'='1", "planner'; DROP TABLE message_audit_log; --", "%", "_", "planner%", "\\", "ü'\"`$1 :p"],
)
async def test_hostile_filter_values_are_data_not_sql(trail: MessageAuditTrail, hostile: str) -> None:
    ids = await _seed(trail)
    for field in ("from_agent", "to_agent", "correlation_id"):
        assert await trail.query_messages(AuditQuery(**{field: hostile})) == []
    # The table is intact and a message from such an agent is stored and found exactly.
    assert len(await trail.query_messages()) == len(ids)
    odd = make_message(hostile, "worker-a")
    await trail.log_message(odd)
    [found] = await trail.query_messages(AuditQuery(from_agent=hostile))
    assert found.message_id == odd.message_id


async def test_query_by_trace_id(trail: MessageAuditTrail) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    first, second, other = (make_message(seconds=i) for i in range(3))
    await trail.log_message(second, trace_id=trace, span_id="00f067aa0ba902b7")
    await trail.log_message(first, trace_id=trace.upper(), span_id="00f067aa0ba902b8")
    await trail.log_message(other, trace_id="0" * 31 + "1", span_id="1" * 16)
    found = await trail.query_messages(AuditQuery(trace_id=trace))
    assert {r.message_id for r in found} == {first.message_id, second.message_id}
    assert [r.message_id for r in await trail.get_trace(trace)] == [first.message_id, second.message_id]
    assert found[0].trace_id == trace and found[0].span_id in ("00f067aa0ba902b7", "00f067aa0ba902b8")


async def test_conversation_history_is_chronological(trail: MessageAuditTrail) -> None:
    ids = await _seed(trail)
    history = await trail.get_conversation_history("conv-1")
    assert _names(history, ids) == ["q1", "q2", "r1", "r2"]
    assert await trail.get_conversation_history("no-such-conversation") == []


async def test_agent_history_has_sent_and_received_within_days(trail: MessageAuditTrail) -> None:
    now = datetime.now(UTC)
    sent = make_message("agent-x", "other", at=now - timedelta(hours=1))
    received = make_message("other", "agent-x", at=now - timedelta(days=2))
    old = make_message("agent-x", "other", at=now - timedelta(days=10))
    unrelated = make_message("a", "b", at=now)
    for message in (sent, received, old, unrelated):
        await trail.log_message(message)

    recent = await trail.get_agent_communication_history("agent-x")
    assert [r.message_id for r in recent] == [sent.message_id, received.message_id]
    wider = await trail.get_agent_communication_history("agent-x", days=30)
    assert [r.message_id for r in wider] == [sent.message_id, received.message_id, old.message_id]
    assert [r.message_id for r in await trail.get_agent_communication_history("agent-x", days=1)] == [sent.message_id]
    assert len(await trail.get_agent_communication_history("agent-x", days=30, limit=1)) == 1


async def test_agent_history_pages_interleave_sent_and_received_and_count_a_message_to_itself_once(
    trail: MessageAuditTrail,
) -> None:
    now = datetime.now(UTC)
    messages = [
        make_message(*(("agent-x", "other") if n % 3 else ("other", "agent-x")), at=now - timedelta(minutes=n))
        for n in range(12)
    ]
    to_itself = make_message("agent-x", "agent-x", at=now - timedelta(seconds=30))
    for message in (*messages, to_itself):
        await trail.log_message(message)
    newest_first = [messages[0].message_id, to_itself.message_id, *(m.message_id for m in messages[1:])]

    assert [r.message_id for r in await trail.get_agent_communication_history("agent-x")] == newest_first
    for limit in (1, 2, 5, 13, 50):
        page = await trail.get_agent_communication_history("agent-x", limit=limit)
        assert [r.message_id for r in page] == newest_first[:limit]


async def test_statistics(trail: MessageAuditTrail) -> None:
    await _seed(trail)
    stats = await trail.get_statistics()
    assert stats.total_messages == 6
    assert stats.messages_by_status == {"DELIVERED": 3, "FAILED": 1, "EXPIRED": 1, "PENDING": 1}
    assert stats.messages_by_type == {"QUERY": 2, "RESPONSE": 2, "COMMAND": 1, "EVENT": 1}
    assert stats.top_senders == [("planner", 3), ("monitor", 1), ("worker-a", 1), ("worker-b", 1)]
    assert stats.top_receivers == [("planner", 3), ("worker-a", 2), ("worker-b", 1)]
    assert stats.avg_delivery_time == pytest.approx(0.5, abs=1e-3)
    assert stats.error_rate == pytest.approx(100 / 6)


async def test_statistics_over_a_window_and_on_an_empty_store(trail: MessageAuditTrail) -> None:
    empty = await trail.get_statistics()
    assert (empty.total_messages, empty.avg_delivery_time, empty.error_rate) == (0, 0.0, 0.0)
    assert empty.messages_by_status == {} and empty.top_senders == []

    await _seed(trail)
    window = await trail.get_statistics(BASE_TIME + timedelta(seconds=2), BASE_TIME + timedelta(seconds=60))
    assert window.total_messages == 3  # r1, r2, c1
    assert window.messages_by_status == {"DELIVERED": 1, "FAILED": 1, "EXPIRED": 1}
    assert window.error_rate == pytest.approx(100 / 3)


@pytest.mark.parametrize(
    ("policy", "expected_deleted"),
    [
        (RetentionPolicy.DAYS_30, 3),
        (RetentionPolicy.DAYS_90, 2),
        (RetentionPolicy.DAYS_365, 1),
        (RetentionPolicy.FOREVER, 0),
    ],
)
async def test_retention_policies(database_url: str, policy: RetentionPolicy, expected_deleted: int) -> None:
    now = datetime.now(UTC)
    ages = [1, 40, 100, 400]  # days
    async with MessageAuditTrail(database_url, retention_policy=policy) as trail:
        for age in ages:
            await trail.log_message(make_message(at=now - timedelta(days=age)))
        assert await trail.apply_retention_policy() == expected_deleted
        remaining = await trail.query_messages()
        assert len(remaining) == len(ages) - expected_deleted
        assert await trail.apply_retention_policy() == 0


async def test_default_retention_is_90_days(tmp_path: Path) -> None:
    trail = MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    assert trail.retention_policy is RetentionPolicy.DAYS_90
    await trail.close()
