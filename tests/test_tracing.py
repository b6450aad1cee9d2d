"""Spans of audited messages, with the real OpenTelemetry SDK and its in-memory exporter."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.semconv._incubating.attributes import error_attributes, messaging_attributes
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import SpanKind, StatusCode

from audit_plugin import (
    AuditPlugin,
    AuditQuery,
    Message,
    MessageAuditTrail,
    MessageBus,
    MessageStatus,
    MessageType,
    Priority,
)
from audit_plugin.exceptions import InvalidFieldError, PayloadNotSerializableError
from audit_plugin.telemetry import tracing as t


def make_bus(trail: MessageAuditTrail, provider: TracerProvider | None, **bus_options: object) -> MessageBus:
    bus = MessageBus(tracer_provider=provider, **bus_options)  # type: ignore[arg-type]
    bus.register(AuditPlugin(trail, tracer_provider=provider), name="audit")
    return bus


async def noop(message: Message) -> None:
    pass


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


async def three_agent_conversation(bus: MessageBus, provider: TracerProvider) -> list[Message]:
    """A asks B; B asks C inside its handler; C answers B; B answers A. Returns the messages in send order."""
    sent: list[Message] = []
    conversation = "conv-1"

    async def send(message: Message) -> None:
        sent.append(message)
        receipt = await bus.send(message)
        assert receipt.status is MessageStatus.DELIVERED

    async def agent_b(message: Message) -> None:
        if message.message_type is MessageType.QUERY:
            await send(Message("B", "C", MessageType.QUERY, {"q": "weather?"}, correlation_id=conversation))
            await send(Message("B", "A", MessageType.RESPONSE, {"a": "sunny"}, correlation_id=conversation))

    async def agent_c(message: Message) -> None:
        await send(Message("C", "B", MessageType.RESPONSE, {"a": "sunny"}, correlation_id=conversation, reply_to="B"))

    async def agent_a(message: Message) -> None:
        pass

    bus.subscribe("A", agent_a)
    bus.subscribe("B", agent_b)
    bus.subscribe("C", agent_c)
    with provider.get_tracer("agent").start_as_current_span("agent A step"):
        await send(Message("A", "B", MessageType.QUERY, {"q": "weather?"}, correlation_id=conversation))
    return sent


async def test_three_agent_conversation_is_one_connected_trace(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bus = make_bus(trail, provider)
    a_to_b, b_to_c, c_to_b, b_to_a = await three_agent_conversation(bus, provider)
    spans = exporter.get_finished_spans()
    [root] = by_name(spans, "agent A step")
    [send_a_b] = [s for s in by_name(spans, "send B") if s.attributes[t.FROM_AGENT] == "A"]
    [send_c_b] = [s for s in by_name(spans, "send B") if s.attributes[t.FROM_AGENT] == "C"]
    [send_b_c] = by_name(spans, "send C")
    [send_b_a] = by_name(spans, "send A")
    process_b_query, process_b_response = sorted(by_name(spans, "process B"), key=lambda s: s.start_time or 0)
    [process_c] = by_name(spans, "process C")
    [process_a] = by_name(spans, "process A")
    assert len(spans) == 9

    def parent_of(span: ReadableSpan) -> int | None:
        return span.parent.span_id if span.parent else None

    assert root.parent is None
    expected_parents = [
        (send_a_b, root),
        (process_b_query, send_a_b),
        (send_b_c, process_b_query),
        (process_c, send_b_c),
        (send_c_b, process_c),
        (process_b_response, send_c_b),
        (send_b_a, process_b_query),
        (process_a, send_b_a),
    ]
    for child, parent in expected_parents:
        assert parent_of(child) == parent.context.span_id, (child.name, parent.name)
    assert {span.context.trace_id for span in spans} == {root.context.trace_id}
    for span in (send_a_b, send_b_c, send_c_b, send_b_a):
        assert span.kind is SpanKind.PRODUCER
    for span in (process_b_query, process_b_response, process_c, process_a):
        assert span.kind is SpanKind.CONSUMER
    # the PRODUCER span of each message is the one its headers carry
    assert a_to_b.headers["traceparent"].startswith("00-{}-{}-".format(*hex_ids(send_a_b)))

    # every record carries the ids of its exported send span; the trace finds them all, in order
    await trail.flush()
    trace_id = format(root.context.trace_id, "032x")
    records = await trail.get_trace(trace_id)
    assert [r.message_id for r in records] == [m.message_id for m in (a_to_b, b_to_c, c_to_b, b_to_a)]
    send_spans = {span.attributes[t.MESSAGING_MESSAGE_ID]: span for span in (send_a_b, send_b_c, send_c_b, send_b_a)}
    for record in records:
        assert (record.trace_id, record.span_id) == hex_ids(send_spans[record.message_id])
        assert record.status is MessageStatus.DELIVERED
    assert len(await trail.query_messages(AuditQuery(trace_id=trace_id))) == 4


async def test_send_and_process_span_attributes(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bus = make_bus(trail, provider)
    received: list[Message] = []

    async def handle(message: Message) -> None:
        received.append(message)

    bus.subscribe("planner", handle)
    message = Message(
        "researcher",
        "planner",
        MessageType.COMMAND,
        {"secret": "do not trace me"},
        priority=Priority.HIGH,
        correlation_id="conv-7",
        reply_to="researcher",
        ttl_seconds=60,
    )
    await bus.send(message)
    [send] = by_name(exporter.get_finished_spans(), "send planner")
    [process] = by_name(exporter.get_finished_spans(), "process planner")
    common = {
        "messaging.system": "audit_plugin",
        "messaging.destination.name": "planner",
        "messaging.message.id": message.message_id,
        "messaging.message.conversation_id": "conv-7",
        "messaging.audit_plugin.from_agent": "researcher",
        "messaging.audit_plugin.message_type": "COMMAND",
        "messaging.audit_plugin.priority": "HIGH",
        "messaging.audit_plugin.reply_to": "researcher",
        "messaging.audit_plugin.ttl": 60,
        "messaging.audit_plugin.retry_count": 0,
    }
    assert dict(send.attributes or {}) == {
        **common,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
    }
    assert dict(process.attributes or {}) == {
        **common,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
    }
    assert send.status.status_code is StatusCode.UNSET
    assert send.instrumentation_scope is not None
    assert send.instrumentation_scope.name == "audit_plugin"
    assert send.instrumentation_scope.schema_url == Schemas.V1_44_0.value
    # the payload is stored in the record, never in a span
    assert all("do not trace me" not in str(value) for value in (send.attributes or {}).values())
    assert received[0].headers["traceparent"].startswith("00-")


def test_attribute_names_are_current_semantic_conventions() -> None:
    """Our names equal the semantic-conventions package's, and none of them is deprecated there."""
    assert t.MESSAGING_SYSTEM == messaging_attributes.MESSAGING_SYSTEM
    assert t.MESSAGING_OPERATION_NAME == messaging_attributes.MESSAGING_OPERATION_NAME
    assert t.MESSAGING_OPERATION_TYPE == messaging_attributes.MESSAGING_OPERATION_TYPE
    assert t.MESSAGING_DESTINATION_NAME == messaging_attributes.MESSAGING_DESTINATION_NAME
    assert t.MESSAGING_MESSAGE_ID == messaging_attributes.MESSAGING_MESSAGE_ID
    assert t.MESSAGING_MESSAGE_CONVERSATION_ID == messaging_attributes.MESSAGING_MESSAGE_CONVERSATION_ID
    assert t.ERROR_TYPE == error_attributes.ERROR_TYPE
    operation_types = messaging_attributes.MessagingOperationTypeValues
    assert {t.SEND, t.PROCESS} == {operation_types.SEND.value, operation_types.PROCESS.value}

    source = inspect.getsource(messaging_attributes)
    deprecated = set(re.findall(r'^\w+: Final = "([^"]+)"\n"""\nDeprecated', source, re.MULTILINE))
    assert "messaging.operation" in deprecated  # the parse works
    deprecated_values = set(re.findall(r'= "(\w+)"\n\s*"""Deprecated', source))
    assert "publish" in deprecated_values
    ours = {name for name in vars(t).values() if isinstance(name, str) and name.startswith(("messaging.", "error."))}
    assert ours.isdisjoint(deprecated)
    assert {t.SEND, t.PROCESS}.isdisjoint(deprecated_values)


async def test_opt_in_payload_goes_into_the_send_span(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bus = MessageBus(tracer_provider=provider)
    bus.register(AuditPlugin(trail, tracer_provider=provider, trace_payload=True))
    await bus.send(Message("a", "b", MessageType.EVENT, {"k": [1, 2]}))
    [send] = by_name(exporter.get_finished_spans(), "send b")
    assert send.attributes is not None
    assert send.attributes[t.PAYLOAD] == '{"k": [1, 2]}'


async def test_failed_delivery_shows_every_attempt_and_ends_in_error(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bus = make_bus(trail, provider, max_retries=2)

    async def broken(message: Message) -> None:
        raise RuntimeError("model unavailable")

    bus.subscribe("b", broken)
    message = Message("a", "b", MessageType.COMMAND)
    receipt = await bus.send(message)
    assert receipt.status is MessageStatus.FAILED
    spans = exporter.get_finished_spans()
    [send] = by_name(spans, "send b")
    attempts = by_name(spans, "process b")
    assert [a.attributes[t.RETRY_COUNT] for a in attempts] == [0, 1, 2]  # type: ignore[index]
    for attempt in attempts:
        assert attempt.parent is not None
        assert attempt.parent.span_id == send.context.span_id
        assert attempt.status.status_code is StatusCode.ERROR
        assert attempt.attributes[t.ERROR_TYPE] == "RuntimeError"  # type: ignore[index]
        assert [event.name for event in attempt.events] == ["exception"]
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description == receipt.error_message
    assert send.attributes[t.ERROR_TYPE] == "FAILED"  # type: ignore[index]
    assert send.attributes[t.RETRY_COUNT] == 2  # type: ignore[index]

    await trail.flush()
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert (record.status, record.retry_count) == (MessageStatus.FAILED, 2)
    assert (record.trace_id, record.span_id) == hex_ids(send)


async def test_retry_that_succeeds_keeps_the_send_span_ok(
    provider: TracerProvider, exporter: InMemorySpanExporter, tmp_path: object
) -> None:
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path}/audit.db") as trail:
        bus = make_bus(trail, provider, max_retries=3)
        calls = 0

        async def flaky(message: Message) -> None:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ConnectionError("try again")

        bus.subscribe("b", flaky)
        receipt = await bus.send(Message("a", "b", MessageType.COMMAND))
    assert (receipt.status, receipt.retry_count) == (MessageStatus.DELIVERED, 2)
    spans = exporter.get_finished_spans()
    [send] = by_name(spans, "send b")
    codes = [a.status.status_code for a in by_name(spans, "process b")]
    assert codes == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert send.status.status_code is StatusCode.UNSET
    assert send.attributes[t.RETRY_COUNT] == 2  # type: ignore[index]
    assert t.ERROR_TYPE not in (send.attributes or {})


async def test_expired_message_ends_in_error_without_processing(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bus = make_bus(trail, provider)

    async def handle(message: Message) -> None:
        raise AssertionError("an expired message must not be handled")

    bus.subscribe("b", handle)
    old = datetime.now(UTC) - timedelta(seconds=10)
    message = Message("a", "b", MessageType.EVENT, timestamp=old, ttl_seconds=1)
    receipt = await bus.send(message)
    assert receipt.status is MessageStatus.EXPIRED
    [send] = exporter.get_finished_spans()
    assert send.name == "send b"
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes[t.ERROR_TYPE] == "EXPIRED"  # type: ignore[index]
    await trail.flush()
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.status is MessageStatus.EXPIRED
    assert record.span_id == hex_ids(send)[1]


async def test_no_subscriber_fails_the_send_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, tmp_path: object
) -> None:
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path}/audit.db") as trail:
        await make_bus(trail, provider).send(Message("a", "nobody", MessageType.EVENT))
    [send] = exporter.get_finished_spans()
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description == "no subscriber for agent 'nobody'"


async def test_refused_message_ends_its_span_and_is_not_sent(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bus = make_bus(trail, provider)
    plugin = bus.plugin_manager.get_plugin("audit")
    handled: list[Message] = []

    async def handle(message: Message) -> None:
        handled.append(message)

    bus.subscribe("b", handle)
    message = Message("a", "b", MessageType.EVENT, {"not json": {1, 2}})
    with pytest.raises(PayloadNotSerializableError):
        await bus.send(message)
    assert handled == []
    assert message.headers == {}
    assert plugin.spans_in_flight == 0
    [send] = exporter.get_finished_spans()
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes[t.ERROR_TYPE] == "audit_plugin.exceptions.PayloadNotSerializableError"  # type: ignore[index]


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt/SystemExit: not an Exception, so the bus does not retry it."""


async def test_interrupted_delivery_ends_span_and_records_failure(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bus = make_bus(trail, provider)
    plugin = bus.plugin_manager.get_plugin("audit")

    async def handle(message: Message) -> None:
        raise Interrupt

    bus.subscribe("b", handle)
    message = Message("a", "b", MessageType.EVENT)
    with pytest.raises(Interrupt):
        await bus.send(message)
    assert plugin.spans_in_flight == 0
    spans = exporter.get_finished_spans()
    [send] = by_name(spans, "send b")
    [process] = by_name(spans, "process b")
    assert send.status.status_code is StatusCode.ERROR
    assert process.attributes[t.ERROR_TYPE] == f"{__name__}.Interrupt"  # type: ignore[index]
    await trail.flush()
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.status is MessageStatus.FAILED
    assert record.error_message == "delivery interrupted by Interrupt"


async def test_cancelled_send_leaves_nothing_in_flight(
    provider: TracerProvider, exporter: InMemorySpanExporter, tmp_path: object
) -> None:
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path}/audit.db") as trail:
        bus = make_bus(trail, provider)
        plugin = bus.plugin_manager.get_plugin("audit")
        started = asyncio.Event()

        async def slow(message: Message) -> None:
            started.set()
            await asyncio.sleep(60)

        bus.subscribe("b", slow)
        message = Message("a", "b", MessageType.EVENT)
        task = asyncio.create_task(bus.send(message))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert plugin.spans_in_flight == 0
        await trail.flush()
        record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.status is MessageStatus.FAILED
    process = by_name(exporter.get_finished_spans(), "process b")[0]
    assert process.attributes[t.ERROR_TYPE] == "asyncio.exceptions.CancelledError"  # type: ignore[index]


async def test_baggage_travels_with_the_message(
    provider: TracerProvider, exporter: InMemorySpanExporter, tmp_path: object
) -> None:
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path}/audit.db") as trail:
        bus = make_bus(trail, provider)
        seen: list[object] = []

        async def handle(message: Message) -> None:
            seen.append(baggage.get_baggage("tenant"))

        bus.subscribe("b", handle)
        token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            message = Message("a", "b", MessageType.EVENT)
            await bus.send(message)
        finally:
            otel_context.detach(token)
    assert seen == ["acme"]
    assert message.headers["baggage"] == "tenant=acme"


async def test_no_sdk_configured_still_audits(trail: MessageAuditTrail) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "a test set a global SDK"
    bus = make_bus(trail, None)

    bus.subscribe("b", noop)
    message = Message("a", "b", MessageType.EVENT, correlation_id="c")
    assert (await bus.send(message)).status is MessageStatus.DELIVERED
    assert "traceparent" not in message.headers
    await trail.flush()
    [record] = await trail.get_conversation_history("c")
    assert record.status is MessageStatus.DELIVERED
    assert (record.trace_id, record.span_id) == (None, None)


async def test_sampling_off_records_without_ids_and_propagates_the_decision(
    trail: MessageAuditTrail, exporter: InMemorySpanExporter
) -> None:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bus = make_bus(trail, provider)

    bus.subscribe("b", noop)
    message = Message("a", "b", MessageType.EVENT, correlation_id="c")
    assert (await bus.send(message)).status is MessageStatus.DELIVERED
    assert exporter.get_finished_spans() == ()
    flags = int(message.headers["traceparent"].rsplit("-", 1)[1], 16)
    assert not flags & 1  # the "not sampled" decision travels on, so downstream honours it
    await trail.flush()
    [record] = await trail.get_conversation_history("c")
    assert record.status is MessageStatus.DELIVERED
    assert (record.trace_id, record.span_id) == (None, None)


async def test_trace_url_from_record_and_trail(
    database_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    template = "http://localhost:16686/trace/{trace_id}?uiFind={span_id}"
    async with MessageAuditTrail(database_url, trace_url_template=template) as trail:
        bus = make_bus(trail, provider)
        await bus.send(Message("a", "nobody", MessageType.EVENT))
        await trail.flush()
        [record] = await trail.query_messages()
        [send] = exporter.get_finished_spans()
        trace_id, span_id = hex_ids(send)
        assert trail.trace_url(record) == f"http://localhost:16686/trace/{trace_id}?uiFind={span_id}"
        assert trail.trace_url(trace_id) == f"http://localhost:16686/trace/{trace_id}?uiFind="


def test_trace_url_helper() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    grafana = 'http://grafana/explore?left={"queries":[{"query":"{trace_id}"}]}'
    assert t.trace_url(trace_id, grafana) == 'http://grafana/explore?left={"queries":[{"query":"' + trace_id + '"}]}'
    assert t.trace_url(trace_id.upper(), "http://t/{trace_id}") == f"http://t/{trace_id}"
    with pytest.raises(InvalidFieldError, match="template"):
        t.trace_url(trace_id, "http://jaeger/trace/")
    with pytest.raises(InvalidFieldError, match="trace_id"):
        t.trace_url("not-a-trace-id", "http://t/{trace_id}")


def test_trail_reads_the_template_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/audit.db"
    monkeypatch.setenv(t.TRACE_URL_ENV, "http://tempo/{trace_id}")
    assert MessageAuditTrail(url).trace_url_template == "http://tempo/{trace_id}"
    assert MessageAuditTrail(url, trace_url_template="http://x/{trace_id}").trace_url_template == "http://x/{trace_id}"
    monkeypatch.setenv(t.TRACE_URL_ENV, "http://tempo/")
    with pytest.raises(InvalidFieldError, match=t.TRACE_URL_ENV):
        MessageAuditTrail(url)
    monkeypatch.delenv(t.TRACE_URL_ENV)
    trail = MessageAuditTrail(url)
    assert trail.trace_url_template is None
    assert trail.trace_url("4bf92f3577b34da6a3ce929d0e0e4736") is None


def test_console_example_prints_one_connected_trace() -> None:
    example = Path(__file__).parent.parent / "examples" / "tracing_console.py"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    span_lines = [line for line in result.stdout.splitlines() if " span " in line and "parent" in line]
    assert len(span_lines) == 9  # the researcher's step, 4 sends, 4 handler runs
    [header] = [line for line in result.stdout.splitlines() if line.startswith("audit records of trace ")]
    trace_id = header.removeprefix("audit records of trace ").rstrip(":")
    links = re.findall(r"http://localhost:16686/trace/(\w+)\?uiFind=(\w+)", result.stdout)
    assert len(links) == 4
    assert {trace for trace, _ in links} == {trace_id}
    assert {span for _, span in links} <= {line.split(" span ")[1].split()[0] for line in span_lines}


GLOBAL_SDK_SCRIPT = """
import asyncio, json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType

async def main():
    async with MessageAuditTrail(sys.argv[1]) as trail:
        bus = MessageBus()
        bus.register(AuditPlugin(trail))
        async def handle(message): pass
        bus.subscribe("b", handle)
        await bus.send(Message("a", "b", MessageType.EVENT))  # before any SDK: no span, no ids
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)  # configured late, as apps often do
        await bus.send(Message("a", "b", MessageType.EVENT))
        await trail.flush()
        finished = exporter.get_finished_spans()
        print(json.dumps({
            "record_span_ids": sorted(str(r.span_id) for r in await trail.query_messages()),
            "send_span_ids": [format(s.context.span_id, "016x") for s in finished if s.name == "send b"],
            "names": sorted(s.name for s in finished),
        }))

asyncio.run(main())
"""


def test_global_sdk_configured_after_the_bus_is_used(tmp_path: Path) -> None:
    """The default set-up: no providers passed, the application sets the global SDK (maybe late)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/audit.db"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", GLOBAL_SDK_SCRIPT, url], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["names"] == ["process b", "send b"]
    [send_span_id] = seen["send_span_ids"]
    assert sorted(seen["record_span_ids"]) == sorted(["None", send_span_id])
