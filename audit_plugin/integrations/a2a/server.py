"""Server side: :class:`AuditedAgentExecutor` wraps any A2A ``AgentExecutor``.

The a2a-sdk has no server-side interceptor; what an agent receives and
emits passes through its ``AgentExecutor`` and the ``EventQueue`` it is
given, so those are wrapped.

* The incoming message is recorded (PENDING) before the wrapped executor
  runs; in ``"commit"`` durability it is committed first. ``from_agent``
  is the caller: the ``audit-from-agent`` header an audited client sends
  (or the same key in the request metadata), else the authenticated user's
  name, else ``"unknown"``; ``to_agent`` is this agent.
* Each event the executor enqueues (message, task, status or artifact
  update) is recorded from this agent to the caller before it goes on
  (PENDING, committed first in ``"commit"`` mode), and DELIVERED once the
  SDK's queue accepted it.
* The incoming message's outcome is its task's: DELIVERED when the agent
  replies with a message, or the task completes or waits for input/auth;
  FAILED with the reason when the executor raises, is cancelled, or the task
  ends failed, rejected or canceled. A task still running when ``execute``
  returns keeps the message PENDING until a later event (from ``execute``
  or ``cancel``) ends it, or the next message for the task arrives (then
  it is DELIVERED: the agent took it and moved on).
* Auditing never changes what the request handler returns, streams or
  raises: fields and payloads the store cannot keep are recorded cleaned up
  or as base64 (see :mod:`~audit_plugin.integrations.a2a.records`), and an
  outcome that cannot be recorded is logged, never raised into the agent.
* Tracing: the executor runs in a ``process {agent}`` CONSUMER span whose
  parent is the caller's W3C trace context (``traceparent``/``tracestate``/
  ``baggage`` from the HTTP headers, else from the request or message
  metadata). The incoming record carries that span's ids; each emitted
  event gets a ``send {caller}`` PRODUCER span under it, like a message on
  the reference bus.
"""

from __future__ import annotations

import asyncio
from typing import Any, Unpack

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.types import AgentCard
from a2a.types import Message as A2AMessage
from google.protobuf.json_format import MessageToDict
from opentelemetry import propagate, trace

from audit_plugin.exceptions import AuditError, FieldTypeError
from audit_plugin.hooks.options import AuditOptionFields, AuditOptions
from audit_plugin.integrations._recording import UNKNOWN_AGENT, Auditor, error_text, receipt
from audit_plugin.integrations.a2a.records import (
    FROM_AGENT_HEADER,
    OUTCOME_OPERATION,
    TASK_ID_HEADER,
    Event,
    event_record,
    outcome,
    request_record,
    task_id_of,
)
from audit_plugin.model import validation as v
from audit_plugin.model.messages import Message, MessageStatus
from audit_plugin.telemetry.tracing import ProcessTracer, sampled_ids
from audit_plugin.trail import MessageAuditTrail


class AuditedAgentExecutor(AgentExecutor):
    """An ``AgentExecutor`` that records what its agent receives and emits in ``trail``.

    :param executor: the agent's own executor.
    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail`.
    :param agent: this agent's name, or its ``AgentCard`` (its ``name`` is used).
    :param options: durability (``"commit"``: records committed before the
        agent runs and before each event goes on), commit timeout, tracer and
        meter providers, payload tracing (:class:`~audit_plugin.AuditOptions`);
        ``overrides``: the same as keywords.

    Pass it to ``DefaultRequestHandler(agent_executor=...)`` in place of the
    wrapped executor.
    """

    def __init__(
        self,
        executor: AgentExecutor,
        trail: MessageAuditTrail,
        *,
        agent: str | AgentCard,
        options: AuditOptions | None = None,
        **overrides: Unpack[AuditOptionFields],
    ) -> None:
        options = AuditOptions.resolve(options, overrides)
        if not isinstance(executor, AgentExecutor):
            raise FieldTypeError("executor", "a2a AgentExecutor", executor)
        self.executor = executor
        self.agent = v.check_text("agent", agent.name if isinstance(agent, AgentCard) else agent)
        self.auditor = Auditor(trail, options, system="a2a")
        self._tracer = ProcessTracer(options.tracer_provider)
        self._open: dict[str, Message] = {}
        """Incoming messages whose task has not ended yet, by task id."""

    @property
    def open_tasks(self) -> int:
        """Incoming messages still PENDING because their task has not ended."""
        return len(self._open)

    @property
    def degraded_bodies(self) -> int:
        """Payloads recorded as base64 or as a not-captured marker (also ``audit_plugin.capture.degraded``)."""
        return self.auditor.degraded.count

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Record the incoming message, run the wrapped executor on an audited queue, record the outcome."""
        caller = caller_of(context)
        answering = context.message.message_id if context.message is not None else None
        queue = AuditedEventQueue(event_queue, self, caller=caller, context_id=context.context_id, reply_to=answering)
        if context.message is None:  # nothing arrived (a resumed task): only the events are recorded
            await self.executor.execute(context, queue)
            return
        incoming = request_record(context.message, from_agent=caller, to_agent=self.agent)
        incoming.headers.update(trace_carrier(context))
        task_id = context.task_id or incoming.headers.get(TASK_ID_HEADER)
        recorded = False

        async def handle(_message: Message) -> None:
            nonlocal recorded
            trace_id, span_id = sampled_ids(trace.get_current_span())
            await self.auditor.stored(
                incoming, lambda: self.auditor.plugin.record_received(incoming, trace_id=trace_id, span_id=span_id)
            )
            recorded = True
            if task_id:
                await self._settle_task(task_id, MessageStatus.DELIVERED, None)  # the agent took it and moved on
                self._open[task_id] = incoming
            await self.executor.execute(context, queue)

        try:
            await self._tracer.run(incoming, 0, handle)
        except BaseException as exc:
            if recorded and (not task_id or self._open.pop(task_id, None) is not None):
                reason = (
                    "task canceled (execution cancelled)"
                    if isinstance(exc, asyncio.CancelledError)
                    else f"agent {self.agent!r} raised {error_text(exc)}"
                )
                failed = receipt(incoming, MessageStatus.FAILED, reason)
                await self.auditor.quietly(
                    incoming,
                    lambda: self.auditor.plugin.record_outcome(incoming, failed, operation_id=OUTCOME_OPERATION),
                    exc,
                )
            raise
        if task_id is None:
            await self._record_outcome(incoming, MessageStatus.DELIVERED, None)
        elif not queue.emitted or queue.replied:  # handled without a task, or answered with a message
            await self._settle_task(task_id, MessageStatus.DELIVERED, None)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Run the wrapped executor's ``cancel`` on an audited queue (its CANCELED status ends the task's message)."""
        queue = AuditedEventQueue(event_queue, self, caller=caller_of(context), context_id=context.context_id)
        await self.executor.cancel(context, queue)

    async def _settle_task(self, task_id: str, status: MessageStatus, error: str | None) -> None:
        incoming = self._open.pop(task_id, None)
        if incoming is not None:
            await self._record_outcome(incoming, status, error)

    async def _record_outcome(self, incoming: Message, status: MessageStatus, error: str | None) -> None:
        settled = receipt(incoming, status, error)
        await self.auditor.quietly(
            incoming, lambda: self.auditor.plugin.record_outcome(incoming, settled, operation_id=OUTCOME_OPERATION)
        )

    async def observe(self, event: Event) -> None:
        """Settle the incoming message of the event's task if the event ends it."""
        settled = outcome(event)
        task_id = task_id_of(event)
        if settled is not None and task_id is not None:
            await self._settle_task(task_id, *settled)


class AuditedEventQueue(EventQueue):
    """The queue the wrapped executor sees: records each event, then passes it on to the SDK's queue."""

    def __init__(
        self,
        inner: EventQueue,
        owner: AuditedAgentExecutor,
        *,
        caller: str,
        context_id: str | None,
        reply_to: str | None = None,
    ) -> None:
        self.inner = inner
        self.owner = owner
        self.caller = caller
        self.context_id = context_id
        self.reply_to = reply_to
        self.emitted = 0
        self.replied = False

    async def enqueue_event(self, event: Event) -> None:
        record = event_record(
            event, from_agent=self.owner.agent, to_agent=self.caller, context_id=self.context_id, reply_to=self.reply_to
        )
        if record is None:
            await self.inner.enqueue_event(event)
            return
        auditor = self.owner.auditor
        plugin = auditor.plugin
        await auditor.stored(record, lambda: plugin.audit_pre_send(message=record))
        # The incoming message's outcome is recorded before the SDK can hand the ending event to the caller:
        # whoever sees the task end finds it in the trail.
        await self.owner.observe(event)
        try:
            await self.inner.enqueue_event(event)
        except BaseException as exc:
            failed = receipt(record, MessageStatus.FAILED, f"the A2A event queue refused it: {error_text(exc)}")
            await auditor.quietly(
                record, lambda: plugin.record_delivery(record, failed, operation_id=OUTCOME_OPERATION), exc
            )
            raise
        delivered = receipt(record, MessageStatus.DELIVERED)
        await auditor.quietly(record, lambda: plugin.record_delivery(record, delivered, operation_id=OUTCOME_OPERATION))
        self.emitted += 1
        self.replied = self.replied or isinstance(event, A2AMessage)

    def __getattr__(self, name: str) -> Any:
        """Anything else (``tap``, ``close``...) is the SDK queue's."""
        return getattr(self.inner, name)


def caller_of(context: RequestContext) -> str:
    """Who sent the request: the ``audit-from-agent`` header or metadata, the authenticated user, or ``"unknown"``."""
    named = _headers(context).get(FROM_AGENT_HEADER) or _metadata(context).get(FROM_AGENT_HEADER)
    if isinstance(named, str):
        try:
            return v.check_text(FROM_AGENT_HEADER, named) or UNKNOWN_AGENT
        except AuditError:
            return UNKNOWN_AGENT  # a caller's bad name must not fail its request; it is not trusted anyway
    user = context.call_context.user if context.call_context is not None else None
    if user is not None and user.is_authenticated and user.user_name:
        return user.user_name
    return UNKNOWN_AGENT


def trace_carrier(context: RequestContext) -> dict[str, str]:
    """The caller's trace context: the propagator's fields from the HTTP headers, else from the request metadata."""
    fields = propagate.get_global_textmap().fields
    for source in (_headers(context), _metadata(context)):
        carrier = {key: value for key in fields if isinstance(value := source.get(key), str)}
        if carrier:
            return carrier
    return {}


def _headers(context: RequestContext) -> dict[str, Any]:
    call = context.call_context
    headers = call.state.get("headers") if call is not None else None
    return {str(key).lower(): value for key, value in headers.items()} if isinstance(headers, dict) else {}


def _metadata(context: RequestContext) -> dict[str, Any]:
    metadata = dict(context.metadata)
    if context.message is not None and context.message.HasField("metadata"):
        metadata = MessageToDict(context.message.metadata) | metadata
    return metadata
