"""The reference MessageBus with the AuditPlugin: statuses, retries, expiry, and what reaches the records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pluggy
import pytest

from audit_plugin import (
    AuditPlugin,
    DeliveryReceipt,
    Message,
    MessageAuditTrail,
    MessageBus,
    MessageStatus,
    MessageType,
    call_hook,
    hookimpl,
    hookspecs,
)
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError, PayloadNotSerializableError


@pytest.fixture
def bus(trail: MessageAuditTrail) -> MessageBus:
    audited = MessageBus(max_retries=2)
    audited.register(AuditPlugin(trail))
    return audited


async def test_delivered_message_is_recorded_pending_first_then_delivered(
    bus: MessageBus, trail: MessageAuditTrail
) -> None:
    seen_while_handling: list[MessageStatus] = []

    async def worker(message: Message) -> None:
        record = await trail.get_message(message.message_id)
        assert record is not None  # written before it was sent
        seen_while_handling.append(record.status)

    bus.subscribe("worker", worker)
    message = Message("planner", "worker", MessageType.COMMAND, {"do": "it"})
    receipt = await bus.send(message)

    assert receipt.status is MessageStatus.DELIVERED and receipt.retry_count == 0
    assert seen_while_handling == [MessageStatus.PENDING]
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.status is MessageStatus.DELIVERED
    assert record.delivered_at == receipt.delivered_at and record.delivered_at is not None
    assert record.delivered_at >= message.timestamp


async def test_handler_failing_once_is_retried_and_delivered(bus: MessageBus, trail: MessageAuditTrail) -> None:
    attempts = 0

    async def flaky(message: Message) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("worker warming up")

    bus.subscribe("worker", flaky)
    message = Message("planner", "worker", MessageType.QUERY)
    receipt = await bus.send(message)
    assert (receipt.status, receipt.retry_count, attempts) == (MessageStatus.DELIVERED, 1, 2)
    record = await trail.get_message(message.message_id)
    assert record is not None and (record.status, record.retry_count) == (MessageStatus.DELIVERED, 1)


async def test_handler_failing_for_good_is_failed_with_the_error(bus: MessageBus, trail: MessageAuditTrail) -> None:
    async def broken(message: Message) -> None:
        raise ValueError("cannot parse request")

    bus.subscribe("worker", broken)
    message = Message("planner", "worker", MessageType.COMMAND)
    receipt = await bus.send(message)
    assert receipt.status is MessageStatus.FAILED
    assert receipt.retry_count == 2
    assert receipt.error_message is not None
    assert "raised ValueError: cannot parse request" in receipt.error_message
    assert "after 2 retries" in receipt.error_message
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert (record.status, record.retry_count, record.error_message) == (MessageStatus.FAILED, 2, receipt.error_message)
    assert record.delivered_at is None


async def test_one_retry_is_counted_in_the_singular(trail: MessageAuditTrail) -> None:
    bus = MessageBus(max_retries=1)
    bus.register(AuditPlugin(trail))

    async def broken(message: Message) -> None:
        raise ValueError("still broken")

    bus.subscribe("worker", broken)
    receipt = await bus.send(Message("planner", "worker", MessageType.COMMAND))
    assert receipt.error_message == "handler for 'worker' raised ValueError: still broken (after 1 retry)"


async def test_message_to_nobody_fails_saying_so(bus: MessageBus, trail: MessageAuditTrail) -> None:
    message = Message("planner", "ghost", MessageType.EVENT)
    receipt = await bus.send(message)
    assert receipt.status is MessageStatus.FAILED
    assert receipt.error_message == "no subscriber for agent 'ghost'"
    record = await trail.get_message(message.message_id)
    assert record is not None and record.error_message == "no subscriber for agent 'ghost'"


async def test_expired_message_is_not_handled(bus: MessageBus, trail: MessageAuditTrail) -> None:
    handled: list[str] = []

    async def worker(message: Message) -> None:
        handled.append(message.message_id)

    bus.subscribe("worker", worker)
    stale = Message(
        "planner", "worker", MessageType.COMMAND, ttl_seconds=5, timestamp=datetime.now(UTC) - timedelta(seconds=30)
    )
    fresh = Message("planner", "worker", MessageType.COMMAND, ttl_seconds=60)
    assert (await bus.send(stale)).status is MessageStatus.EXPIRED
    assert (await bus.send(fresh)).status is MessageStatus.DELIVERED
    assert handled == [fresh.message_id]
    record = await trail.get_message(stale.message_id)
    assert record is not None
    assert record.status is MessageStatus.EXPIRED
    assert record.error_message == "ttl of 5s elapsed before delivery"


async def test_message_expiring_while_being_retried_is_expired(trail: MessageAuditTrail) -> None:
    bus = MessageBus(max_retries=5, retry_delay=0.4)  # retries at +0.4s, +1.2s (past the 1s ttl)
    bus.register(AuditPlugin(trail))
    attempts = 0

    async def always_down(message: Message) -> None:
        nonlocal attempts
        attempts += 1
        raise TimeoutError("downstream timeout")

    bus.subscribe("worker", always_down)
    message = Message("planner", "worker", MessageType.COMMAND, ttl_seconds=1)
    receipt = await bus.send(message)
    assert receipt.status is MessageStatus.EXPIRED
    assert receipt.retry_count == attempts == 2
    record = await trail.get_message(message.message_id)
    assert record is not None and (record.status, record.retry_count) == (MessageStatus.EXPIRED, 2)


async def test_conversation_with_nested_replies(bus: MessageBus, trail: MessageAuditTrail) -> None:
    async def worker(message: Message) -> None:
        reply = Message(
            "worker",
            message.from_agent,
            MessageType.RESPONSE,
            {"answer": 42},
            correlation_id=message.correlation_id,
            reply_to=message.message_id,
        )
        await bus.send(reply)

    async def planner(message: Message) -> None:
        return None

    bus.subscribe("worker", worker)
    bus.subscribe("planner", planner)
    question = Message("planner", "worker", MessageType.QUERY, {"q": "?"}, correlation_id="conv-9")
    await bus.send(question)

    history = await trail.get_conversation_history("conv-9")
    assert [(r.from_agent, r.message_type, r.status) for r in history] == [
        ("planner", MessageType.QUERY, MessageStatus.DELIVERED),
        ("worker", MessageType.RESPONSE, MessageStatus.DELIVERED),
    ]
    assert history[1].reply_to == question.message_id


async def test_message_that_cannot_be_recorded_is_not_sent(bus: MessageBus, trail: MessageAuditTrail) -> None:
    handled: list[Message] = []

    async def worker(message: Message) -> None:
        handled.append(message)

    bus.subscribe("worker", worker)
    with pytest.raises(PayloadNotSerializableError, match="payload"):
        await bus.send(Message("planner", "worker", MessageType.COMMAND, {"raw": b"\x00\x01"}))
    assert handled == []
    assert await trail.query_messages() == []


async def test_buffered_mode_records_everything_after_flush(trail: MessageAuditTrail) -> None:
    bus = MessageBus()
    plugin = AuditPlugin(trail, durability="buffered")
    bus.register(plugin)

    async def worker(message: Message) -> None:
        return None

    bus.subscribe("worker", worker)
    messages = [Message("planner", "worker", MessageType.EVENT, {"i": i}) for i in range(200)]
    for message in messages:
        assert (await bus.send(message)).status is MessageStatus.DELIVERED
    await trail.flush()
    records = [r async for r in trail.stream_messages()]
    assert {r.message_id for r in records} == {m.message_id for m in messages}
    assert {r.status for r in records} == {MessageStatus.DELIVERED}


async def test_custom_bus_integration_contract(trail: MessageAuditTrail) -> None:
    """What a bus other than ours does: its own PluginManager, the hookspecs, awaiting awaitables."""
    manager = pluggy.PluginManager("audit_plugin")
    manager.add_hookspecs(hookspecs)
    manager.register(AuditPlugin(trail))
    message = Message("svc-a", "svc-b", MessageType.NOTIFICATION, {"n": 1})

    results = manager.hook.audit_pre_send(message=message)
    for result in results:
        await result
    assert (await trail.get_message(message.message_id)).status is MessageStatus.PENDING  # type: ignore[union-attr]

    receipt = DeliveryReceipt(message.message_id, MessageStatus.DELIVERED, delivered_at=datetime.now(UTC))
    await call_hook(manager.hook.audit_post_delivery, message=message, receipt=receipt)
    assert (await trail.get_message(message.message_id)).status is MessageStatus.DELIVERED  # type: ignore[union-attr]


async def test_other_plugins_see_the_hooks_too(bus: MessageBus) -> None:
    outcomes: list[tuple[str, MessageStatus]] = []

    class Counter:
        @hookimpl
        def audit_post_delivery(self, message: Message, receipt: DeliveryReceipt) -> None:
            outcomes.append((message.to_agent, receipt.status))

    bus.register(Counter())
    await bus.send(Message("a", "nobody", MessageType.EVENT))
    assert outcomes == [("nobody", MessageStatus.FAILED)]


def test_bus_arguments_are_checked() -> None:
    with pytest.raises(InvalidFieldError, match="max_retries"):
        MessageBus(max_retries=-1)
    with pytest.raises(InvalidFieldError, match="retry_delay"):
        MessageBus(retry_delay=-0.5)
    bus = MessageBus()

    async def handler(message: Message) -> None:
        return None

    bus.subscribe("a", handler)
    with pytest.raises(InvalidFieldError, match="already has a handler"):
        bus.subscribe("a", handler)
    with pytest.raises(FieldTypeError, match="handler"):
        bus.subscribe("b", "not callable")  # type: ignore[arg-type]


async def test_send_rejects_non_messages() -> None:
    with pytest.raises(FieldTypeError, match="message"):
        await MessageBus().send({"to_agent": "x"})  # type: ignore[arg-type]


def test_plugin_rejects_what_is_not_a_trail() -> None:
    with pytest.raises(FieldTypeError) as wrong:
        AuditPlugin("sqlite:///audit.db")  # type: ignore[arg-type]
    assert wrong.value.field == "trail"


async def test_plugin_rejects_unknown_durability(trail: MessageAuditTrail) -> None:
    with pytest.raises(InvalidFieldError, match="durability"):
        AuditPlugin(trail, durability="eventually")  # type: ignore[arg-type]


@pytest.mark.parametrize("durability", ["commit", "buffered"])
async def test_unrecordable_message_is_refused_even_when_the_queue_is_full(database_url: str, durability: str) -> None:
    """The back-pressure path validates too: a full queue must not let an unrecordable message through."""
    async with MessageAuditTrail(database_url, max_queue=1, overflow="block") as trail:
        bus = MessageBus()
        bus.register(AuditPlugin(trail, durability=durability, commit_timeout=5))  # type: ignore[arg-type]
        handled: list[Message] = []

        async def worker(message: Message) -> None:
            handled.append(message)

        bus.subscribe("worker", worker)
        trail.writer.submit(row=None, update=None)  # a flush barrier fills the one slot: the next send must wait
        with pytest.raises(PayloadNotSerializableError, match="payload"):
            await bus.send(Message("planner", "worker", MessageType.COMMAND, {"bad": {1, 2}}))
        assert handled == []
        await trail.flush()
        assert await trail.query_messages() == []
