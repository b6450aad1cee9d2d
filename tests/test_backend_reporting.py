"""Reporting capabilities the CLI relies on, on every backend: counts, latency percentiles,
volume buckets, and retention in chunks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from audit_plugin import AuditQuery, Message, MessageAuditTrail, MessageStatus, MessageType, RetentionPolicy
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError

T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


async def deliver(trail: MessageAuditTrail, timestamp: datetime, latency: timedelta, **fields: object) -> Message:
    message = Message("a", "b", MessageType.EVENT, {}, timestamp=timestamp, **fields)  # type: ignore[arg-type]
    await trail.log_message(message)
    await trail.update_message_status(message.message_id, MessageStatus.DELIVERED, delivered_at=timestamp + latency)
    return message


async def test_delivery_percentiles_are_nearest_rank_and_microsecond_exact(trail: MessageAuditTrail) -> None:
    assert await trail.get_delivery_percentiles() == {50: None, 95: None, 99: None}
    for ms in range(20, 0, -1):  # 1..20 ms plus a few microseconds, logged out of order
        await deliver(trail, T0 + timedelta(seconds=ms), timedelta(milliseconds=ms, microseconds=7))
    failed = Message("a", "b", MessageType.EVENT, {}, timestamp=T0)
    await trail.log_message(failed)
    await trail.update_message_status(failed.message_id, MessageStatus.FAILED, delivered_at=T0 + timedelta(hours=1))

    result = await trail.get_delivery_percentiles(percentiles=(0, 50, 95, 99, 100))
    assert result == {0: 0.001007, 50: 0.010007, 95: 0.019007, 99: 0.020007, 100: 0.020007}
    window = await trail.get_delivery_percentiles(T0 + timedelta(seconds=11), None, (50,))
    assert window == {50: 0.015007}  # 11..20 ms: the 5th of 10
    stats = await trail.get_statistics()
    assert stats.avg_delivery_time == pytest.approx(0.010507, abs=1e-9)


async def test_percentiles_reject_bad_input(trail: MessageAuditTrail) -> None:
    with pytest.raises(InvalidFieldError, match="percentiles"):
        await trail.get_delivery_percentiles(percentiles=(50, 101))
    with pytest.raises(FieldTypeError, match="start_time"):
        await trail.get_delivery_percentiles(start_time="yesterday")  # type: ignore[arg-type]


async def test_message_volume_buckets(trail: MessageAuditTrail) -> None:
    for offset in (timedelta(0), timedelta(minutes=59, seconds=59, microseconds=999_999), timedelta(hours=1)):
        await deliver(trail, T0 + offset, timedelta(milliseconds=1))
    await deliver(trail, T0 + timedelta(days=2, minutes=30), timedelta(milliseconds=1))

    assert await trail.get_message_volume(bucket="hour") == [
        (T0, 2),
        (T0 + timedelta(hours=1), 1),
        (T0 + timedelta(days=2), 1),
    ]
    midnight = T0.replace(hour=0)
    assert await trail.get_message_volume(bucket="day") == [(midnight, 3), (midnight + timedelta(days=2), 1)]
    minutes = await trail.get_message_volume(T0 + timedelta(minutes=30), T0 + timedelta(hours=2), "minute")
    assert minutes == [(T0 + timedelta(minutes=59), 1), (T0 + timedelta(hours=1), 1)]
    with pytest.raises(InvalidFieldError, match="bucket"):
        await trail.get_message_volume(bucket="week")  # type: ignore[arg-type]


async def test_count_messages_follows_the_query_filters(trail: MessageAuditTrail) -> None:
    for index in range(5):
        await deliver(trail, T0 + timedelta(minutes=index), timedelta(seconds=1), correlation_id=f"c{index % 2}")
    assert await trail.count_messages() == 5
    assert await trail.count_messages(AuditQuery(correlation_id="c0", limit=1)) == 3  # limit does not cap a count
    assert await trail.count_messages(AuditQuery(start_time=T0 + timedelta(minutes=3))) == 2
    assert await trail.count_messages(AuditQuery(status=MessageStatus.FAILED)) == 0


async def test_retention_in_chunks(database_url: str) -> None:
    now = datetime.now(UTC)
    async with MessageAuditTrail(database_url, retention_policy=RetentionPolicy.DAYS_30) as trail:
        for index in range(25):
            await trail.log_message(
                Message("a", "b", MessageType.EVENT, {}, timestamp=now - timedelta(days=31 + index))
            )
        kept = Message("a", "b", MessageType.EVENT, {}, timestamp=now - timedelta(days=29))
        await trail.log_message(kept)

        assert await trail.count_past_retention() == 25
        assert [n async for n in trail.apply_retention_policy_in_chunks(chunk_size=10)] == [10, 10, 5]
        assert await trail.count_past_retention() == 0
        assert [record.message_id for record in await trail.query_messages()] == [kept.message_id]
        assert [n async for n in trail.apply_retention_policy_in_chunks(chunk_size=10)] == []
        with pytest.raises(InvalidFieldError, match="chunk_size"):
            [n async for n in trail.apply_retention_policy_in_chunks(chunk_size=0)]

    async with MessageAuditTrail(database_url, retention_policy=RetentionPolicy.FOREVER) as forever:
        await forever.log_message(Message("a", "b", MessageType.EVENT, {}, timestamp=now - timedelta(days=4000)))
        assert await forever.count_past_retention() == 0
        assert [n async for n in forever.apply_retention_policy_in_chunks()] == []
        assert await forever.count_messages() == 2
