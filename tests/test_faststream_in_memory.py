"""AuditMiddleware with FastStream's in-memory test brokers (no server), and its mapping rules."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from faststream.exceptions import AckMessage, NackMessage, RejectMessage, SkipMessage
from faststream.message import AckStatus
from faststream.middlewares import AckPolicy
from faststream.nats import NatsRouter
from faststream.rabbit import RabbitRouter
from faststream.redis import RedisRouter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.integrations.faststream import UNKNOWN_SENDER, AuditMiddleware
from audit_plugin.integrations.faststream.body import Body
from audit_plugin.integrations.faststream.outcome import consume_outcome
from tests.faststream_support import KINDS, BrokerKind

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROUTERS = {"redis": RedisRouter, "nats": NatsRouter, "rabbit": RabbitRouter}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> BrokerKind:
    return KINDS[request.param]


async def handle(body: dict[str, Any]) -> dict[str, Any]:
    if body["do"] == "fail":
        raise ValueError(f"cannot do order {body['n']}")
    if body["do"] == "nack":
        raise NackMessage()
    if body["do"] == "reject":
        raise RejectMessage()
    if body["do"] == "ack":
        raise AckMessage()
    return {"done": body["n"]}


async def by_payload(trail: MessageAuditTrail) -> dict[str, Any]:
    return {record.payload["do"]: record async for record in trail.stream_messages(AuditQuery())}


async def test_outcomes_in_the_test_broker(kind: BrokerKind, trail: MessageAuditTrail) -> None:
    broker = kind.broker([AuditMiddleware(trail, agent="shop")])
    target = kind.new_target()
    kind.subscribe(broker, target, handle)
    async with kind.test_broker(broker) as test_broker:
        await kind.publish(test_broker, {"do": "ok", "n": 1}, target, correlation_id="conv-7")
        with pytest.raises(ValueError, match="cannot do order 2"):  # the test broker re-raises the handler's error
            await kind.publish(test_broker, {"do": "fail", "n": 2}, target)
        await kind.publish(test_broker, {"do": "nack", "n": 3}, target)
        await kind.publish(test_broker, {"do": "reject", "n": 4}, target)
    await trail.flush()

    records = await by_payload(trail)
    ok, failed, nacked, rejected = records["ok"], records["fail"], records["nack"], records["reject"]
    assert (ok.from_agent, ok.to_agent, ok.message_type, ok.correlation_id) == ("shop", target, "EVENT", "conv-7")
    assert ok.status is MessageStatus.DELIVERED
    assert failed.status is MessageStatus.FAILED and failed.error_message == "ValueError: cannot do order 2"
    assert (nacked.status, nacked.retry_count, nacked.error_message) == (
        MessageStatus.PENDING,
        1,
        "nacked by the handler",
    )
    assert (rejected.status, rejected.error_message) == (MessageStatus.FAILED, "rejected by the handler")
    history = await trail.get_message_history(failed.message_id)
    assert [step.status for step in history] == [MessageStatus.PENDING, MessageStatus.FAILED]
    assert (await trail.verify()).ok


async def test_a_router_audits_the_consume_side_of_an_unaudited_broker(
    kind: BrokerKind, trail: MessageAuditTrail
) -> None:
    broker = kind.broker()
    router = ROUTERS[kind.name](middlewares=[AuditMiddleware(trail, agent="billing")])
    target = kind.new_target()
    kind.subscribe(router, target, handle)
    broker.include_router(router)
    async with kind.test_broker(broker) as test_broker:
        await kind.publish(test_broker, {"do": "ok", "n": 1}, target)
    await trail.flush()

    [record] = [record async for record in trail.stream_messages(AuditQuery())]
    assert (record.from_agent, record.to_agent, record.status) == (UNKNOWN_SENDER, target, MessageStatus.DELIVERED)
    assert record.message_type is MessageType.EVENT


async def test_record_trace_is_the_consumer_spans_trace(kind: BrokerKind, trail: MessageAuditTrail) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    broker = kind.broker([AuditMiddleware(trail, agent="shop", tracer_provider=provider)])
    target = kind.new_target()
    kind.subscribe(broker, target, handle)
    async with kind.test_broker(broker) as test_broker:
        await kind.publish(test_broker, {"do": "ok", "n": 1}, target)
        await kind.publish(test_broker, {"do": "ack", "n": 2}, target)
        await kind.publish(test_broker, {"do": "reject", "n": 3}, target)
    await trail.flush()

    records = await by_payload(trail)
    consumers = {
        span.context.trace_id: span for span in exporter.get_finished_spans() if span.kind is SpanKind.CONSUMER
    }
    assert len(consumers) == 3
    for do, status in (("ok", StatusCode.UNSET), ("ack", StatusCode.UNSET), ("reject", StatusCode.ERROR)):
        consumer = consumers[int(records[do].trace_id, 16)]  # the record's trace is its consumer span's trace
        assert consumer.status.status_code is status
    assert records["ack"].status is MessageStatus.DELIVERED


async def test_a_body_the_store_cannot_keep_is_published_and_recorded_as_base64(
    kind: BrokerKind, trail: MessageAuditTrail
) -> None:
    received: list[Any] = []

    async def collect(body: dict[str, Any]) -> None:
        received.append(body)

    audit = AuditMiddleware(trail, agent="shop")
    broker = kind.broker([audit])
    target = kind.new_target()
    kind.subscribe(broker, target, collect)
    async with kind.test_broker(broker) as test_broker:
        await kind.publish(test_broker, {"note": "nul \x00 inside"}, target)
    assert received == [{"note": "nul \x00 inside"}]  # FastStream delivers it, with or without the middleware
    await trail.flush()
    [record] = [record async for record in trail.stream_messages(AuditQuery())]
    assert record.status is MessageStatus.DELIVERED
    assert record.payload == {
        "body_base64": base64.b64encode(b'{"note":"nul \\u0000 inside"}').decode(),
        "content_type": "application/json",
    }
    assert audit.degraded_bodies == 1


async def test_bad_configuration_gets_a_typed_error_naming_the_field(trail: MessageAuditTrail) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        AuditMiddleware(trail, agent="")
    assert caught.value.field == "agent"
    with pytest.raises(FieldTypeError) as wrong:
        AuditMiddleware("sqlite:///audit.db", agent="shop")  # type: ignore[arg-type]
    assert wrong.value.field == "trail"
    with pytest.raises(InvalidFieldError) as durability:
        AuditMiddleware(trail, agent="shop", durability="eventually")  # type: ignore[arg-type]
    assert durability.value.field == "durability"


@pytest.mark.parametrize(
    ("data", "content_type", "payload"),
    [
        (b"", None, {}),
        (b'{"a": [1, 2]}', None, {"a": [1, 2]}),
        (b'{"a": 1}', "application/json", {"a": 1}),
        (b"[1, 2]", "application/json", {"body": [1, 2]}),
        (b"plain text", None, {"body": "plain text"}),
        (b'{"a": 1}', "text/plain", {"body": '{"a": 1}'}),
        (b"\xff\xfe", None, {"body_base64": "//4="}),
        (b"\x81\xa1a\x01", "application/msgpack", {"body_base64": "gaFhAQ==", "content_type": "application/msgpack"}),
        (b"text", "application/octet-stream", {"body_base64": "dGV4dA==", "content_type": "application/octet-stream"}),
    ],
)
def test_body_bytes_are_read_back_as_faststream_reads_them(
    data: bytes, content_type: str | None, payload: dict[str, Any]
) -> None:
    assert Body(data, content_type).payload() == payload


@pytest.mark.parametrize(
    ("exc", "committed", "policy", "expected"),
    [
        (None, None, AckPolicy.REJECT_ON_ERROR, (MessageStatus.DELIVERED, None)),
        (AckMessage(), None, AckPolicy.REJECT_ON_ERROR, (MessageStatus.DELIVERED, None)),
        (None, AckStatus.NACKED, AckPolicy.MANUAL, (MessageStatus.PENDING, "nacked by the handler")),
        (None, AckStatus.REJECTED, AckPolicy.MANUAL, (MessageStatus.FAILED, "rejected by the handler")),
        (NackMessage(), None, AckPolicy.REJECT_ON_ERROR, (MessageStatus.PENDING, "nacked by the handler")),
        (
            NackMessage(requeue=False),
            None,
            AckPolicy.REJECT_ON_ERROR,
            (MessageStatus.FAILED, "nacked by the handler without requeue"),
        ),
        (RejectMessage(), None, AckPolicy.ACK, (MessageStatus.FAILED, "rejected by the handler")),
        (ValueError("boom"), None, AckPolicy.REJECT_ON_ERROR, (MessageStatus.FAILED, "ValueError: boom")),
        (ValueError("boom"), None, AckPolicy.ACK_FIRST, (MessageStatus.FAILED, "ValueError: boom")),
        (ValueError("boom"), None, AckPolicy.NACK_ON_ERROR, (MessageStatus.PENDING, "ValueError: boom")),
        (SkipMessage(), None, AckPolicy.REJECT_ON_ERROR, None),
        (KeyboardInterrupt(), None, AckPolicy.REJECT_ON_ERROR, None),
    ],
)
def test_consume_outcome_follows_the_acknowledgement_middleware(
    exc: BaseException | None, committed: AckStatus | None, policy: AckPolicy, expected: Any
) -> None:
    outcome = consume_outcome(exc, committed, policy)
    assert (outcome if outcome is None else (outcome.status, outcome.error)) == expected


@pytest.mark.parametrize("system", ["kafka", "mqtt"])
async def test_kafka_and_mqtt_take_the_same_path(system: str, trail: MessageAuditTrail) -> None:
    if system == "kafka":
        from faststream.kafka import KafkaBroker as Broker
        from faststream.kafka import TestKafkaBroker as TestBroker
    else:
        from faststream.mqtt import MQTTBroker as Broker
        from faststream.mqtt import TestMQTTBroker as TestBroker
    broker = Broker(middlewares=[AuditMiddleware(trail, agent="shop")], logger=None)
    broker.subscriber("orders")(handle)
    async with TestBroker(broker) as test_broker:
        await test_broker.publish({"do": "ok", "n": 1}, "orders")
        with pytest.raises(ValueError, match="cannot do order 2"):
            await test_broker.publish({"do": "fail", "n": 2}, "orders")
    await trail.flush()

    records = await by_payload(trail)
    assert (records["ok"].to_agent, records["ok"].status) == ("orders", MessageStatus.DELIVERED)
    assert (records["fail"].status, records["fail"].error_message) == (
        MessageStatus.FAILED,
        "ValueError: cannot do order 2",
    )


async def test_a_consumer_on_another_store_records_the_producers_message(kind: BrokerKind, tmp_path: Any) -> None:
    """Producer and consumer audit into different stores: the consumer's store still gets the whole record."""
    async with (
        MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'producer.db'}") as producer_trail,
        MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'consumer.db'}") as consumer_trail,
    ):
        broker = kind.broker([AuditMiddleware(producer_trail, agent="shop")])
        router = ROUTERS[kind.name](middlewares=[AuditMiddleware(consumer_trail, agent="billing")])
        target = kind.new_target()
        kind.subscribe(router, target, handle)
        broker.include_router(router)
        async with kind.test_broker(broker) as test_broker:
            await kind.publish(test_broker, {"do": "ok", "n": 1}, target, correlation_id="conv-9")
        [produced] = [record async for record in producer_trail.stream_messages(AuditQuery())]
        [consumed] = [record async for record in consumer_trail.stream_messages(AuditQuery())]

    assert consumed.message_id == produced.message_id
    assert (consumed.from_agent, consumed.to_agent, consumed.correlation_id) == ("shop", target, "conv-9")
    assert consumed.status is MessageStatus.DELIVERED and consumed.payload == {"do": "ok", "n": 1}
