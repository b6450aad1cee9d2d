"""``AuditMiddleware``: every message a FastStream broker publishes or consumes, in an audit trail.

Put it in ``middlewares=[...]`` of any FastStream broker or router (Redis,
NATS, RabbitMQ, Kafka, MQTT), like FastStream's own ``TelemetryMiddleware``::

    broker = RedisBroker(url, middlewares=[AuditMiddleware(trail, agent="billing")])

Publish side (``publish_scope``): the PENDING record is queued before the
message leaves; in ``"commit"`` durability the publish waits for its commit
(write-ahead). The record's id, sender and type travel in ``audit-*``
headers, next to the W3C trace context. A publish the broker refuses turns
the record FAILED.

Consume side (``consume_scope`` + ``after_processed``): the handler runs in a
CONSUMER span joined to the producer's trace; when it ends, the outcome the
acknowledgement middleware is about to send (see
:mod:`~audit_plugin.integrations.faststream.outcome`) is recorded as one
status operation whose id comes from the broker's identity of the message,
so a redelivery never counts twice, and the record is created if the
producer's never came (an unaudited publisher) or is not stored yet. In
``"commit"`` durability the outcome is committed before the message is
acked: a consumer that dies in between gets the message again, and the
store recognises the operation.

Tracing: one PRODUCER span per publish and one CONSUMER span per handler
run. When FastStream's ``TelemetryMiddleware`` is installed before this one
(outer), its ``publish``/``process`` spans are used instead of starting
ours, so each message still has one span of each kind and the record's
``trace_id`` is the trace FastStream exports.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage, SkipMessage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from audit_plugin import validation as v
from audit_plugin.durability import CommitWaits, Durability
from audit_plugin.exceptions import AuditError, TrailStateError
from audit_plugin.integrations.faststream.fields import (
    FROM_AGENT_HEADER,
    MESSAGE_ID_HEADER,
    MESSAGE_TYPE_HEADER,
    consume_destination,
    delivery_count,
    messaging_system,
    published_message,
    received_message,
    record_id_for,
    trace_headers,
)
from audit_plugin.integrations.faststream.outcome import Outcome, consume_outcome, describe
from audit_plugin.messages import Message, MessageStatus
from audit_plugin.metrics import PipelineMetrics
from audit_plugin.records import StatusUpdate
from audit_plugin.tracing import MESSAGING_SYSTEM, ProcessTracer, SendTracer, sampled_ids
from audit_plugin.trail import MessageAuditTrail

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

log = logging.getLogger(__name__)

FASTSTREAM_TRACER = "opentelemetry.instrumentation.faststream"
"""Instrumentation scope of FastStream's ``TelemetryMiddleware`` spans."""

_CONSUMED_HERE: ContextVar[str | None] = ContextVar("audit_faststream_consumed_here", default=None)
"""Id of the last message whose consume outcome this task recorded.

FastStream's test brokers run the handler inside ``publish()`` and re-raise
its error there; that error is the handler's outcome (already recorded),
not a publish the broker refused.
"""

_NACK_MEMORY = 100_000
"""Most messages whose NACK count is remembered locally (brokers that do not count deliveries)."""


class AuditMiddleware:
    """FastStream middleware factory that records every message in ``trail``.

    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail`.
    :param agent: the agent this broker speaks for: ``from_agent`` of what it publishes.
    :param durability: ``"commit"`` (default: a publish waits for its PENDING
        record's commit, an ack waits for the outcome's commit) or
        ``"buffered"`` (queue and go on), as for :class:`~audit_plugin.AuditPlugin`.
    :param commit_timeout: seconds a publish or ack waits on the store before
        going on without it (counted in ``commit_timeouts``); ``None``: forever.
    :param tracer_provider: where this middleware's PRODUCER/CONSUMER spans go
        (the global provider by default; ``NoOpTracerProvider()`` for none).
        Spans of FastStream's ``TelemetryMiddleware``, installed before this
        one, are used instead of new ones.
    :param meter_provider: for the audit pipeline's health metrics.
    :param trace_payload: also put the JSON payload in the PRODUCER span (off by default).
    """

    def __init__(
        self,
        trail: MessageAuditTrail,
        *,
        agent: str,
        durability: Durability = "commit",
        commit_timeout: float | None = 30.0,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        trace_payload: bool = False,
    ) -> None:
        self.trail = trail
        self.agent: str = v.check_text("agent", agent)  # type: ignore[assignment]
        self.commits = CommitWaits(trail, durability, commit_timeout)
        self.send_tracer = SendTracer(tracer_provider, record_payload=trace_payload)
        self.process_tracer = ProcessTracer(tracer_provider)
        self._nacks: OrderedDict[str, int] = OrderedDict()
        PipelineMetrics.for_provider(meter_provider).watch(trail)

    def __call__(self, msg: Any | None, /, *, context: ContextRepo) -> _AuditScope:
        return _AuditScope(msg, context=context, audit=self)

    @property
    def commit_timeouts(self) -> int:
        """Publishes and acks that went on without their commit because the store was too slow."""
        return self.commits.commit_timeouts

    # -- recording ------------------------------------------------------------------

    async def record_published(self, message: Message, trace_id: str | None, span_id: str | None) -> None:
        """Queue the PENDING record of a message about to leave; wait for it per the durability mode."""
        trail = self.trail
        future = trail.enqueue_message_nowait(message, trace_id=trace_id, span_id=span_id)
        if future is None:  # queue full under "block" (or a data key to load): wait for space
            enqueued = trail.enqueue_message(
                message, trace_id=trace_id, span_id=span_id, timeout=self.commits.commit_timeout
            )
            await self.commits.put_and_settle(enqueued, message.message_id, before_delivery=True)
            return
        # A record the store refuses for good stops the publish (commit mode): nothing leaves unrecorded.
        waiting = self.commits.settle(future, message.message_id, on_refused=_nothing_to_undo)
        if waiting is not None:
            await waiting

    async def record_publish_failure(self, message: Message, exc: BaseException) -> None:
        """The broker refused the publish: the record is FAILED with the broker's error."""
        update = StatusUpdate.build(
            message.message_id,
            MessageStatus.FAILED,
            None,
            f"publish failed: {describe(exc)}",
            None,
            operation_id=f"{message.message_id}:publish",
        )
        try:
            future = await self.trail.enqueue_status(update, timeout=self.commits.commit_timeout)
        except AuditError:
            return  # dropped or the trail is closed: the writer counted and logged it
        await self._settled(future, message.message_id)

    async def record_consumed(
        self,
        message: Message,
        outcome: Outcome,
        count: int | None,
        trace_id: str | None,
        span_id: str | None,
        *,
        producer_recorded: bool,
    ) -> None:
        """Record one consume attempt's outcome (a retry or the final status), deduplicated by operation id.

        In ``"commit"`` durability, a message whose producer recorded it
        (``producer_recorded``: it came with ``audit-message-id``) normally
        finds its record stored, so the outcome goes as a plain status update
        and its commit is awaited; only if that found no record (the
        producer's is not committed yet, or went to another store) is the
        message recorded from what the consumer saw, with the outcome
        (:meth:`~audit_plugin.MessageAuditTrail.enqueue_outcome`). Every
        other case takes that path at once: it never loses the outcome.
        """
        message_id = message.message_id
        if outcome.is_retry:
            attempt = count if count is not None else self._count_nack(message_id)
            operation_id, retries = f"{message_id}:retry:{attempt}", attempt
        else:
            retries = count - 1 if count is not None else self._nacks.pop(message_id, 0)
            operation_id = f"{message_id}:outcome"
        delivered_at = datetime.now(UTC) if outcome.status is MessageStatus.DELIVERED else None
        report = _OutcomeReport(
            message, outcome.status, delivered_at, outcome.error, retries, operation_id, trace_id, span_id
        )
        if not producer_recorded or self.commits.durability != "commit":
            await self._record_outcome(report)
            return
        update = StatusUpdate.build(
            message_id, outcome.status, delivered_at, outcome.error, retries, operation_id=operation_id
        )
        try:
            future = self.trail.enqueue_status_nowait(update) or await self.trail.enqueue_status(
                update, timeout=self.commits.commit_timeout
            )
        except AuditError:
            future = None  # no room for the update in time: the full path decides
        if future is not None:
            await self._settled(future, message_id)
        if future is None or not _applied(future):
            await self._record_outcome(report)

    async def _record_outcome(self, report: _OutcomeReport) -> None:
        try:
            future = await self.trail.enqueue_outcome(
                report.message,
                report.status,
                delivered_at=report.delivered_at,
                error_message=report.error,
                retry_count=report.retries,
                operation_id=report.operation_id,
                trace_id=report.trace_id,
                span_id=report.span_id,
                timeout=self.commits.commit_timeout,
            )
        except TrailStateError:
            log.error(
                "audit trail closed: outcome %s of message %s not recorded", report.status, report.message.message_id
            )
            return
        except AuditError:
            return  # dropped for lack of space: counted in trail.writer_stats and logged by the writer
        await self._settled(future, report.message.message_id)

    async def _settled(self, future: asyncio.Future[Any], message_id: str) -> None:
        """Wait for ``future``'s commit in ``"commit"`` durability (bounded by ``commit_timeout``); else return."""
        waiting = self.commits.settle(future, message_id)
        if waiting is not None:
            await waiting

    def _count_nack(self, message_id: str) -> int:
        attempt = self._nacks.pop(message_id, 0) + 1
        self._nacks[message_id] = attempt
        if len(self._nacks) > _NACK_MEMORY:
            self._nacks.popitem(last=False)
        return attempt


@dataclass(frozen=True, slots=True)
class _OutcomeReport:
    """What :meth:`MessageAuditTrail.enqueue_outcome` needs for one consume attempt."""

    message: Message
    status: MessageStatus
    delivered_at: datetime | None
    error: str | None
    retries: int
    operation_id: str
    trace_id: str | None
    span_id: str | None


def _applied(future: asyncio.Future[Any]) -> bool:
    """Whether a committed status update found its record (``False`` also when it failed or timed out)."""
    return future.done() and not future.cancelled() and future.exception() is None and bool(future.result())


class _AuditScope(BaseMiddleware):
    """The middleware of one publish or one received message (FastStream builds one per message)."""

    def __init__(self, msg: Any | None, /, *, context: ContextRepo, audit: AuditMiddleware) -> None:
        super().__init__(msg, context=context)
        self.audit = audit
        self.consumed: StreamMessage[Any] | None = None
        self.record: Message | None = None
        self.process_context: otel_context.Context | None = None
        self.trace_ids: tuple[str | None, str | None] = (None, None)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        audit = self.audit
        message = published_message(cmd, audit.agent)  # a typed error refuses the publish
        reused = _current_faststream_span(SpanKind.PRODUCER)
        span: Span | None = None
        if reused is not None:
            trace_ids = sampled_ids(reused)
            message.headers.update(trace_headers(cmd.headers))  # its context is already in the headers
        else:
            span = self._start_send_span(message, cmd)
            trace_ids = sampled_ids(span)
            SendTracer.inject(span, message)
        message.headers[MESSAGE_ID_HEADER] = message.message_id
        message.headers[FROM_AGENT_HEADER] = message.from_agent
        message.headers[MESSAGE_TYPE_HEADER] = message.message_type.value
        try:
            await audit.record_published(message, *trace_ids)
        except BaseException as exc:  # cannot be recorded: the message must not leave
            if span is not None:
                SendTracer.abandon(span, exc)
            raise
        cmd.add_headers(message.headers, override=True)
        try:
            result = await call_next(cmd)
        except Exception as exc:
            if span is not None:
                SendTracer.abandon(span, exc)
            if _CONSUMED_HERE.get() != message.message_id:
                await audit.record_publish_failure(message, exc)
            raise
        if span is not None:
            span.end()
        return result

    def _start_send_span(self, message: Message, cmd: Any) -> Span | None:
        attributes = {MESSAGING_SYSTEM: messaging_system(cmd)}
        if self.process_context is None:  # a publish outside a handler: child of the current span
            return self.audit.send_tracer.start(message, attributes)
        token = otel_context.attach(self.process_context)  # a handler's reply: child of its CONSUMER span
        try:
            return self.audit.send_tracer.start(message, attributes)
        finally:
            otel_context.detach(token)

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        destination = consume_destination(msg)
        record_id = record_id_for(msg, destination)
        try:
            body = await msg.decode()
        except Exception:  # the handler will meet the same error; the record keeps the raw bytes
            body = msg.body
        message = received_message(msg, body, record_id, destination)
        self.consumed, self.record = msg, message
        reused = _current_faststream_span(SpanKind.CONSUMER)
        if reused is not None:
            self._note_trace(message, reused)
            self.process_context = otel_context.get_current()
            return await call_next(msg)
        count = delivery_count(msg)
        retries = count - 1 if count is not None else 0
        attributes = {MESSAGING_SYSTEM: messaging_system(msg)}
        with self.audit.process_tracer.processing(message, retries, attributes) as span:
            self._note_trace(message, span)
            self.process_context = otel_context.get_current()
            try:
                return await call_next(msg)
            except (AckMessage, SkipMessage) as exc:  # control flow, not an error of the span
                control = exc
        raise control

    def _note_trace(self, message: Message, consumer_span: Span | None) -> None:
        """The record's trace ids: the producer's span from the headers, else the consumer span."""
        producer = trace.get_current_span(propagate.extract(message.headers)).get_span_context()
        if producer.is_valid and producer.trace_flags.sampled:
            self.trace_ids = (format(producer.trace_id, "032x"), format(producer.span_id, "016x"))
        else:
            self.trace_ids = sampled_ids(consumer_span)

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        msg, message = self.consumed, self.record
        if msg is None or message is None:  # a publish, or a message FastStream could not parse
            return False
        handler = self.context.get_local("handler_")
        outcome = consume_outcome(exc_val, msg.committed, getattr(handler, "ack_policy", None))
        if outcome is None:
            return False
        try:
            await self.audit.record_consumed(
                message,
                outcome,
                delivery_count(msg),
                *self.trace_ids,
                producer_recorded=MESSAGE_ID_HEADER in msg.headers,
            )
        except Exception:  # auditing never changes what the broker is told
            log.exception("recording the outcome of message %s failed", message.message_id)
        _CONSUMED_HERE.set(message.message_id)
        return False


def _current_faststream_span(kind: SpanKind) -> Span | None:
    """The current span if FastStream's ``TelemetryMiddleware`` started it with ``kind``, else ``None``."""
    span = trace.get_current_span()
    if not span.is_recording() or getattr(span, "kind", None) is not kind:
        return None
    scope = getattr(span, "instrumentation_scope", None)
    return span if getattr(scope, "name", None) == FASTSTREAM_TRACER else None


def _nothing_to_undo(exc: BaseException) -> None:
    """A refused publish record has no span of ours to end (FastStream's own span sees the raise)."""
