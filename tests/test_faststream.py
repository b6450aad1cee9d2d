"""AuditMiddleware on real Redis, NATS JetStream and RabbitMQ servers, on SQLite and PostgreSQL stores."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from faststream.exceptions import NackMessage
from faststream.middlewares import AckPolicy
from nats.errors import Error as NatsError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.integrations.faststream import UNKNOWN_SENDER, AuditMiddleware
from audit_plugin.integrations.faststream.outcome import describe
from tests.cli_support import run_cli
from tests.faststream_support import KINDS, BrokerKind, running, wait_for_final
from tests.test_examples import run_example

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> BrokerKind:
    broker_kind = KINDS[request.param]
    broker_kind.require_server()
    return broker_kind


@pytest.fixture
async def target(kind: BrokerKind) -> Any:
    name = kind.new_target()
    yield name
    await kind.cleanup(name)


def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def records_of(trail: MessageAuditTrail) -> list[Any]:
    return [record async for record in trail.stream_messages(AuditQuery())]


def test_importing_audit_plugin_does_not_import_faststream() -> None:
    code = "import sys, audit_plugin, audit_plugin.cli; assert 'faststream' not in sys.modules, 'faststream imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_thousand_messages_over_eight_consumers_each_recorded_once(
    kind: BrokerKind, target: str, database_url: str
) -> None:
    async with MessageAuditTrail(database_url) as trail:
        producer = kind.broker([AuditMiddleware(trail, agent="producer")])
        consumers = [kind.broker([AuditMiddleware(trail, agent=f"worker-{i}")]) for i in range(8)]
        handled: Counter[int] = Counter()

        async def handle(body: dict[str, int]) -> None:
            handled[body["n"]] += 1
            if body["n"] % 50 == 7:
                raise ValueError(f"bad order {body['n']}")

        for index, consumer in enumerate(consumers):
            kind.subscribe(consumer, target, handle, index=index)
        async with running(producer, *consumers):
            for start in range(0, 1000, 100):  # concurrent publishes share commits
                await asyncio.gather(*(kind.publish(producer, {"n": n}, target) for n in range(start, start + 100)))
            await wait_for_final(trail, 1000)

        records = await records_of(trail)
        assert len(records) == 1000
        assert sorted(record.payload["n"] for record in records) == list(range(1000))
        for record in records:
            n = record.payload["n"]
            assert (record.from_agent, record.to_agent, record.message_type) == ("producer", target, MessageType.EVENT)
            if n % 50 == 7:
                assert record.status is MessageStatus.FAILED
                assert record.error_message == f"ValueError: bad order {n}"
            else:
                assert record.status is MessageStatus.DELIVERED and record.error_message is None
                assert record.delivered_at is not None
        assert set(handled.values()) == {1}
        history = await trail.get_message_history(records[0].message_id)
        assert [step.kind for step in history] == ["record", "status"]
        report = await trail.verify()
        assert report.ok, report


async def test_nack_then_success_is_delivered_with_the_retry_in_its_history(
    kind: BrokerKind, target: str, database_url: str
) -> None:
    async with MessageAuditTrail(database_url) as trail:
        producer = kind.broker([AuditMiddleware(trail, agent="producer")])
        consumer = kind.broker([AuditMiddleware(trail, agent="worker")])
        attempts: Counter[int] = Counter()

        async def handle(body: dict[str, int]) -> None:
            attempts[body["n"]] += 1
            if attempts[body["n"]] == 1:
                raise NackMessage()

        kind.subscribe(consumer, target, handle)
        if kind.name == "redis":  # a nacked stream entry stays pending until a consumer claims it
            kind.claimer(consumer, target, handle)
        async with running(producer, consumer):
            await kind.publish(producer, {"n": 1}, target)
            await wait_for_final(trail, 1)

        [record] = await records_of(trail)
        assert record.status is MessageStatus.DELIVERED
        assert record.retry_count == 1
        history = await trail.get_message_history(record.message_id)
        assert [(step.status, step.retry_count) for step in history] == [
            (MessageStatus.PENDING, 0),
            (MessageStatus.PENDING, 1),
            (MessageStatus.DELIVERED, 1),
        ]
        assert history[1].error == "nacked by the handler"
        assert (await trail.verify()).ok


async def test_a_message_from_an_unaudited_publisher_is_recorded_on_the_consume_side(
    kind: BrokerKind, target: str, database_url: str
) -> None:
    async with MessageAuditTrail(database_url) as trail:
        publisher = kind.broker()  # another service, without the middleware
        consumer = kind.broker([AuditMiddleware(trail, agent="worker")])
        kind.subscribe(consumer, target, _accept)
        async with running(publisher, consumer):
            await kind.publish(publisher, {"order": 1}, target, correlation_id="conv-1")
            await kind.publish(publisher, {"order": 2}, target, headers={"audit-from-agent": "legacy-shop"})
            await wait_for_final(trail, 2)

        records = sorted(await records_of(trail), key=lambda record: record.payload["order"])
        assert [(r.from_agent, r.to_agent, r.status) for r in records] == [
            (UNKNOWN_SENDER, target, MessageStatus.DELIVERED),
            ("legacy-shop", target, MessageStatus.DELIVERED),
        ]
        assert records[0].correlation_id == "conv-1"
        assert (await trail.verify()).ok


async def _accept(body: dict[str, Any]) -> None:
    return None


async def test_record_and_consumer_span_share_the_producers_trace(
    kind: BrokerKind, target: str, tmp_path: Path
) -> None:
    provider, exporter = traced()
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") as trail:
        producer = kind.broker([AuditMiddleware(trail, agent="producer", tracer_provider=provider)])
        consumer = kind.broker([AuditMiddleware(trail, agent="worker", tracer_provider=provider)])
        kind.subscribe(consumer, target, _accept)
        async with running(producer, consumer):
            await kind.publish(producer, {"n": 1}, target)
            await wait_for_final(trail, 1)
        [record] = await records_of(trail)

    spans = exporter.get_finished_spans()
    [consumer_span] = [span for span in spans if span.kind is SpanKind.CONSUMER]
    [producer_span] = [span for span in spans if span.kind is SpanKind.PRODUCER]
    assert record.trace_id == format(consumer_span.context.trace_id, "032x")
    assert record.span_id == format(producer_span.context.span_id, "016x")
    assert consumer_span.parent is not None and consumer_span.parent.span_id == producer_span.context.span_id
    assert consumer_span.attributes["messaging.system"] == {"rabbit": "rabbitmq"}.get(kind.name, kind.name)


async def test_with_faststreams_telemetry_middleware_each_message_has_one_producer_span(
    kind: BrokerKind, target: str, tmp_path: Path
) -> None:
    from faststream.opentelemetry import TelemetryMiddleware

    telemetry = _telemetry_middleware(kind, TelemetryMiddleware)
    provider, exporter = traced()
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") as trail:
        producer = kind.broker(
            [telemetry(provider), AuditMiddleware(trail, agent="producer", tracer_provider=provider)]
        )
        consumer = kind.broker([telemetry(provider), AuditMiddleware(trail, agent="worker", tracer_provider=provider)])
        kind.subscribe(consumer, target, _accept)
        async with running(producer, consumer):
            for n in range(3):
                await kind.publish(producer, {"n": n}, target)
            await wait_for_final(trail, 3)
        records = await records_of(trail)

    spans = exporter.get_finished_spans()
    publish_spans = [span for span in spans if span.kind is SpanKind.PRODUCER and span.name.endswith(" publish")]
    process_spans = [span for span in spans if span.kind is SpanKind.CONSUMER and span.name.endswith(" process")]
    assert len(publish_spans) == 3 and len(process_spans) == 3
    assert all(span.instrumentation_scope.name == "opentelemetry.instrumentation.faststream" for span in spans)
    assert {record.trace_id for record in records} == {format(s.context.trace_id, "032x") for s in process_spans}
    assert {record.span_id for record in records} == {format(s.context.span_id, "016x") for s in publish_spans}


def _telemetry_middleware(kind: BrokerKind, base: type) -> Any:
    if kind.name == "redis":
        from faststream.redis.opentelemetry import RedisTelemetryMiddleware as middleware
    elif kind.name == "nats":
        from faststream.nats.opentelemetry import NatsTelemetryMiddleware as middleware
    else:
        from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware as middleware
    assert issubclass(middleware, base)
    return lambda provider: middleware(tracer_provider=provider)


@pytest.mark.parametrize("kind_name", ["nats"])
async def test_jetstream_consumer_that_dies_before_acking_leaves_one_record(kind_name: str, database_url: str) -> None:
    """A consumer processes a message and dies before its ack: JetStream redelivers, the store keeps one outcome."""
    kind = KINDS[kind_name]
    kind.require_server()
    target = kind.new_target()
    try:
        async with MessageAuditTrail(database_url) as trail:
            producer = kind.broker([AuditMiddleware(trail, agent="producer")])
            dying = kind.broker([AuditMiddleware(trail, agent="worker-1")])
            survivor = kind.broker([AuditMiddleware(trail, agent="worker-2")])
            deliveries: list[str] = []

            async def processed_then_died(body: dict[str, int]) -> None:
                deliveries.append("dying")  # manual ack policy and no ack: as if the process died here

            async def handle(body: dict[str, int]) -> None:
                deliveries.append("survivor")

            kind.subscribe(dying, target, processed_then_died, ack_wait=1, ack_policy=AckPolicy.MANUAL)
            async with running(producer, dying):
                await kind.publish(producer, {"n": 1}, target)
                await wait_for_final(trail, 1)
            kind.subscribe(survivor, target, handle, ack_wait=1)
            async with running(survivor):
                for _ in range(100):  # redelivered once ack_wait (1 s) has passed
                    if deliveries[-1:] == ["survivor"]:
                        break
                    await asyncio.sleep(0.05)
            await trail.flush()

            assert deliveries == ["dying", "survivor"]
            [record] = await records_of(trail)
            assert record.status is MessageStatus.DELIVERED and record.from_agent == "producer"
            history = await trail.get_message_history(record.message_id)
            assert [step.status for step in history] == [MessageStatus.PENDING, MessageStatus.DELIVERED]
            assert (await trail.verify()).ok
    finally:
        await kind.cleanup(target)


@pytest.mark.parametrize("kind_name", ["nats"])
async def test_jetstream_consumer_stopped_mid_handler_is_redelivered_into_the_same_record(
    kind_name: str, database_url: str
) -> None:
    kind = KINDS[kind_name]
    kind.require_server()
    target = kind.new_target()
    try:
        async with MessageAuditTrail(database_url) as trail:
            producer = kind.broker([AuditMiddleware(trail, agent="producer")])
            dying = kind.broker([AuditMiddleware(trail, agent="worker-1")], graceful_timeout=0.2)
            survivor = kind.broker([AuditMiddleware(trail, agent="worker-2")])
            started = asyncio.Event()

            async def hangs(body: dict[str, int]) -> None:
                started.set()
                await asyncio.sleep(3600)

            kind.subscribe(dying, target, hangs, ack_wait=1)
            kind.subscribe(survivor, target, _accept, ack_wait=1)
            async with running(producer):
                async with running(dying):
                    await kind.publish(producer, {"n": 1}, target)
                    await asyncio.wait_for(started.wait(), 10)
                async with running(survivor):
                    await wait_for_final(trail, 1)

            [record] = await records_of(trail)
            assert record.status is MessageStatus.DELIVERED
            assert record.retry_count == 1  # JetStream's second delivery
            assert (await trail.verify()).ok
    finally:
        await kind.cleanup(target)


def test_faststream_agents_example_leaves_one_conversation(tmp_path: Path) -> None:
    KINDS["redis"].require_server()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
    out = run_example("faststream_agents.py", database_url, cwd=tmp_path)
    assert "planner got {'title': 'On audited agents', 'paragraphs': 2}" in out
    conversation = out.split("conversation ", 1)[1].split()[0]
    shown = run_cli("conversation", conversation, database_url=database_url)
    assert shown.returncode == 0, shown.stderr
    assert "3 messages" in shown.stdout
    for hop in ("planner → research-tasks-", "researcher → findings-", "writer → drafts-"):
        assert hop in shown.stdout
    assert shown.stdout.count("DELIVERED") == 3


async def test_a_publish_the_broker_refuses_leaves_a_failed_record(tmp_path: Path) -> None:
    kind = KINDS["nats"]
    kind.require_server()
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") as trail:
        producer = kind.broker([AuditMiddleware(trail, agent="producer")])
        async with running(producer):
            with pytest.raises(NatsError) as refused:  # no JetStream stream takes this subject
                await producer.publish({"n": 1}, f"nowhere-{kind.new_target()}", stream="no-such-stream", timeout=1)
        await trail.flush()
        [record] = await records_of(trail)
    assert record.status is MessageStatus.FAILED
    assert record.error_message == f"publish failed: {describe(refused.value)}"


def _responder(kind: BrokerKind, broker: Any, target: str, handler: Any) -> None:
    """``handler`` answers requests to ``target`` (on NATS a core subscriber: a JetStream publish is acked instead)."""
    if kind.name == "nats":
        broker.subscriber(target)(handler)
    else:
        kind.subscribe(broker, target, handler)


async def _request(kind: BrokerKind, broker: Any, body: Any, target: str, **kwargs: Any) -> Any:
    if kind.name == "redis":
        return await broker.request(body, stream=target, timeout=10, **kwargs)
    if kind.name == "nats":
        return await broker.request(body, target, timeout=10, **kwargs)
    return await broker.request(body, queue=target, timeout=10, **kwargs)


async def test_a_request_whose_handler_returns_none_gets_its_empty_reply(
    kind: BrokerKind, target: str, database_url: str
) -> None:
    async def nothing(body: dict[str, Any]) -> None:
        return None

    async with MessageAuditTrail(database_url) as trail:
        bodies = []
        for middlewares in ((), (AuditMiddleware(trail, agent="client"),)):
            broker = kind.broker(list(middlewares))
            _responder(kind, broker, target, nothing)
            async with running(broker):
                bodies.append((await _request(kind, broker, {"ask": 1}, target)).body)
        assert bodies == [b"", b""]  # at once, with or without the middleware
        await wait_for_final(trail, 2)
        records = await records_of(trail)
    assert sorted((record.message_type, record.status) for record in records) == [
        (MessageType.QUERY, MessageStatus.DELIVERED),
        (MessageType.RESPONSE, MessageStatus.DELIVERED),
    ]


async def test_a_reply_is_the_child_of_its_request_and_goes_to_the_requester(
    kind: BrokerKind, target: str, database_url: str
) -> None:
    from audit_plugin.cli.conversation import build_thread

    async def price(body: dict[str, str]) -> dict[str, float]:
        return {"price": 9.5}

    async with MessageAuditTrail(database_url) as trail:
        client = kind.broker([AuditMiddleware(trail, agent="client")])
        server = kind.broker([AuditMiddleware(trail, agent="pricing")])
        _responder(kind, server, target, price)
        async with running(client, server):
            response = await _request(kind, client, {"sku": "A-1"}, target, correlation_id="conv-42")
            assert await response.decode() == {"price": 9.5}
            await wait_for_final(trail, 2)
        history = await trail.get_conversation_history("conv-42")

    [query] = [record for record in history if record.message_type is MessageType.QUERY]
    [reply] = [record for record in history if record.message_type is MessageType.RESPONSE]
    assert (query.from_agent, query.to_agent, query.status) == ("client", target, MessageStatus.DELIVERED)
    assert (reply.from_agent, reply.to_agent, reply.reply_to) == ("pricing", "client", query.message_id)
    assert (reply.status, reply.payload) == (MessageStatus.DELIVERED, {"price": 9.5})
    [root] = build_thread(history)
    assert [node.record.message_id for node in root.replies] == [reply.message_id]


async def test_get_one_iteration_and_replies_run_a_custom_decoder_as_often_as_without_the_middleware(
    tmp_path: Path,
) -> None:
    from faststream.redis import RedisBroker

    kind = KINDS["redis"]
    kind.require_server()
    counts = []
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") as trail:
        for middlewares in ((), (AuditMiddleware(trail, agent="reader"),)):
            calls: list[bytes] = []
            decoder = _counting_decoder(calls)

            channel, replies = kind.new_target(), kind.new_target()
            broker = RedisBroker("redis://127.0.0.1:6379", middlewares=list(middlewares), decoder=decoder, logger=None)
            one = broker.subscriber(channel=channel)
            stream = broker.subscriber(channel=f"{channel}-iter")

            @broker.subscriber(channel=replies)
            async def echo(body: dict[str, int]) -> dict[str, int]:
                return body

            async with running(broker):
                await asyncio.sleep(0.1)  # the channel subscriptions are in place
                await broker.publish({"n": 1}, channel=channel)
                got = await one.get_one(timeout=10)
                await broker.publish({"n": 2}, channel=f"{channel}-iter")
                async for item in stream:
                    iterated = item
                    break
                reply = await broker.request({"n": 3}, channel=replies, timeout=10)
            assert got is not None and got.body and iterated.body and reply.body
            counts.append(len(calls))  # nobody called decode() on them: only the handler's own decode counts
        await trail.flush()
        assert await trail.count_messages() == 4  # 3 published (read by get_one, iteration, the handler) + the reply
    assert counts[0] == counts[1] == 1


def _counting_decoder(calls: list[bytes]) -> Any:
    async def decoder(msg: Any, original: Any) -> Any:
        calls.append(msg.body)
        return await original(msg)

    return decoder


async def test_buffered_durability_acks_as_soon_as_without_the_middleware(tmp_path: Path) -> None:
    """The ack is sent in the same step as without auditing (FastStream's own ``test_consume_ack``)."""
    from unittest.mock import patch

    from redis.asyncio import Redis

    kind = KINDS["redis"]
    kind.require_server()
    target = kind.new_target()
    try:
        async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") as trail:
            broker = kind.broker([AuditMiddleware(trail, agent="worker", durability="buffered")])
            handled = asyncio.Event()
            acked_when_handled: list[int] = []
            original = Redis.xack

            async def xack(self: Any, *args: Any) -> Any:
                acked_when_handled.append(handled.is_set())
                return await original(self, *args)

            async def handler(body: dict[str, int]) -> None:
                handled.set()

            kind.subscribe(broker, target, handler)
            async with running(broker):
                with patch.object(Redis, "xack", xack):
                    await kind.publish(broker, {"n": 1}, target)
                    await asyncio.wait_for(handled.wait(), 10)
                    assert acked_when_handled == [True]  # acked before this task ran again
            await wait_for_final(trail, 1)
    finally:
        await kind.cleanup(target)


async def test_a_jetstream_batch_consumer_records_each_message_of_the_batch(database_url: str) -> None:
    from faststream.nats import JStream, PullSub

    kind = KINDS["nats"]
    kind.require_server()
    target = kind.new_target()
    try:
        async with MessageAuditTrail(database_url) as trail:
            producer = kind.broker([AuditMiddleware(trail, agent="producer")])
            consumer = kind.broker([AuditMiddleware(trail, agent="worker")])
            batches: list[list[Any]] = []

            @consumer.subscriber(
                target,
                stream=JStream(target, subjects=[target]),
                durable="workers",
                pull_sub=PullSub(batch_size=3, timeout=1, batch=True),
            )
            async def handle(bodies: list[dict[str, int]]) -> None:
                batches.append(bodies)
                if any(body["n"] == 2 for body in bodies):
                    raise ValueError("bad batch")

            async with running(consumer, producer):  # the consumer declares the stream
                for n in range(3):
                    await kind.publish(producer, {"n": n}, target)
                await wait_for_final(trail, 3)
            records = sorted(await records_of(trail), key=lambda record: record.payload["n"])
    finally:
        await kind.cleanup(target)
    assert sorted(body["n"] for batch in batches for body in batch) == [0, 1, 2]
    assert len(records) == 3 and {record.from_agent for record in records} == {"producer"}
    for record in records:  # one outcome per message: the batch's handler run
        batch = next(batch for batch in batches if record.payload in batch)
        failed = any(body["n"] == 2 for body in batch)
        assert record.status is (MessageStatus.FAILED if failed else MessageStatus.DELIVERED)


async def test_a_native_aio_pika_message_is_sent_and_recorded(tmp_path: Path) -> None:
    import aio_pika

    kind = KINDS["rabbit"]
    kind.require_server()
    target = kind.new_target()
    try:
        async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") as trail:
            broker = kind.broker([AuditMiddleware(trail, agent="shop")])
            received: list[Any] = []

            async def handler(body: str) -> None:
                received.append(body)

            kind.subscribe(broker, target, handler)
            async with running(broker):
                native = aio_pika.Message(b"raw order 7", content_type="text/plain")
                await broker.publish(native, queue=target)
                await wait_for_final(trail, 1)
            [record] = await records_of(trail)
    finally:
        await kind.cleanup(target)
    assert received == ["raw order 7"]
    assert (record.payload, record.status) == ({"body": "raw order 7"}, MessageStatus.DELIVERED)


async def test_a_reply_from_an_unaudited_server_is_linked_and_delivers_its_request(tmp_path: Path) -> None:
    kind = KINDS["redis"]
    kind.require_server()
    channel = kind.new_target()
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") as trail:
        client = kind.broker([AuditMiddleware(trail, agent="client")])
        server = kind.broker()  # another service, without the middleware

        @server.subscriber(channel=channel)
        async def price(query: dict[str, str]) -> dict[str, float]:
            return {"price": 9.5}

        async with running(client, server):
            await asyncio.sleep(0.1)  # the channel subscription is in place
            response = await client.request({"sku": "A-1"}, channel=channel, timeout=10)
            assert await response.decode() == {"price": 9.5}
        await trail.flush()
        records = await records_of(trail)

    [query] = [record for record in records if record.message_type is MessageType.QUERY]
    [reply] = [record for record in records if record.message_type is MessageType.RESPONSE]
    assert query.status is MessageStatus.DELIVERED  # the reply proves the request arrived
    assert (reply.from_agent, reply.to_agent, reply.reply_to) == (UNKNOWN_SENDER, "client", query.message_id)


async def test_a_request_without_a_reply_in_time_is_not_a_failed_publish(tmp_path: Path) -> None:
    kind = KINDS["redis"]
    kind.require_server()
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") as trail:
        client = kind.broker([AuditMiddleware(trail, agent="client")])
        async with running(client):
            with pytest.raises(TimeoutError):  # nobody answers on this channel
                await client.request({"sku": "A-1"}, channel=kind.new_target(), timeout=1)
        await trail.flush()
        [query] = await records_of(trail)
    assert (query.message_type, query.status, query.error_message) == (MessageType.QUERY, MessageStatus.PENDING, None)
