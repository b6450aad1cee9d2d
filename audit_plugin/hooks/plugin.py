"""``AuditPlugin``: the hook implementation a bus registers to audit every message.

Durability modes:

* ``"commit"`` (default, write-ahead auditing): ``audit_pre_send`` returns an
  awaitable that completes when the PENDING record is committed, so a message
  is never delivered before its record is durable; the outcome is committed
  before ``send()`` returns. Concurrent senders share commits (group commit).
* ``"buffered"``: the hooks only queue the record (in-memory work) and
  ``send()`` goes on at once. Records are committed by the writer in the
  background, normally within one batch time; a crash loses at most what was
  accepted and not yet committed (``trail.writer_stats.queue_depth``, never
  more than the trail's ``max_queue`` operations, the batch being written included).

A store outage never breaks ``send()``. In ``"commit"`` mode the plugin waits
up to ``commit_timeout`` seconds for the commit, then lets the message go on,
counting it in ``commit_timeouts`` and logging a warning: the record stays
queued and is written when the store returns (the writer retries with
backoff). Under the ``"block"`` overflow policy a sender waits for queue
space at most ``commit_timeout`` seconds too (both modes); a record that
still finds no space is dropped, counted in ``trail.writer_stats.dropped``
and logged, and the message goes on. A message the trail *cannot* record (payload not JSON, a NUL
character) is refused: ``send()`` raises the typed validation error before
anything is delivered. The same holds for a record the store refuses for
good in ``"commit"`` mode (:class:`~audit_plugin.exceptions.AuditStoreError`):
the message is not delivered.

Tracing: each message gets one ``send {to_agent}`` PRODUCER span (see
:mod:`audit_plugin.telemetry.tracing`), started in ``audit_pre_send``, injected into
``message.headers`` and ended in ``audit_post_delivery``. Its ids are stored
in the record. Spans in flight are kept by ``message_id``; a message refused
before sending ends its span at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

from audit_plugin.hooks.durability import CommitWaits, Durability
from audit_plugin.hooks.options import AuditOptionFields, AuditOptions
from audit_plugin.hookspecs import hookimpl
from audit_plugin.model.messages import DeliveryReceipt, Message
from audit_plugin.model.records import StatusUpdate
from audit_plugin.telemetry.metrics import PipelineMetrics, SendMetrics, get_meter
from audit_plugin.telemetry.tracing import SendTracer, sampled_ids
from audit_plugin.trail import MessageAuditTrail

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class AuditPlugin:
    """Records every message a bus sends, and its outcome, in ``trail``.

    :param trail: an initialised :class:`MessageAuditTrail`.
    :param options: durability, commit timeout, tracer and meter providers,
        payload tracing (:class:`~audit_plugin.AuditOptions`; the meter
        provider also gets ``messaging.client.sent.messages``).
    :param overrides: the same options as keywords (``durability="buffered"``),
        applied over ``options``.
    """

    def __init__(
        self,
        trail: MessageAuditTrail,
        *,
        options: AuditOptions | None = None,
        **overrides: Unpack[AuditOptionFields],
    ) -> None:
        self.options = options = AuditOptions.resolve(options, overrides)
        self.trail = trail
        self._commits = CommitWaits(trail, options)
        self.durability: Durability = options.durability
        self.commit_timeout = options.commit_timeout
        self._tracer = SendTracer(options.tracer_provider, record_payload=options.trace_payload)
        self._in_flight: dict[str, Span] = {}
        self._send_metrics = SendMetrics(get_meter(options.meter_provider))
        PipelineMetrics.for_provider(options.meter_provider).watch(trail)

    @property
    def commit_timeouts(self) -> int:
        """Messages that went on without their commit because the store was too slow."""
        return self._commits.commit_timeouts

    @property
    def spans_in_flight(self) -> int:
        """Send spans started and not yet ended (messages whose outcome is not known yet)."""
        return len(self._in_flight)

    @hookimpl
    def audit_pre_send(self, message: Message) -> Any:
        return self.record_send(message)

    def record_send(self, message: Message, *, attributes: Mapping[str, Any] | None = None) -> Any:
        """:meth:`audit_pre_send` with extra attributes for the message's send span.

        For integrations that describe a message in more semantic
        conventions than messaging (an agent framework's ``gen_ai.*``
        attributes); ``attributes`` add to (or replace) the messaging ones.
        """
        span = self._tracer.start(message, dict(attributes) if attributes else None)  # None while tracing is off
        trace_id, span_id = sampled_ids(span)
        try:
            waiting = self._record(message, trace_id, span_id)
        except BaseException as exc:  # refused (cannot be recorded): the message will not be sent
            if span is not None:
                self._tracer.abandon(span, exc)
            raise
        self._tracer.inject(span, message)
        if span is not None:
            self._in_flight[message.message_id] = span
        return waiting

    @hookimpl
    def audit_post_delivery(self, message: Message, receipt: DeliveryReceipt) -> Any:
        return self.record_delivery(message, receipt)

    def record_delivery(self, message: Message, receipt: DeliveryReceipt, *, operation_id: str | None = None) -> Any:
        """:meth:`audit_post_delivery` with an identity for the outcome (``operation_id``).

        For integrations whose outcome may be reported more than once (by
        both ends of a call, or again after a redelivery): the store applies
        an ``operation_id`` once per message.
        """
        span = self._in_flight.pop(message.message_id, None)
        if span is not None:
            self._tracer.end(span, receipt)
        self._send_metrics.record(message, receipt)
        update = StatusUpdate.build(
            receipt.message_id,
            receipt.status,
            receipt.delivered_at,
            receipt.error_message,
            receipt.retry_count,
            operation_id=operation_id,
        )
        return self._record_status(update, message)

    @hookimpl
    def audit_retry(self, message: Message, attempt: int, error: BaseException) -> Any:
        """Append a lifecycle event for the retry (status stays PENDING; retry count and error recorded)."""
        update = StatusUpdate.retry(message.message_id, attempt, f"{type(error).__name__}: {error}")
        return self._record_status(update, message)

    def record_received(self, message: Message, *, trace_id: str | None = None, span_id: str | None = None) -> Any:
        """Record a message that reached this process from outside the bus (an integration's receiving side).

        Same durability as :meth:`audit_pre_send` (in ``"commit"`` mode the
        returned awaitable completes when the PENDING record is committed, at
        most ``commit_timeout`` later), but no send span is started: the
        caller passes the ids of the span it received the message in.
        Returns ``None`` when there is nothing to wait for.
        """
        return self._record(message, trace_id, span_id)

    def record_outcome(
        self,
        message: Message,
        receipt: DeliveryReceipt,
        *,
        operation_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> Any:
        """Record the outcome of a message received from outside the bus (durability as above).

        Through :meth:`MessageAuditTrail.enqueue_outcome`: ``message`` is
        stored first if no record of it is (with ``trace_id``/``span_id``),
        so the outcome is kept even when its record never arrived. Unlike
        :meth:`audit_post_delivery` it ends no send span and counts no sent
        message.
        """
        enqueued = self.trail.enqueue_outcome(
            message,
            receipt.status,
            delivered_at=receipt.delivered_at,
            error_message=receipt.error_message,
            retry_count=receipt.retry_count,
            operation_id=operation_id,
            trace_id=trace_id,
            span_id=span_id,
            timeout=self.commit_timeout,
        )
        return self._put_and_wait(enqueued, message)

    def _record(self, message: Message, trace_id: str | None, span_id: str | None) -> Any:
        """Queue ``message``'s record; return what the caller awaits per the durability (``None``: nothing).

        Raises, before anything is queued, if the message cannot be recorded.
        """
        future = self.trail.enqueue_message_nowait(message, trace_id=trace_id, span_id=span_id)
        if future is None:  # queue full under "block", or a data key to load first: wait (back-pressure)
            enqueued = self.trail.enqueue_message(
                message, trace_id=trace_id, span_id=span_id, timeout=self.commit_timeout
            )
            return self._put_and_wait(enqueued, message, before_delivery=True)
        return self._settle(future, message, before_delivery=True)

    def _record_status(self, update: StatusUpdate, message: Message) -> Any:
        future = self.trail.enqueue_status_nowait(update)
        if future is None:
            return self._put_and_wait(self.trail.enqueue_status(update, timeout=self.commit_timeout), message)
        return self._settle(future, message)

    def _settle(self, future: asyncio.Future[Any], message: Message, *, before_delivery: bool = False) -> Any:
        return self._commits.settle(future, message.message_id, self._refused(message) if before_delivery else None)

    def _put_and_wait(self, enqueued: Any, message: Message, *, before_delivery: bool = False) -> Any:
        return self._commits.put_and_settle(
            enqueued, message.message_id, self._refused(message), before_delivery=before_delivery
        )

    def _refused(self, message: Message) -> Callable[[BaseException], None]:
        def refused(exc: BaseException) -> None:  # the message will not go on: end its span now
            span = self._in_flight.pop(message.message_id, None)
            if span is not None:
                self._tracer.abandon(span, exc)

        return refused
