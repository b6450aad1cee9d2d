"""A three-agent conversation, its spans printed to the console, and the audit records that point at them.

The researcher asks the planner; the planner asks the calculator inside its
handler; answers flow back. Every message is one ``send`` span (PRODUCER)
and each handler run one ``process`` span (CONSUMER), all in one trace; every
audit record carries its send span's ids and a link to the trace.

Run::

    .venv/bin/python examples/tracing_console.py            # one line per span
    .venv/bin/python examples/tracing_console.py --json     # the SDK's full JSON for each span

Export to a collector (Jaeger, Tempo, the OpenTelemetry Collector) over OTLP/HTTP::

    .venv/bin/pip install -e ".[examples]"        # opentelemetry-sdk and the OTLP/HTTP exporter
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 .venv/bin/python examples/tracing_console.py

Needs ``opentelemetry-sdk`` (in the ``test`` and ``examples`` extras); the
OTLP exporter is optional.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType

TRACE_URL_TEMPLATE = "http://localhost:16686/trace/{trace_id}?uiFind={span_id}"  # Jaeger UI


def one_line(span: ReadableSpan) -> str:
    parent = format(span.parent.span_id, "016x") if span.parent else "-" * 16
    kind = span.kind.name if span.kind else "?"
    status = span.status.status_code.name
    return f"{span.name:<20} {kind:<8} span {span.context.span_id:016x}  parent {parent}  {status}\n"


def configure_tracing(json_output: bool) -> TracerProvider:
    """Set the global tracer provider: console always, OTLP when an endpoint is configured."""
    provider = TracerProvider(resource=Resource.create({"service.name": "tracing-console-example"}))
    console = ConsoleSpanExporter() if json_output else ConsoleSpanExporter(formatter=one_line)
    provider.add_span_processor(SimpleSpanProcessor(console))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            print(
                'OTEL_EXPORTER_OTLP_ENDPOINT is set but the exporter is missing: pip install "audit-plugin[examples]"'
            )
        else:  # reads the endpoint, headers and timeout from the standard OTEL_EXPORTER_OTLP_* variables
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            print(f"also exporting over OTLP/HTTP to {os.environ['OTEL_EXPORTER_OTLP_ENDPOINT']}")
    trace.set_tracer_provider(provider)
    return provider


async def conversation(bus: MessageBus) -> None:
    conversation_id = "budget-2026"

    async def researcher(message: Message) -> None:
        print(f"  researcher got: {message.payload}")

    async def planner(message: Message) -> None:
        if message.message_type is MessageType.QUERY:
            ask = Message(
                "planner", "calculator", MessageType.QUERY, {"expr": "1200 * 12"}, correlation_id=conversation_id
            )
            await bus.send(ask)
            answer = Message(
                "planner", "researcher", MessageType.RESPONSE, {"budget": 14400}, correlation_id=conversation_id
            )
            await bus.send(answer)

    async def calculator(message: Message) -> None:
        await bus.send(
            Message("calculator", "planner", MessageType.RESPONSE, {"value": 14400}, correlation_id=conversation_id)
        )

    bus.subscribe("researcher", researcher)
    bus.subscribe("planner", planner)
    bus.subscribe("calculator", calculator)
    with trace.get_tracer("example").start_as_current_span("researcher step"):
        await bus.send(
            Message("researcher", "planner", MessageType.QUERY, {"q": "yearly budget?"}, correlation_id=conversation_id)
        )


async def main(json_output: bool) -> None:
    provider = configure_tracing(json_output)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'audit.db'}"
        async with MessageAuditTrail(url, trace_url_template=TRACE_URL_TEMPLATE) as trail:
            bus = MessageBus()
            bus.register(AuditPlugin(trail))  # global tracer and meter providers
            print("spans, in the order they end:")
            await conversation(bus)
            await trail.flush()
            [first, *_] = await trail.get_conversation_history("budget-2026")
            assert first.trace_id is not None
            print(f"\naudit records of trace {first.trace_id}:")
            for record in await trail.get_trace(first.trace_id):
                print(
                    f"  {record.from_agent:>10} -> {record.to_agent:<10} {record.message_type:<8} {record.status:<9}"
                    f" span {record.span_id}  {trail.trace_url(record)}"
                )
    provider.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print each span as the SDK's full JSON")
    asyncio.run(main(parser.parse_args().json))
