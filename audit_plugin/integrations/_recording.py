"""What every integration shares: one :class:`AuditPlugin`, how its awaitables are awaited, and a message's steps.

An adapter sees a message go out or come in, then learns its outcome. The
steps, each applied through the adapter's :class:`Auditor`:

* :meth:`Auditor.send`: a message about to go on (a request, a tool call, a
  handoff) is recorded PENDING in a ``send {to_agent}`` PRODUCER span,
  committed first in ``"commit"`` durability;
* :meth:`Auditor.settle`: its outcome (DELIVERED, FAILED with the reason)
  ends that span;
* :meth:`Auditor.receive`: a message that arrived is recorded PENDING before
  it is handled, with the ids of the span it is handled in;
* :meth:`Auditor.record`: a message whose outcome is known when it is seen
  (a reply, a notification handled) is stored with that outcome in one
  operation, or its outcome applied to the record stored already.

Every outcome carries the adapter's ``operation_id``, so an outcome both
ends of a call report (or a retried report) is applied once. A payload the
trail refuses (too large, not JSON) is stored as a marker instead, so an
odd payload never fails the user's agent. A step whose caller is being
cancelled finishes in the background: cancellation is not delayed, and
nothing queued is lost.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from audit_plugin.exceptions import AuditError
from audit_plugin.hooks.options import AuditOptions
from audit_plugin.hooks.plugin import AuditPlugin
from audit_plugin.integrations.payloads import DegradedBodies, is_payload_error, not_captured
from audit_plugin.model import validation as v
from audit_plugin.model.messages import DeliveryReceipt, Message, MessageStatus
from audit_plugin.telemetry.tracing import sampled_ids
from audit_plugin.trail import MessageAuditTrail

log = logging.getLogger(__name__)

USER = "user"
"""``from_agent`` of what a person (or code that is no agent) asks an agent."""

TOOL_PREFIX = "tool:"
"""A tool an agent calls is the agent ``tool:{name}``."""

MODEL_PREFIX = "model:"
"""The model an agent asks is the agent ``model:{name}``."""

UNKNOWN_AGENT = "unknown"
"""``from_agent``/``to_agent`` when the other side did not say who it is."""


def receipt(message: Message, status: MessageStatus, error: str | None = None, retry_count: int = 0) -> DeliveryReceipt:
    """The receipt of ``message`` with ``status`` (delivery time now when DELIVERED) after ``retry_count`` retries."""
    delivered_at = datetime.now(UTC) if status == MessageStatus.DELIVERED else None
    return DeliveryReceipt(
        message.message_id, status, delivered_at=delivered_at, error_message=error, retry_count=retry_count
    )


def error_text(exc: BaseException) -> str:
    """``"TypeName: message"`` (the type alone when the message is empty)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def storable(value: object, *, max_length: int = v.MAX_TEXT_LENGTH) -> str | None:
    """``value`` if a record can hold it as a name or an id (non-empty storable text), else ``None``."""
    try:
        return v.check_text("name", value, max_length=max_length)
    except AuditError:
        return None


def agent_name(name: object, fallback: str = UNKNOWN_AGENT) -> str:
    """``name`` if a record can hold it as an agent name, else ``fallback``."""
    return storable(name) or fallback


class Auditor:
    """An :class:`AuditPlugin` used by an adapter, the rule for waiting on it, and a message's steps (module docs).

    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail`.
    :param options: the adapter's :class:`~audit_plugin.AuditOptions`.
    :param operation_id: the ``operation_id`` of every outcome this adapter records.
    :param system: the adapter's name in the capture metrics (``messaging.system``).

    In ``"commit"`` durability each record call returns an awaitable that
    completes at commit (bounded by ``commit_timeout``); the adapter awaits
    it before the message goes on. Auditing never changes what the framework
    does: a payload the trail refuses is stored as a not-captured marker and
    counted (:attr:`degraded`); a step that must never break the call
    (:meth:`quietly`) is logged and counted (:attr:`unrecorded`) when it fails.
    """

    def __init__(
        self,
        trail: MessageAuditTrail,
        options: AuditOptions,
        *,
        operation_id: str | None = None,
        system: str = "audit_plugin",
    ) -> None:
        self.plugin = AuditPlugin(trail, options=options)
        self.operation_id = operation_id
        self.system = system
        self.degraded = DegradedBodies(options.meter_provider)
        self.unrecorded = 0
        """Steps that could not be recorded (each logged; the framework's call went on)."""
        self._background: set[asyncio.Task[Any]] = set()

    # -- a message's steps -------------------------------------------------------

    async def send(self, message: Message, attributes: Mapping[str, Any] | None = None) -> None:
        """Record ``message`` PENDING before it goes on, in a send span with ``attributes`` added.

        If the caller is cancelled while the commit is awaited, the message
        never goes on: it is settled FAILED in the background.
        """
        try:
            await self.stored(message, lambda: self.plugin.record_send(message, attributes=attributes))
        except asyncio.CancelledError as exc:
            await self.settle(message, MessageStatus.FAILED, "cancelled before it was sent", cause=exc)
            raise

    async def settle(
        self,
        message: Message,
        status: MessageStatus,
        error: str | None = None,
        *,
        cause: BaseException | None = None,
        retry_count: int = 0,
    ) -> None:
        """Record the outcome of a message :meth:`send` recorded (ends its send span), after ``retry_count`` retries.

        ``cause``: the exception that ended it; a cancellation makes the
        step finish in the background.
        """
        await self.finish(self._delivery(message, status, error, retry_count), cause)

    def settle_soon(self, message: Message, status: MessageStatus, error: str | None = None) -> None:
        """:meth:`settle` from code that cannot await: queued now, its commit awaited in the background."""
        self.finish_later(self._delivery(message, status, error))

    def _delivery(self, message: Message, status: MessageStatus, error: str | None, retry_count: int = 0) -> Any:
        settled = receipt(message, status, error, retry_count)
        return self.plugin.record_delivery(message, settled, operation_id=self.operation_id)

    async def receive(self, message: Message, span: trace.Span | None = None) -> None:
        """Record a message that arrived PENDING, before it is handled in ``span`` (the current span when ``None``)."""
        trace_id, span_id = sampled_ids(span if span is not None else trace.get_current_span())
        await self.stored(message, lambda: self.plugin.record_received(message, trace_id=trace_id, span_id=span_id))

    async def record(
        self,
        message: Message,
        status: MessageStatus = MessageStatus.DELIVERED,
        error: str | None = None,
        *,
        cause: BaseException | None = None,
        span: trace.Span | None = None,
    ) -> None:
        """Store ``message`` with its outcome, or apply the outcome to its stored record, in one operation.

        The record points at ``span`` (the current span when ``None``);
        ``cause`` as in :meth:`settle`.
        """
        trace_id, span_id = sampled_ids(span if span is not None else trace.get_current_span())
        settled = receipt(message, status, error)

        def record() -> Any:
            return self.plugin.record_outcome(
                message, settled, operation_id=self.operation_id, trace_id=trace_id, span_id=span_id
            )

        if isinstance(cause, asyncio.CancelledError):
            self.finish_later(self.stored(message, record))
        else:
            await self.stored(message, record)

    async def stored(self, message: Message, record: Callable[[], Any], cause: BaseException | None = None) -> None:
        """Run ``record()``, a plugin call recording ``message``, and await what it returns (see :meth:`finish`).

        A payload the trail refuses is replaced by a not-captured marker and
        the call made again; a payload kept as a marker or as base64 is
        counted. Anything else ``record()`` raises propagates.
        """
        try:
            await self.finish(record(), cause)
        except AuditError as exc:
            if not is_payload_error(exc):
                raise
            log.warning("audit payload of message %s refused (%s); stored as a marker", message.message_id, exc)
            message.payload = not_captured(str(exc))
            await self.finish(record(), cause)
        self.degraded.note(message.payload, self.system)

    async def quietly(self, message: Message, record: Callable[[], Any], cause: BaseException | None = None) -> None:
        """:meth:`stored`, for a step that must never break the call (an outcome, a received event)."""
        try:
            await self.stored(message, record, cause)
        except Exception:
            self.unrecorded += 1
            log.exception("recording message %s failed", message.message_id)

    # -- waiting -----------------------------------------------------------------

    async def wait(self, result: Any) -> None:
        """Await ``result`` if a plugin call returned an awaitable."""
        if inspect.isawaitable(result):
            await result

    def finish_later(self, result: Any) -> None:
        """Let an awaitable a plugin call returned finish in the background (for cancelled callers)."""
        if not inspect.isawaitable(result):
            return
        task = asyncio.ensure_future(result)
        self._background.add(task)
        task.add_done_callback(self._finished)

    async def finish(self, result: Any, cause: BaseException | None) -> None:
        """Await ``result``, or finish it in the background when ``cause`` is a cancellation."""
        if isinstance(cause, asyncio.CancelledError):
            self.finish_later(result)
        else:
            await self.wait(result)

    async def drain(self) -> None:
        """Wait for the steps finishing in the background (before closing the trail)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording an audit outcome failed", exc_info=task.exception())
