"""OpenTelemetry spans for audited messages, and links from records to traces.

Follows the OpenTelemetry messaging semantic conventions v1.44:

* :class:`SendTracer` starts one ``send {to_agent}`` span (kind PRODUCER) per
  message, as a child of whatever span is current when ``send()`` is called,
  and injects its context into ``message.headers`` with the globally
  configured propagator (W3C ``traceparent``/``tracestate`` and ``baggage`` by
  default). The span ends when the outcome is known: status ERROR and
  ``error.type`` for FAILED and EXPIRED.
* :class:`ProcessTracer` runs a handler inside ``process {to_agent}`` (kind
  CONSUMER) whose parent is the context extracted from ``message.headers``;
  one span per delivery attempt, so retries are visible.

Only ``opentelemetry-api`` is needed. Without an SDK (or with a
``NoOpTracerProvider``) no span is created at all: the current context and
baggage still go into the headers and come out in the handler, records carry
no ids, and the cost is a few microseconds per message. A record carries
``trace_id``/``span_id`` only when its span is *sampled*, so every id in the
store names a span the SDK exported.

``messaging.system`` is ``"audit_plugin"``; fields specific to this bus live
under ``messaging.audit_plugin.*``. Payloads never go into spans unless the
user opts in (``AuditPlugin(trail, trace_payload=True)``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.model import validation as v
from audit_plugin.model.messages import DeliveryReceipt, Message, MessageStatus

if TYPE_CHECKING:
    from audit_plugin.model.records import AuditRecord

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
"""Semantic conventions version the spans and metrics follow."""

INSTRUMENTATION_NAME = "audit_plugin"

MESSAGING_SYSTEM_VALUE = "audit_plugin"
"""``messaging.system`` of every span and messaging metric: the audit-plugin bus protocol."""

# Semantic-convention attribute names (messaging, v1.44). Kept here as plain
# strings: the runtime depends on opentelemetry-api only, not on the
# semantic-conventions package (the tests check these against it).
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_MESSAGE_CONVERSATION_ID = "messaging.message.conversation_id"
ERROR_TYPE = "error.type"

# Bus-specific attributes (namespace messaging.{messaging.system}.*).
FROM_AGENT = "messaging.audit_plugin.from_agent"
MESSAGE_TYPE = "messaging.audit_plugin.message_type"
PRIORITY = "messaging.audit_plugin.priority"
REPLY_TO = "messaging.audit_plugin.reply_to"
TTL = "messaging.audit_plugin.ttl"
"""Time to live in seconds (``Message.ttl_seconds``)."""
RETRY_COUNT = "messaging.audit_plugin.retry_count"
"""Send span: retries the delivery took (set at the end). Process span: which retry this attempt is (0 = first)."""
PAYLOAD = "messaging.audit_plugin.payload"
"""The JSON payload; only with ``record_payload=True``."""

SEND = "send"
PROCESS = "process"

TRACE_URL_ENV = "AUDIT_TRACE_URL_TEMPLATE"
"""Environment variable a trail reads its trace-viewer URL template from when none is given."""


def _package_version() -> str:
    try:
        return version("audit-plugin")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0"


INSTRUMENTATION_VERSION = _package_version()


def get_tracer(tracer_provider: trace.TracerProvider | None) -> trace.Tracer:
    """This package's tracer from ``tracer_provider``, or from the global provider when ``None``.

    With the global provider the tracer is a proxy, so an SDK configured after
    the bus or plugin was created is still used.
    """
    return trace.get_tracer(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION, tracer_provider, schema_url=SCHEMA_URL)


def message_attributes(message: Message, operation: str) -> dict[str, Any]:
    """The span attributes describing ``message`` for ``operation`` (``"send"`` or ``"process"``)."""
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: MESSAGING_SYSTEM_VALUE,
        MESSAGING_OPERATION_NAME: operation,
        MESSAGING_OPERATION_TYPE: operation,
        MESSAGING_DESTINATION_NAME: message.to_agent,
        MESSAGING_MESSAGE_ID: message.message_id,
        FROM_AGENT: message.from_agent,
        MESSAGE_TYPE: message.message_type.value,
        PRIORITY: message.priority.value,
    }
    if message.correlation_id is not None:
        attributes[MESSAGING_MESSAGE_CONVERSATION_ID] = message.correlation_id
    if message.reply_to is not None:
        attributes[REPLY_TO] = message.reply_to
    if message.ttl_seconds is not None:
        attributes[TTL] = message.ttl_seconds
    return attributes


def error_type(exc: BaseException) -> str:
    """``error.type`` for an exception: its fully qualified class name (``builtins.`` omitted)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def mark_error(span: Span, kind: str, description: str | None) -> None:
    """Set ``error.type`` and status ERROR on a recording span."""
    span.set_attribute(ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, description))


def sampled_ids(span: Span | None) -> tuple[str | None, str | None]:
    """``(trace_id, span_id)`` as lowercase hex for a recorded, sampled span, else ``(None, None)``.

    Without an SDK the API hands back the *parent's* span context (possibly a
    sampled one from upstream): not recording, so no ids, since the record's
    span id must name its own send span.
    """
    if span is None or not span.is_recording():
        return None, None
    span_context = span.get_span_context()
    if not span_context.trace_flags.sampled:
        return None, None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


_NO_OP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


class _Tracing:
    """A tracer plus a cheap test for "spans would be no-ops here"."""

    def __init__(self, tracer_provider: trace.TracerProvider | None) -> None:
        self._provider = tracer_provider
        self._sdk_seen = tracer_provider is not None and not isinstance(tracer_provider, _NO_OP_PROVIDERS)
        self.tracer = get_tracer(tracer_provider)

    @property
    def active(self) -> bool:
        """False with no SDK configured (the global proxy) or a ``NoOpTracerProvider``.

        Then every span would be a non-recording stand-in for its parent, so
        the callers skip creating one and propagate the current context as
        is: the same headers and context, at a fraction of the cost. The
        global provider is checked per message until an SDK shows up (it can
        be set once, so that answer is kept).
        """
        if self._sdk_seen:
            return True
        if self._provider is not None or not _global_provider_may_be_set():
            return False
        self._sdk_seen = not isinstance(trace.get_tracer_provider(), _NO_OP_PROVIDERS)
        return self._sdk_seen


def _global_provider_may_be_set() -> bool:
    """Cheap pre-check before ``trace.get_tracer_provider()`` (which reads ``os.environ`` each call).

    Reads the API's module global, as its own ``ProxyTracer`` does; if a
    future API version renames it, this answers True and the public call
    decides: slower, never wrong.
    """
    return getattr(trace, "_TRACER_PROVIDER", True) is not None


class SendTracer(_Tracing):
    """Starts and ends the PRODUCER span of each message.

    :param tracer_provider: where spans go (the global provider when ``None``).
    :param record_payload: put the JSON payload in ``messaging.audit_plugin.payload``
        (off by default: payloads often hold personal data).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None, *, record_payload: bool = False) -> None:
        super().__init__(tracer_provider)
        self.record_payload = record_payload

    def start(self, message: Message, attributes: dict[str, Any] | None = None) -> Span | None:
        """Start ``send {to_agent}`` as a child of the current context; ``None`` when tracing is off.

        ``attributes`` replace or add to the ones describing ``message`` (a
        broker integration sets its own ``messaging.system``).
        """
        if not self.active:
            return None
        extra = attributes
        attributes = message_attributes(message, SEND)
        if extra:
            attributes.update(extra)
        if self.record_payload:
            attributes[PAYLOAD] = json.dumps(message.payload, default=str)
        return self.tracer.start_span(f"send {message.to_agent}", kind=SpanKind.PRODUCER, attributes=attributes)

    @staticmethod
    def inject(span: Span | None, message: Message) -> None:
        """Write the span's context (or the current one) and the current baggage into ``message.headers``.

        Without a span and with an empty current context (no parent span, no
        baggage) there is nothing to propagate, and the propagators are not called.
        """
        if span is None:
            if otel_context.get_current():
                propagate.inject(message.headers)
            return
        propagate.inject(message.headers, context=trace.set_span_in_context(span))

    @staticmethod
    def end(span: Span, receipt: DeliveryReceipt) -> None:
        """End the span with the message's outcome."""
        if span.is_recording():
            span.set_attribute(RETRY_COUNT, receipt.retry_count)
            if receipt.status in (MessageStatus.FAILED, MessageStatus.EXPIRED):
                mark_error(span, receipt.status.value, receipt.error_message)
        span.end()

    @staticmethod
    def abandon(span: Span, exc: BaseException) -> None:
        """End a span whose message was refused before it was sent."""
        if span.is_recording():
            span.record_exception(exc)
            mark_error(span, error_type(exc), str(exc))
        span.end()


class ProcessTracer(_Tracing):
    """Runs handlers inside CONSUMER spans (used by the reference bus and the broker integrations)."""

    async def run(self, message: Message, retries: int, handler: Callable[[Message], Awaitable[Any]]) -> None:
        """Await ``handler(message)`` inside ``process {to_agent}``, parented by ``message.headers``.

        The span is current while the handler runs, so the handler's own
        spans and further sends nest under it. ``retries`` says which attempt
        this is (0 for the first). An exception (any ``BaseException``,
        cancellation included) is recorded, sets ``error.type`` to its class
        name and status ERROR, and propagates. With tracing off, the
        extracted context (trace context and baggage) is still made current.
        """
        with self.processing(message, retries):
            await handler(message)

    @contextmanager
    def processing(
        self, message: Message, retries: int, attributes: dict[str, Any] | None = None
    ) -> Iterator[Span | None]:
        """The CONSUMER span of one handler run, current inside the ``with`` block (``None`` when tracing is off).

        As :meth:`run`, for callers that run the handler themselves.
        ``attributes`` replace or add to the ones describing ``message``.
        """
        parent = propagate.extract(message.headers)
        if not self.active:
            token = otel_context.attach(parent)
            try:
                yield None
            finally:
                otel_context.detach(token)
            return
        span_attributes = message_attributes(message, PROCESS)
        span_attributes[RETRY_COUNT] = retries
        if attributes:
            span_attributes.update(attributes)
        span = self.tracer.start_span(f"process {message.to_agent}", parent, SpanKind.CONSUMER, span_attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield span
        except BaseException as exc:
            if span.is_recording():
                span.record_exception(exc)
                mark_error(span, error_type(exc), str(exc))
            raise
        finally:
            otel_context.detach(token)
            span.end()


def check_trace_url_template(template: str | None, field: str = "trace_url_template") -> str | None:
    """Validate a trace-viewer URL template: text containing ``{trace_id}``."""
    if template is None:
        return None
    v.check_text(field, template, max_length=None)
    if "{trace_id}" not in template:
        raise InvalidFieldError(field, f"{template!r} has no {{trace_id}} placeholder")
    return template


def trace_url(record_or_trace_id: AuditRecord | str, template: str) -> str | None:
    """The trace-viewer link for a record (or a bare trace id), ``None`` if it has no trace.

    ``template`` holds ``{trace_id}`` and optionally ``{span_id}``, e.g.
    ``http://localhost:16686/trace/{trace_id}?uiFind={span_id}`` (Jaeger).
    Only those two placeholders are replaced, so templates with other braces
    (a Grafana explore URL's JSON) are safe. ``{span_id}`` becomes empty when
    only a trace id is given.
    """
    check_trace_url_template(template, "template")
    if isinstance(record_or_trace_id, str):
        trace_id, span_id = v.check_hex_id("trace_id", record_or_trace_id, 32), None
    else:
        trace_id, span_id = record_or_trace_id.trace_id, record_or_trace_id.span_id
    if trace_id is None:
        return None
    return template.replace("{trace_id}", trace_id).replace("{span_id}", span_id or "")
