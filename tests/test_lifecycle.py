"""The append-only lifecycle: one event per insert, status change and retry, in the writer's transaction."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageStatus, MessageType
from audit_plugin.model.records import StatusUpdate
from audit_plugin.storage.integrity_schema import events
from tests.helpers import BASE_TIME, make_message


async def event_rows(trail: MessageAuditTrail) -> list[tuple]:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        return [tuple(row) for row in await conn.execute(select(events).order_by(events.c.sequence))]


async def test_history_lists_every_step_with_time_spent(trail: MessageAuditTrail) -> None:
    message = make_message(at=BASE_TIME)
    await trail.log_message(message)
    sent = StatusUpdate.build(message.message_id, "SENT")
    await (await trail.enqueue_status(sent))
    delivered_at = sent.at + timedelta(seconds=2)
    await trail.update_message_status(message.message_id, MessageStatus.DELIVERED, delivered_at=delivered_at)

    history = await trail.get_message_history(message.message_id)
    assert [(step.kind, step.status) for step in history] == [
        ("record", MessageStatus.PENDING),
        ("status", MessageStatus.SENT),
        ("status", MessageStatus.DELIVERED),
    ]
    assert [step.sequence for step in history] == [1, 2, 3]
    assert history[0].at == BASE_TIME
    assert history[0].seconds == (sent.at - BASE_TIME).total_seconds()
    assert history[1].seconds == (history[2].at - sent.at).total_seconds()
    assert history[2].seconds is None and history[2].delivered_at == delivered_at
    assert await trail.get_message_history("unknown") == []


async def test_bus_retries_appear_as_events(trail: MessageAuditTrail) -> None:
    bus = MessageBus(max_retries=3)
    bus.register(AuditPlugin(trail))
    attempts = 0

    async def flaky(message: Message) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionResetError(f"attempt {attempts} failed")

    bus.subscribe("worker", flaky)
    receipt = await bus.send(Message("planner", "worker", MessageType.COMMAND, {"do": "it"}))
    assert receipt.status is MessageStatus.DELIVERED and receipt.retry_count == 2
    history = await trail.get_message_history(receipt.message_id)
    assert [(s.status, s.retry_count, s.error) for s in history] == [
        (MessageStatus.PENDING, 0, None),
        (MessageStatus.PENDING, 1, "ConnectionResetError: attempt 1 failed"),
        (MessageStatus.PENDING, 2, "ConnectionResetError: attempt 2 failed"),
        (MessageStatus.DELIVERED, 2, None),
    ]
    assert all(step.seconds is not None and step.seconds >= 0 for step in history[:-1])
    assert (await trail.verify()).ok


async def test_events_are_appended_never_updated(trail: MessageAuditTrail) -> None:
    first, second = make_message(), make_message()
    await trail.log_message(first)
    await trail.log_message(second)
    before = await event_rows(trail)
    await trail.update_message_status(first.message_id, MessageStatus.FAILED, error_message="boom", retry_count=1)
    await trail.update_message_status(first.message_id, MessageStatus.FAILED)
    after = await event_rows(trail)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 2
    record = await trail.get_message(first.message_id)
    assert record is not None and (record.status, record.error_message, record.retry_count) == ("FAILED", "boom", 1)


async def test_only_real_changes_become_events(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    await trail.log_message(message)  # idempotent: no second record entry
    assert await trail.update_message_status("no-such-message", MessageStatus.SENT) is False
    rows = await event_rows(trail)
    assert len(rows) == 1
    assert (await trail.verify()).entries == 1


async def test_a_batch_writes_records_and_events_together(trail: MessageAuditTrail) -> None:
    messages = [make_message(seconds=i) for i in range(50)]
    futures = [await trail.enqueue_message(m) for m in messages]
    futures += [await trail.enqueue_status(StatusUpdate.build(m.message_id, "DELIVERED")) for m in messages[::2]]
    for future in futures:
        await future
    assert len(await event_rows(trail)) == 75
    assert trail.writer_stats.batches < 75  # group commit still batches
    report = await trail.verify()
    assert report.ok and report.entries == 75 and report.last_sequence == 75
