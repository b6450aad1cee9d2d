"""Writing records: log, update, idempotency, time zones, durability across close/reopen."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from audit_plugin import AuditQuery, Message, MessageAuditTrail, MessageStatus, MessageType, Priority
from audit_plugin.exceptions import TrailStateError
from tests.helpers import BASE_TIME, make_message


async def test_log_message_round_trips_every_field(trail: MessageAuditTrail) -> None:
    message = Message(
        "planner",
        "worker-a",
        MessageType.COMMAND,
        {"task": "summarise", "n": 3, "nested": {"list": [1, 2.5, None, True]}, "text": "grüße 👋"},
        priority=Priority.URGENT,
        correlation_id="conv-1",
        reply_to="earlier-id",
        timestamp=BASE_TIME,
        ttl_seconds=60,
    )
    assert await trail.log_message(message) == message.message_id

    [record] = await trail.query_messages(AuditQuery())
    assert record.message_id == message.message_id
    assert (record.from_agent, record.to_agent) == ("planner", "worker-a")
    assert record.message_type is MessageType.COMMAND
    assert record.priority is Priority.URGENT
    assert record.status is MessageStatus.PENDING
    assert record.correlation_id == "conv-1"
    assert record.reply_to == "earlier-id"
    assert record.payload == message.payload
    assert record.timestamp == BASE_TIME and record.timestamp.tzinfo is not None
    assert record.timestamp.utcoffset() == timedelta(0)
    assert record.ttl_seconds == 60
    assert record.retry_count == 0
    assert record.delivered_at is None and record.error_message is None


async def test_update_message_status(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    delivered = BASE_TIME + timedelta(seconds=2)

    assert await trail.update_message_status(message.message_id, "sent", error_message="slow link", retry_count=2)
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert (record.status, record.error_message, record.retry_count) == (MessageStatus.SENT, "slow link", 2)

    # Fields left as None keep their stored value.
    assert await trail.update_message_status(message.message_id, MessageStatus.DELIVERED, delivered_at=delivered)
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.status is MessageStatus.DELIVERED
    assert record.delivered_at == delivered
    assert (record.error_message, record.retry_count) == ("slow link", 2)
    assert record.delivery_seconds == 2.0

    # A final status is final: a later outcome is acknowledged (the record exists) but not applied.
    assert await trail.update_message_status(message.message_id, "failed", error_message="boom")
    assert await trail.get_message(message.message_id) == record


async def test_update_unknown_message_returns_false(trail: MessageAuditTrail) -> None:
    assert await trail.update_message_status("no-such-id", MessageStatus.DELIVERED) is False
    assert await trail.query_messages() == []


async def test_logging_the_same_message_twice_keeps_one_row(trail: MessageAuditTrail) -> None:
    message = make_message(payload={"v": 1})
    await trail.log_message(message)
    await trail.update_message_status(message.message_id, MessageStatus.DELIVERED)
    # Again, sequentially and concurrently (the concurrent copies share one batch).
    await trail.log_message(message)
    await asyncio.gather(*(trail.log_message(message) for _ in range(20)))

    records = await trail.query_messages()
    assert len(records) == 1
    assert records[0].status is MessageStatus.DELIVERED  # the re-log did not reset the lifecycle


async def test_naive_datetimes_are_taken_as_utc(trail: MessageAuditTrail) -> None:
    naive = datetime(2026, 3, 1, 8, 30, 15, 123456)
    message = make_message(at=naive)
    await trail.log_message(message)
    await trail.update_message_status(message.message_id, MessageStatus.DELIVERED, delivered_at=naive)
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.timestamp == naive.replace(tzinfo=UTC)
    assert record.delivered_at == naive.replace(tzinfo=UTC)
    # And a naive filter value means UTC too.
    assert [r.message_id for r in await trail.query_messages(AuditQuery(start_time=naive, end_time=naive))] == [
        message.message_id
    ]


async def test_other_time_zones_are_converted_to_utc(trail: MessageAuditTrail) -> None:
    tokyo = timezone(timedelta(hours=9))
    local = datetime(2026, 3, 1, 17, 30, tzinfo=tokyo)
    message = make_message(at=local)
    await trail.log_message(message)
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.timestamp == local
    assert record.timestamp.utcoffset() == timedelta(0)
    assert record.timestamp.hour == 8


async def test_many_concurrent_writers_share_commits(trail: MessageAuditTrail) -> None:
    messages = [make_message(seconds=i) for i in range(500)]
    await asyncio.gather(*(trail.log_message(m) for m in messages))
    stats = trail.writer_stats
    assert stats.written == 500
    assert stats.batches < 500  # group commit: fewer transactions than records
    assert len(await trail.query_messages(AuditQuery(limit=1000))) == 500


async def test_close_flushes_queued_records_and_reopen_loses_nothing(database_url: str) -> None:
    messages = [make_message(seconds=i, correlation_id="keep") for i in range(300)]
    trail = MessageAuditTrail(database_url)
    await trail.initialize()
    futures = [await trail.enqueue_message(m) for m in messages]  # queued, not awaited
    await trail.update_message_status(messages[0].message_id, MessageStatus.DELIVERED, delivered_at=BASE_TIME)
    await trail.close()
    assert all(f.done() and f.result() is True for f in futures)

    async with MessageAuditTrail(database_url) as reopened:
        history = await reopened.get_conversation_history("keep")
        assert [r.message_id for r in history] == [m.message_id for m in messages]
        assert history[0].status is MessageStatus.DELIVERED


async def test_flush_waits_for_queued_writes(trail: MessageAuditTrail) -> None:
    futures = [await trail.enqueue_message(make_message(seconds=i)) for i in range(50)]
    await trail.flush()
    assert all(f.done() for f in futures)
    assert len(await trail.query_messages()) == 50


async def test_use_before_initialize_and_after_close_is_a_clear_error(database_url: str) -> None:
    trail = MessageAuditTrail(database_url)
    with pytest.raises(TrailStateError, match="initialize"):
        await trail.log_message(make_message())
    await trail.initialize()
    await trail.initialize()  # idempotent
    await trail.close()
    await trail.close()  # idempotent
    with pytest.raises(TrailStateError, match="closed"):
        await trail.query_messages()
    with pytest.raises(TrailStateError, match="closed"):
        await trail.initialize()


async def test_async_with_initialises_and_closes(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await trail.log_message(make_message())
    with pytest.raises(TrailStateError):
        await trail.flush()
