"""FastStream behaves the same with AuditMiddleware as without it (in-memory test brokers, no server).

Each behaviour here was found by running FastStream's own broker suites with
the middleware injected (``compat/faststream``): the same scenario runs on a
broker without the middleware and on one with it, and what the application
sees must be equal; then the record is checked.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from faststream import Context
from faststream.exceptions import NackMessage
from faststream.message import StreamMessage
from faststream.redis import ListSub, RedisBroker, TestRedisBroker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from audit_plugin import AuditQuery, Message, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.integrations.faststream import AuditMiddleware
from audit_plugin.integrations.faststream.fields import REPLY_INBOX, UNKNOWN_SENDER
from tests.faststream_support import KINDS, BrokerKind

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Scenario = Callable[[BrokerKind, Any, str], Awaitable[Any]]

CONTENT_TYPES = ("application/json", "text/plain", "application/octet-stream", "application/vnd.api+json")

MESSAGE = Context("message")
"""A handler parameter that receives the ``StreamMessage`` itself."""


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> BrokerKind:
    return KINDS[request.param]


async def same_with_and_without(kind: BrokerKind, trail: MessageAuditTrail, scenario: Scenario) -> Any:
    """Run ``scenario`` on a test broker without the middleware and with it; return what both saw (equal)."""
    results = []
    for middlewares in ((), (AuditMiddleware(trail, agent="shop"),)):
        broker = kind.broker(list(middlewares))
        results.append(await scenario(kind, broker, kind.new_target()))
    without, with_audit = results
    assert with_audit == without
    await trail.flush()
    return with_audit


async def records(trail: MessageAuditTrail) -> list[Any]:
    return [record async for record in trail.stream_messages(AuditQuery())]


async def consume_one(kind: BrokerKind, broker: Any, target: str, body: Any, **publish: Any) -> Any:
    received: list[Any] = []

    async def handler(body: Any, msg: Any = MESSAGE) -> None:
        received.append((msg.body, await msg.decode()))

    kind.subscribe(broker, target, handler)
    async with kind.test_broker(broker) as test_broker:
        await kind.publish(test_broker, body, target, **publish)
    return received


async def test_publishing_none_sends_an_empty_message(kind: BrokerKind, trail: MessageAuditTrail) -> None:
    async def scenario(kind: BrokerKind, broker: Any, target: str) -> Any:
        return await consume_one(kind, broker, target, None)

    assert await same_with_and_without(kind, trail, scenario) == [(b"", b"")]
    [record] = await records(trail)
    assert (record.payload, record.status) == ({}, MessageStatus.DELIVERED)


@pytest.mark.parametrize(
    ("body", "recorded"),
    [
        (dt.datetime(2026, 5, 4, 3, 2, 1, tzinfo=dt.UTC), {"body": "2026-05-04T03:02:01Z"}),
        (Decimal("12.50"), {"body": "12.50"}),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), {"body": "12345678-1234-5678-1234-567812345678"}),
        ({"at": dt.date(2026, 5, 4), "amount": Decimal("1.5")}, {"at": "2026-05-04", "amount": "1.5"}),
    ],
    ids=["datetime", "decimal", "uuid", "dict-of-them"],
)
async def test_bodies_faststream_serialises_are_sent_and_recorded_as_serialised(
    kind: BrokerKind, trail: MessageAuditTrail, body: Any, recorded: dict[str, Any]
) -> None:
    async def scenario(kind: BrokerKind, broker: Any, target: str) -> Any:
        return await consume_one(kind, broker, target, body)

    [(raw, _)] = await same_with_and_without(kind, trail, scenario)
    [record] = await records(trail)
    assert record.payload == recorded
    assert raw  # the bytes FastStream sent, the same with the middleware


async def test_a_request_whose_handler_returns_none_gets_an_empty_reply(
    kind: BrokerKind, trail: MessageAuditTrail
) -> None:
    async def scenario(kind: BrokerKind, broker: Any, target: str) -> Any:
        async def handler(body: dict[str, Any]) -> None:
            return None

        kind.subscribe(broker, target, handler)
        async with kind.test_broker(broker) as test_broker:
            response = await _request(kind, test_broker, {"ask": 1}, target)
            return response.body

    assert await same_with_and_without(kind, trail, scenario) == b""
    query, reply = sorted(await records(trail), key=lambda record: record.message_type != MessageType.QUERY)
    assert (query.message_type, reply.message_type, reply.payload) == (MessageType.QUERY, MessageType.RESPONSE, {})


async def _request(kind: BrokerKind, broker: Any, body: Any, target: str, **kwargs: Any) -> Any:
    if kind.name == "redis":
        return await broker.request(body, stream=target, timeout=10, **kwargs)
    if kind.name == "nats":
        return await broker.request(body, target, stream=target, timeout=10, **kwargs)
    return await broker.request(body, queue=target, timeout=10, **kwargs)


async def test_a_custom_decoder_runs_as_often_as_without_the_middleware(
    kind: BrokerKind, trail: MessageAuditTrail
) -> None:
    async def scenario(kind: BrokerKind, broker: Any, target: str) -> Any:
        calls: list[bytes] = []

        async def decoder(msg: StreamMessage[Any], original: Any) -> Any:
            calls.append(msg.body)
            return await original(msg)

        async def handler(msg: Any = MESSAGE) -> dict[str, Any]:  # never decodes the body itself
            return {"seen": True}

        kind.subscribe(broker, target, handler, decoder=decoder)
        async with kind.test_broker(broker) as test_broker:
            reply = await _request(kind, test_broker, {"n": 1}, target)
        return calls, reply.body

    calls, reply = await same_with_and_without(kind, trail, scenario)
    assert (len(calls), reply) == (1, b'{"seen":true}')  # FastStream's own decode; the middleware adds none
    assert {record.message_type for record in await records(trail)} == {MessageType.QUERY, MessageType.RESPONSE}


def test_a_reply_to_an_unknown_requester_goes_to_the_reply_inbox() -> None:
    from faststream.response import PublishCommand, PublishType

    from audit_plugin.integrations.faststream.fields import published_message

    request = Message(from_agent=UNKNOWN_SENDER, to_agent="prices", message_type=MessageType.QUERY)
    cmd = PublishCommand({"price": 1}, _publish_type=PublishType.REPLY, destination="_INBOX.x7Gh2" * 200)
    reply = published_message(cmd, "pricing", {"price": 1}, request=request)
    assert (reply.to_agent, reply.reply_to) == (REPLY_INBOX, request.message_id)


async def test_a_message_that_cannot_be_decoded_is_recorded_failed_with_the_reason(
    kind: BrokerKind, trail: MessageAuditTrail
) -> None:
    async def scenario(kind: BrokerKind, broker: Any, target: str) -> Any:
        async def handler(body: dict[str, int]) -> None:
            return None

        kind.subscribe(broker, target, handler)
        async with kind.test_broker(broker) as test_broker:
            with pytest.raises(Exception) as caught:  # the test broker re-raises the handler's error
                await kind.publish(test_broker, b"\xff not json", target)
        return type(caught.value).__name__

    assert await same_with_and_without(kind, trail, scenario) == "ValidationError"
    [record] = await records(trail)
    assert record.status is MessageStatus.FAILED and record.error_message.startswith("ValidationError")
    assert record.payload == {"body_base64": "/yBub3QganNvbg=="}


async def test_a_message_the_parser_refuses_is_recorded_failed_with_the_reason(
    kind: BrokerKind, trail: MessageAuditTrail
) -> None:
    async def parser(msg: Any) -> Any:
        raise ValueError("unreadable frame")

    async def scenario(kind: BrokerKind, broker: Any, target: str) -> Any:
        async def handler(body: Any) -> None:
            return None

        kind.subscribe(broker, target, handler, parser=parser)
        async with kind.test_broker(broker) as test_broker:
            with pytest.raises(ValueError, match="unreadable frame"):
                await kind.publish(test_broker, {"n": 1}, target)
        return True

    await same_with_and_without(kind, trail, scenario)
    [record] = await records(trail)
    assert (record.status, record.error_message) == (MessageStatus.FAILED, "ValueError: unreadable frame")
    assert record.payload == {"n": 1}


async def test_a_batch_consumer_records_each_message_of_the_batch(trail: MessageAuditTrail) -> None:
    from faststream.redis import RedisRouter

    seen: list[Any] = []

    async def handler(bodies: list[Any]) -> None:
        seen.append(bodies)

    target = KINDS["redis"].new_target()
    broker = RedisBroker(logger=None)  # publishes unaudited: another service
    router = RedisRouter(middlewares=[AuditMiddleware(trail, agent="worker")])
    router.subscriber(list=ListSub(target, batch=True))(handler)
    broker.include_router(router)
    async with TestRedisBroker(broker) as test_broker:
        await test_broker.publish_batch({"n": 1}, {"n": 2}, "three", list=target)
    await trail.flush()
    assert seen == [[{"n": 1}, {"n": 2}, "three"]]

    batch = sorted(await records(trail), key=lambda record: str(record.payload))
    assert [record.payload for record in batch] == [{"body": "three"}, {"n": 1}, {"n": 2}]
    assert {(record.status, record.from_agent, record.to_agent) for record in batch} == {
        (MessageStatus.DELIVERED, UNKNOWN_SENDER, target)
    }
    assert len({record.message_id for record in batch}) == 3


async def test_a_batch_publish_is_one_record_delivered_as_a_whole(trail: MessageAuditTrail) -> None:
    target = KINDS["redis"].new_target()
    broker = RedisBroker(middlewares=[AuditMiddleware(trail, agent="shop")], logger=None)
    broker.subscriber(list=ListSub(target, batch=True))(_accept)
    async with TestRedisBroker(broker) as test_broker:
        await test_broker.publish_batch({"n": 1}, {"n": 2}, list=target)
    await trail.flush()
    [record] = await records(trail)
    assert record.payload == {"batch": [{"n": 1}, {"n": 2}]}
    assert record.status is MessageStatus.DELIVERED


async def test_a_nack_the_broker_does_not_redeliver_is_final(trail: MessageAuditTrail) -> None:
    async def handler(body: dict[str, int]) -> None:
        raise NackMessage()

    target = KINDS["redis"].new_target()
    broker = RedisBroker(middlewares=[AuditMiddleware(trail, agent="worker")], logger=None)
    broker.subscriber(list=target)(handler)  # a Redis list keeps nothing unacknowledged
    async with TestRedisBroker(broker) as test_broker:
        with pytest.raises(NackMessage):  # the test broker re-raises it, with or without the middleware
            await test_broker.publish({"n": 1}, list=target)
    await trail.flush()
    [record] = await records(trail)
    assert record.status is MessageStatus.FAILED
    assert record.error_message == "nacked by the handler; redis does not redeliver it"


async def test_bodies_kept_as_base64_or_markers_are_counted(trail: MessageAuditTrail) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    audit = AuditMiddleware(trail, agent="shop", meter_provider=provider)
    target = KINDS["redis"].new_target()
    broker = RedisBroker(middlewares=[audit], logger=None)
    broker.subscriber(list=target)(_accept)
    async with TestRedisBroker(broker) as test_broker:
        await test_broker.publish(b"\x00\x01binary", list=target)
        await test_broker.publish({"fine": True}, list=target)
    await trail.flush()

    assert audit.degraded_bodies == 1
    points = [
        point
        for metric in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        if metric.name == "audit_plugin.capture.degraded"
        for point in metric.data.data_points
    ]
    assert [(point.value, dict(point.attributes)) for point in points] == [
        (1, {"messaging.system": "redis", "audit_plugin.capture.kind": "base64"})
    ]
    provider.shutdown()


async def _accept(body: Any) -> None:
    return None


async def test_a_datetime_subclass_clock_is_recorded_and_verifies(trail: MessageAuditTrail) -> None:
    """freezegun's FakeDatetime is a ``datetime`` subclass; the hash chain must take it like a datetime."""

    class FrozenDatetime(dt.datetime):
        pass

    frozen = FrozenDatetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    message = Message(from_agent="a", to_agent="b", message_type=MessageType.EVENT, timestamp=frozen)
    await trail.log_message(message)
    await trail.update_message_status(message.message_id, MessageStatus.DELIVERED, delivered_at=frozen)
    [record] = await records(trail)
    assert record.timestamp == frozen
    assert (await trail.verify()).ok


@pytest.mark.parametrize(("source", "status"), [("list", MessageStatus.FAILED), ("stream", MessageStatus.PENDING)])
async def test_a_cancelled_handler_is_final_only_where_the_broker_does_not_redeliver(
    trail: MessageAuditTrail, source: str, status: MessageStatus
) -> None:
    import asyncio

    from faststream.redis import StreamSub

    async def handler(body: dict[str, int]) -> None:
        raise asyncio.CancelledError()

    target = KINDS["redis"].new_target()
    broker = RedisBroker(middlewares=[AuditMiddleware(trail, agent="worker")], logger=None)
    where = {"list": target} if source == "list" else {"stream": StreamSub(target, group="g", consumer="c")}
    broker.subscriber(**where)(handler)
    async with TestRedisBroker(broker) as test_broker:
        with pytest.raises(asyncio.CancelledError):
            await test_broker.publish({"n": 1}, **{source: target})
    await trail.flush()
    [record] = await records(trail)
    assert record.status is status
    if status is MessageStatus.FAILED:
        assert record.error_message == "handler cancelled; redis does not redeliver it"


async def test_a_reply_to_a_long_inbox_name_keeps_its_status_on_its_tree_row(database_url: str) -> None:
    from tests.cli_support import run_cli

    inbox = "_INBOX." + "Zq8rT2" * 30
    async with MessageAuditTrail(database_url) as trail:
        query = Message(from_agent="client", to_agent="prices", message_type=MessageType.QUERY, correlation_id="c-1")
        reply = Message(
            from_agent="pricing",
            to_agent=inbox,
            message_type=MessageType.RESPONSE,
            correlation_id="c-1",
            reply_to=query.message_id,
        )
        for message in (query, reply):
            await trail.log_message(message)
            await trail.update_message_status(message.message_id, MessageStatus.DELIVERED)

    shown = run_cli("conversation", "c-1", database_url=database_url, COLUMNS="80")
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "RESPONSE" in line or "QUERY" in line]
    assert len(rows) == 2 and all("DELIVERED" in row for row in rows), shown.stdout
    assert rows[1].index("RESPONSE") > rows[0].index("QUERY")  # the reply is a child of its request


@given(data=st.binary(max_size=200), content_type=st.one_of(st.none(), st.sampled_from(CONTENT_TYPES), st.text()))
@settings(max_examples=200, deadline=None)
def test_any_bytes_read_back_to_a_payload_or_its_base64_fallback_the_store_keeps(
    data: bytes, content_type: str | None
) -> None:
    from audit_plugin.exceptions import AuditError
    from audit_plugin.integrations.payloads import Body
    from audit_plugin.model import validation as v

    body = Body(data, content_type)
    payload = body.payload()  # never raises
    assert isinstance(payload, dict)
    try:
        v.encode_payload(payload)
    except AuditError:  # a NUL, a lone surrogate, nesting too deep: the fallback is kept
        v.encode_payload(body.base64())
        assert base64.b64decode(body.base64()["body_base64"]) == data


@given(value=st.one_of(st.none(), st.text(), st.binary(), st.integers()))
@settings(max_examples=200, deadline=None)
def test_any_field_value_becomes_text_the_store_keeps(value: Any) -> None:
    from audit_plugin.integrations.payloads import storable_text
    from audit_plugin.model import validation as v

    text = storable_text(value, "fallback")
    assert text is not None
    v.check_text("field", text)  # storable: not empty, at most 1,024 characters, no NUL, valid UTF-8
    assert storable_text(value, "fallback") == text  # the same value, the same text, on every side


@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_body_faststream_publishes_is_delivered_and_recorded(body: Any, tmp_path: Any) -> None:
    received: list[Any] = []

    async def handler(message: Any = MESSAGE) -> None:
        received.append(message.body)

    target = KINDS["redis"].new_target()
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}") as trail:
        broker = RedisBroker(middlewares=[AuditMiddleware(trail, agent="shop")], logger=None)
        broker.subscriber(list=target)(handler)
        async with TestRedisBroker(broker) as test_broker:
            await test_broker.publish(body, list=target)
        await trail.flush()
        [record] = await records(trail)
    assert len(received) == 1 and record.status is MessageStatus.DELIVERED
