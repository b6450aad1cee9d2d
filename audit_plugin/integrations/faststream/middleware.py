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

Transparency: the broker behaves the same with the middleware as without
it. Whatever FastStream publishes or consumes is recorded, never refused:
the body is captured from the bytes FastStream sends or received (see
:mod:`~audit_plugin.integrations.faststream.body`; a custom decoder is never
run by the middleware), a body the store cannot keep is recorded as base64
or as a marker and counted (``audit_plugin.capture.degraded``,
:attr:`AuditMiddleware.degraded_bodies`), and an error while recording is
logged, never raised into the publish or the handler. Two things stop a
publish, both in ``"commit"`` durability only: the store refusing the record
for good, and a closed trail. A batch consumer records one record per
message of the batch; a message FastStream could not parse, or that no
handler took, is recorded with the outcome the broker was told (FAILED with
the reason under the default ack policy).

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
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage, SkipMessage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from audit_plugin.exceptions import AuditError, TrailStateError
from audit_plugin.hooks.durability import CommitWaits
from audit_plugin.hooks.options import AuditOptionFields, AuditOptions
from audit_plugin.integrations.faststream.body import encoded, is_plain_dict
from audit_plugin.integrations.faststream.fields import (
    FROM_AGENT_HEADER,
    IN_REPLY_TO_HEADER,
    MESSAGE_ID_HEADER,
    MESSAGE_TYPE_HEADER,
    Received,
    consume_destination,
    delivery_count,
    messaging_system,
    published_message,
    received_items,
    received_message,
    record_id_for,
    redelivers,
    trace_headers,
)
from audit_plugin.integrations.faststream.outcome import Outcome, consume_outcome, describe
from audit_plugin.integrations.payloads import Body, DegradedBodies, is_payload_error, not_captured
from audit_plugin.model import validation as v
from audit_plugin.model.messages import Message, MessageStatus, MessageType
from audit_plugin.model.records import StatusUpdate
from audit_plugin.telemetry.metrics import PipelineMetrics
from audit_plugin.telemetry.tracing import MESSAGING_SYSTEM, ProcessTracer, SendTracer, sampled_ids
from audit_plugin.trail import MessageAuditTrail

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage

log = logging.getLogger(__name__)

T = TypeVar("T")

FASTSTREAM_TRACER = "opentelemetry.instrumentation.faststream"
"""Instrumentation scope of FastStream's ``TelemetryMiddleware`` spans."""

_CONSUMED_HERE: ContextVar[str | None] = ContextVar("audit_faststream_consumed_here", default=None)
"""Id of the last message whose consume outcome this task recorded.

FastStream's test brokers run the handler inside ``publish()`` and re-raise
its error there; that error is the handler's outcome (already recorded),
not a publish the broker refused.
"""

_REQUESTED: ContextVar[str | None] = ContextVar("audit_faststream_requested", default=None)
"""Id of the request this task published last: ``request()`` reads its reply right after, in the same task."""

_NACK_MEMORY = 100_000
"""Most messages whose NACK count is remembered locally (brokers that do not count deliveries)."""

BodySource = Callable[[], Awaitable[Body | None]]
"""Gives the bytes of a body on demand, for a fallback payload (``None``: not known)."""


class AuditMiddleware:
    """FastStream middleware factory that records every message in ``trail``.

    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail`.
    :param agent: the agent this broker speaks for: ``from_agent`` of what it publishes.
    :param options: :class:`~audit_plugin.AuditOptions`: durability
        (``"commit"``, the default: a publish waits for its PENDING record's
        commit, an ack for the outcome's commit; ``"buffered"``: queue and go
        on), commit timeout (publishes and acks that go on without their
        commit are counted in ``commit_timeouts``), tracer provider (spans of
        FastStream's ``TelemetryMiddleware``, installed before this one, are
        used instead of new ones), meter provider, payload tracing.
    :param overrides: the same options as keywords, applied over ``options``.
    """

    def __init__(
        self,
        trail: MessageAuditTrail,
        *,
        agent: str,
        options: AuditOptions | None = None,
        **overrides: Unpack[AuditOptionFields],
    ) -> None:
        self.options = options = AuditOptions.resolve(options, overrides)
        self.trail = trail
        self.agent: str = v.check_text("agent", agent)  # type: ignore[assignment]
        self.commits = CommitWaits(trail, options)
        self.send_tracer = SendTracer(options.tracer_provider, record_payload=options.trace_payload)
        self.process_tracer = ProcessTracer(options.tracer_provider)
        self.degraded = DegradedBodies(options.meter_provider)
        self.unrecorded = 0
        """Messages or outcomes that could not be recorded at all (each logged; FastStream went on)."""
        self._nacks: OrderedDict[str, int] = OrderedDict()
        PipelineMetrics.for_provider(options.meter_provider).watch(trail)

    def __call__(self, msg: Any | None, /, *, context: ContextRepo) -> _AuditScope:
        return _AuditScope(msg, context=context, audit=self)

    @property
    def commit_timeouts(self) -> int:
        """Publishes and acks that went on without their commit because the store was too slow."""
        return self.commits.commit_timeouts

    @property
    def degraded_bodies(self) -> int:
        """Bodies recorded as base64 or as a not-captured marker (also the ``audit_plugin.capture.degraded`` metric)."""
        return self.degraded.count

    # -- payloads -------------------------------------------------------------------

    async def storable(
        self, message: Message, body: BodySource, system: str, queue: Callable[[], Awaitable[T]], *, count: bool
    ) -> T:
        """``queue()`` the record of ``message``, replacing a payload the trail refuses by one it keeps.

        In order: the payload as captured; the body's bytes read back as
        FastStream encoded them; the same bytes as base64; a not-captured
        marker saying why. ``count``: this record is the message's own (not a
        consumer's fallback copy), so a payload that is not readable JSON is
        counted. Raises what ``queue()`` raises for anything but the payload
        (a closed trail, a store refusing for good).
        """
        try:
            result = await queue()
        except AuditError as exc:
            if not is_payload_error(exc):
                raise
            reason = str(exc)
        else:
            if count:
                self.degraded.note(message.payload, system)
            return result
        try:
            data = await body()
        except Exception as exc:  # the codec cannot encode it: FastStream will say so itself
            data, reason = None, f"{reason}; not encodable: {describe(exc)}"
        fallbacks = [data.payload(), data.base64()] if data is not None else []
        for fallback in fallbacks:
            message.payload = fallback
            try:
                result = await queue()
            except AuditError as exc:
                if not is_payload_error(exc):
                    raise
                reason = str(exc)
            else:
                self.degraded.note(message.payload, system)
                return result
        message.payload = data.not_captured(reason) if data is not None else not_captured(reason)
        result = await queue()
        self.degraded.note(message.payload, system)
        return result

    # -- recording ------------------------------------------------------------------

    async def record_published(
        self, message: Message, body: BodySource, system: str, trace_id: str | None, span_id: str | None
    ) -> None:
        """Queue the PENDING record of a message about to leave; wait for it per the durability mode."""
        trail = self.trail

        async def queue() -> asyncio.Future[Any] | None:
            return trail.enqueue_message_nowait(message, trace_id=trace_id, span_id=span_id)

        future = await self.storable(message, body, system, queue, count=True)
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

    async def record_answered(self, request_id: str) -> None:
        """A reply to request ``request_id`` came back: the request was delivered (once, whoever says so first)."""
        update = StatusUpdate.build(
            request_id, MessageStatus.DELIVERED, datetime.now(UTC), None, None, operation_id=f"{request_id}:outcome"
        )
        try:
            future = self.trail.enqueue_status_nowait(update) or await self.trail.enqueue_status(
                update, timeout=self.commits.commit_timeout
            )
        except AuditError:
            return  # dropped or the trail is closed: the writer counted and logged it
        await self._settled(future, request_id)

    async def record_consumed(
        self,
        message: Message,
        outcome: Outcome,
        count: int | None,
        trace_id: str | None,
        span_id: str | None,
        *,
        producer_recorded: bool,
        body: Body | None = None,
        system: str = "faststream",
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
        ``body``: the bytes the payload was read from, for a fallback payload.
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
            message,
            outcome.status,
            delivered_at,
            outcome.error,
            retries,
            operation_id,
            trace_id,
            span_id,
            body,
            system,
            own_record=not producer_recorded,
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
        async def queue() -> asyncio.Future[Any]:
            return await self.trail.enqueue_outcome(
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

        async def body() -> Body | None:
            return report.body

        try:
            future = await self.storable(report.message, body, report.system, queue, count=report.own_record)
        except TrailStateError:
            log.error(
                "audit trail closed: outcome %s of message %s not recorded", report.status, report.message.message_id
            )
            self.unrecorded += 1
            return
        except AuditError:
            self.unrecorded += 1
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
    body: Body | None
    system: str
    own_record: bool
    """No producer recorded the message: the consumer's record is its only one."""


def _applied(future: asyncio.Future[Any]) -> bool:
    """Whether a committed status update found its record (``False`` also when it failed or timed out)."""
    return future.done() and not future.cancelled() and future.exception() is None and bool(future.result())


@dataclass(frozen=True, slots=True)
class _Consumed:
    """One received message (of a batch, or the only one) and its record."""

    item: Received
    record: Message


class _AuditScope(BaseMiddleware):
    """The middleware of one publish or one received message (FastStream builds one per message)."""

    def __init__(self, msg: Any | None, /, *, context: ContextRepo, audit: AuditMiddleware) -> None:
        super().__init__(msg, context=context)
        self.audit = audit
        self.consumed: StreamMessage[Any] | None = None
        self.answers: str | None = None
        """On a requester: the id of the request a received reply answers (the request is then DELIVERED)."""
        self.received: Sequence[_Consumed] = ()
        self.process_context: otel_context.Context | None = None
        self.trace_ids: tuple[str | None, str | None] = (None, None)

    @property
    def record(self) -> Message | None:
        """The record of the received message (the first of a batch), ``None`` on the publish side."""
        return self.received[0].record if self.received else None

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        audit = self.audit
        system = messaging_system(cmd)
        payload, body = await _published_payload(cmd, call_next)
        request = self.record if str(cmd.publish_type.value) == "REPLY" else None
        message = published_message(cmd, audit.agent, payload, request=request)
        reused = _current_faststream_span(SpanKind.PRODUCER)
        span: Span | None = None
        if reused is not None:
            trace_ids = sampled_ids(reused)
            message.headers.update(trace_headers(cmd.headers))  # its context is already in the headers
        else:
            span = self._start_send_span(message, system)
            trace_ids = sampled_ids(span)
            SendTracer.inject(span, message)
        message.headers[MESSAGE_ID_HEADER] = message.message_id
        message.headers[FROM_AGENT_HEADER] = message.from_agent
        message.headers[MESSAGE_TYPE_HEADER] = message.message_type.value
        if request is not None and message.message_type is MessageType.RESPONSE:
            message.headers[IN_REPLY_TO_HEADER] = request.message_id
        try:
            await audit.record_published(message, body, system, *trace_ids)
        except BaseException as exc:  # the store refused it for good, or the trail is closed: it must not leave
            if span is not None:
                SendTracer.abandon(span, exc)
            raise
        cmd.add_headers(message.headers, override=True)
        _add_native_headers(cmd.batch_bodies, message.headers)
        is_request = message.message_type is MessageType.QUERY
        if is_request:
            _REQUESTED.set(message.message_id)
        try:
            result = await call_next(cmd)
        except Exception as exc:
            if span is not None:
                SendTracer.abandon(span, exc)
            # A request that got no reply in time was published all the same: its consumer records its outcome.
            unanswered = is_request and isinstance(exc, TimeoutError)
            if _CONSUMED_HERE.get() != message.message_id and not unanswered:
                await _never_raising(audit.record_publish_failure(message, exc), audit, message.message_id)
            raise
        if span is not None:
            span.end()
        return result

    def _start_send_span(self, message: Message, system: str) -> Span | None:
        attributes = {MESSAGING_SYSTEM: system}
        if self.process_context is None:  # a publish outside a handler: child of the current span
            return self.audit.send_tracer.start(message, attributes)
        token = otel_context.attach(self.process_context)  # a handler's reply: child of its CONSUMER span
        try:
            return self.audit.send_tracer.start(message, attributes)
        finally:
            otel_context.detach(token)

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        self._receive(msg)
        message = self.received[0].record
        reused = _current_faststream_span(SpanKind.CONSUMER)
        if reused is not None:
            self._note_trace(message, reused)
            self.process_context = otel_context.get_current()
            return await call_next(msg)
        count = delivery_count(self.received[0].item.raw)
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

    def _receive(self, msg: StreamMessage[Any]) -> None:
        """Read the records of ``msg`` (one per message of a batch) from its bytes; FastStream decodes nothing here."""
        destination = consume_destination(msg)
        fallback_id = str(msg.message_id or msg.correlation_id or "")
        self.consumed = msg
        self.answers = _REQUESTED.get() if str(getattr(msg.source_type, "value", "")) == "RESPONSE" else None
        received = [
            _Consumed(
                item,
                received_message(
                    item, msg, record_id_for(item, destination, fallback_id), destination, self.audit.agent
                ),
            )
            for item in received_items(msg)
        ]
        if self.answers is not None:  # a reply from an unaudited server says nothing of its request: link it here
            for consumed in received:
                consumed.record.reply_to = consumed.record.reply_to or self.answers
        self.received = received

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
        handler = self.context.get_local("handler_")
        if self.consumed is None and not await self._receive_unparsed(handler, exc_val):
            return False  # a publish, or nothing to record
        msg = self.consumed
        assert msg is not None
        outcome = consume_outcome(exc_val, msg.committed, getattr(handler, "ack_policy", None))
        audit, system = self.audit, messaging_system(msg)
        if outcome is None and isinstance(exc_val, asyncio.CancelledError):
            outcome = Outcome(MessageStatus.PENDING, "handler cancelled")  # redelivered, or lost (below)
        if outcome is None:
            return False
        if outcome.is_retry and not redelivers(msg, handler):  # nothing comes back: this is the message's end
            outcome = Outcome(MessageStatus.FAILED, f"{outcome.error}; {system} does not redeliver it")
        elif isinstance(exc_val, asyncio.CancelledError):
            return False  # the broker delivers it again: that delivery records the outcome
        steps = [
            _never_raising(
                audit.record_consumed(
                    consumed.record,
                    outcome,
                    delivery_count(consumed.item.raw),
                    *self.trace_ids,
                    producer_recorded=MESSAGE_ID_HEADER in consumed.item.headers,
                    body=consumed.item.body,
                    system=system,
                ),
                audit,
                consumed.record.message_id,
            )
            for consumed in self.received
        ]
        if self.answers is not None and outcome.status is MessageStatus.DELIVERED:  # the reply proves it arrived
            steps.append(_never_raising(audit.record_answered(self.answers), audit, self.answers))
        if len(steps) == 1:  # no task switch of its own: the ack follows as soon as it would without auditing
            await steps[0]
        else:  # a batch: its records' commits are awaited together
            await asyncio.gather(*steps)
        _CONSUMED_HERE.set(self.received[0].record.message_id)
        return False

    async def _receive_unparsed(self, handler: Any, exc: BaseException | None) -> bool:
        """A message that failed before any handler ran (parsing, filters, no suitable handler): read it again.

        The subscriber's own parser (the one its acknowledgement falls back
        to) reads the raw message, so the outcome the broker is told is
        recorded with the reason. ``False`` when there is nothing to record.
        """
        parser = getattr(handler, "_parser", None)
        if self.msg is None or not isinstance(exc, Exception) or parser is None:
            return False
        try:
            msg = await parser(self.msg)
            self._receive(msg)
        except Exception:
            self.audit.unrecorded += 1
            log.exception("a message that could not be parsed was not recorded")
            return False
        self._note_trace(self.received[0].record, None)
        return True


async def _published_payload(cmd: Any, call_next: Callable[..., Any]) -> tuple[dict[str, Any], BodySource]:
    """The payload of a publish command, and where its bytes come from for a fallback; never raises.

    A plain dict is taken as it is (the store checks it; a dict it refuses
    is captured again from FastStream's encoding of it). Anything else is
    encoded as the producer will encode it. A batch is one payload,
    ``{"batch": [...]}``.
    """
    bodies = cmd.batch_bodies
    if len(bodies) > 1:
        return {"batch": [(await _encoded_payload(body, call_next))[0] for body in bodies]}, _no_bytes
    body = bodies[0] if bodies else None
    if is_plain_dict(body):

        async def encode() -> Body | None:
            return await encoded(body, call_next)

        return body, encode
    payload, data = await _encoded_payload(body, call_next)

    async def known() -> Body | None:
        return data

    return payload, known


async def _encoded_payload(body: Any, call_next: Callable[..., Any]) -> tuple[dict[str, Any], Body | None]:
    try:
        data = await encoded(body, call_next)
    except Exception as exc:  # FastStream will fail this publish itself; the record says why
        return not_captured(f"not encodable: {describe(exc)}"), None
    return data.payload(), data


def _add_native_headers(bodies: Sequence[Any], headers: dict[str, str]) -> None:
    """A native broker message (``aio_pika.Message``) is sent as it is, without the command's headers: give it ours.

    Without them its consumer could not find the publisher's record (a second record, the first left PENDING).
    """
    for body in bodies:
        native = getattr(body, "headers", None)
        if isinstance(native, dict) and isinstance(getattr(body, "body", None), bytes):
            native.update(headers)


async def _no_bytes() -> Body | None:
    return None


async def _never_raising(step: Awaitable[None], audit: AuditMiddleware, message_id: str) -> None:
    """Run a recording step; an error is logged and counted, never raised into FastStream."""
    try:
        await step
    except Exception:
        audit.unrecorded += 1
        log.exception("recording message %s failed", message_id)


def _current_faststream_span(kind: SpanKind) -> Span | None:
    """The current span if FastStream's ``TelemetryMiddleware`` started it with ``kind``, else ``None``."""
    span = trace.get_current_span()
    if not span.is_recording() or getattr(span, "kind", None) is not kind:
        return None
    scope = getattr(span, "instrumentation_scope", None)
    return span if getattr(scope, "name", None) == FASTSTREAM_TRACER else None


def _nothing_to_undo(exc: BaseException) -> None:
    """A refused publish record has no span of ours to end (FastStream's own span sees the raise)."""
