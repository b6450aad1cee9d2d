"""Client side: :class:`AuditClientInterceptor`, an a2a-sdk ``ClientCallInterceptor``.

* ``before`` a ``send_message`` call: the outgoing message is recorded
  (PENDING; committed first in ``"commit"`` durability) from ``agent`` to
  the server's agent-card name, in a ``send {server}`` PRODUCER span whose
  W3C context goes out in the call's headers (``ClientCallContext.
  service_parameters``) with ``audit-from-agent: {agent}``, so an audited
  server joins the trace and knows the caller. A new message with neither
  ``context_id`` nor ``task_id`` gets a ``context_id`` here (in a copy of
  the request: the caller's object is left as it was), so both sides record
  the same conversation id; that random id is the only difference the
  interceptor makes to a call.
* ``after`` each result (``send_message``, streaming events, ``get_task``,
  ``cancel_task``, ``subscribe``): each message, task or update received is
  recorded from the server to ``agent``, DELIVERED; the sent message is
  settled like on the server (DELIVERED on a message reply or a completed /
  input-waiting task, FAILED with the reason on a failed, rejected or
  canceled task). A task still running keeps it PENDING until a later
  result for that task ends it.
* ``after`` is not called when the call raises (a transport error, the
  server's error reply). Wrap the client with :meth:`AuditClientInterceptor.wrap`
  and a raised call records the sent message FAILED with the error before
  the error reaches the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, Unpack

from a2a.client import Client, ClientCallContext, ClientCallInterceptor
from a2a.client.interceptors import AfterArgs, BeforeArgs
from a2a.types import SendMessageRequest
from opentelemetry import propagate, trace

from audit_plugin.hooks.options import AuditOptionFields, AuditOptions
from audit_plugin.integrations._recording import UNKNOWN_AGENT, Auditor, error_text, receipt
from audit_plugin.integrations.a2a.records import (
    FROM_AGENT_HEADER,
    OUTCOME_OPERATION,
    event_record,
    outcome,
    reply_events,
    request_record,
    task_id_of,
)
from audit_plugin.model import validation as v
from audit_plugin.model.messages import DeliveryReceipt, Message, MessageStatus
from audit_plugin.telemetry.tracing import sampled_ids
from audit_plugin.trail import MessageAuditTrail

SEND_METHODS = frozenset({"send_message", "send_message_streaming"})
RESULT_METHODS = SEND_METHODS | {"get_task", "cancel_task", "subscribe"}
"""Calls whose results are recorded."""

_REQUEST_KEY = "audit_plugin.a2a.message_id"
"""``ClientCallContext.state`` key holding the id of the message a call sent."""


class AuditClientInterceptor(ClientCallInterceptor):
    """Records what an A2A client sends and receives in ``trail``.

    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail`.
    :param agent: the name this client agent is recorded under (``from_agent``
        of what it sends, ``to_agent`` of what it receives).
    :param options: durability (``"commit"``: the record is committed before
        the message is sent), commit timeout, tracer and meter providers,
        payload tracing (:class:`~audit_plugin.AuditOptions`); ``overrides``:
        the same as keywords.

    Use: ``client = audit.wrap(await create_client(url, interceptors=[audit]))``.
    """

    def __init__(
        self,
        trail: MessageAuditTrail,
        *,
        agent: str,
        options: AuditOptions | None = None,
        **overrides: Unpack[AuditOptionFields],
    ) -> None:
        options = AuditOptions.resolve(options, overrides)
        self.agent = v.check_text("agent", agent)
        self.auditor = Auditor(trail, options, system="a2a")
        self._sent: dict[str, Message] = {}
        """Sent messages whose outcome is not known yet, by message id."""
        self._by_task: dict[str, str] = {}
        """Task id -> id of the sent message that task answers."""

    @property
    def pending(self) -> int:
        """Sent messages whose outcome is not known yet."""
        return len(self._sent)

    @property
    def degraded_bodies(self) -> int:
        """Payloads recorded as base64 or as a not-captured marker (also ``audit_plugin.capture.degraded``)."""
        return self.auditor.degraded.count

    def wrap(self, client: Client) -> AuditedClient:
        """``client`` with failed calls recorded (the SDK skips ``after`` when a call raises)."""
        return AuditedClient(client, self)

    async def before(self, args: BeforeArgs) -> None:
        if args.method not in SEND_METHODS or not isinstance(args.input, SendMessageRequest):
            return
        message = args.input.message
        if not message.context_id and not message.task_id:  # on a copy: the caller's request stays as it was
            request = SendMessageRequest()
            request.CopyFrom(args.input)
            request.message.context_id = str(uuid.uuid4())
            args.input, message = request, request.message
        record = request_record(message, from_agent=self.agent, to_agent=args.agent_card.name or UNKNOWN_AGENT)
        plugin = self.auditor.plugin
        await self.auditor.stored(record, lambda: plugin.audit_pre_send(message=record))  # injects the trace context
        self._sent[record.message_id] = record
        if message.task_id:  # a follow-up: the task's previous message was taken, the task moved on
            await self._settle(self._by_task.get(message.task_id), MessageStatus.DELIVERED, None)
            self._by_task[message.task_id] = record.message_id
        # A copy, so the user's context (possibly reused for other calls) gets neither this call's
        # trace headers nor its message id.
        context = args.context or ClientCallContext()
        parameters = dict(context.service_parameters or {})
        parameters.update(
            {key: record.headers[key] for key in propagate.get_global_textmap().fields & record.headers.keys()}
        )
        parameters[FROM_AGENT_HEADER] = self.agent
        args.context = context.model_copy(
            update={"service_parameters": parameters, "state": {**context.state, _REQUEST_KEY: record.message_id}}
        )

    async def after(self, args: AfterArgs) -> None:
        if args.method not in RESULT_METHODS:
            return
        sent_id = args.context.state.get(_REQUEST_KEY) if args.context is not None else None
        server = args.agent_card.name or UNKNOWN_AGENT
        for event in reply_events(args.result):
            task_id = task_id_of(event)
            answers = sent_id if isinstance(sent_id, str) else self._by_task.get(task_id or "")
            record = event_record(event, from_agent=server, to_agent=self.agent, reply_to=answers)
            if record is None:
                continue
            trace_id, span_id = sampled_ids(trace.get_current_span())
            delivered = receipt(record, MessageStatus.DELIVERED)
            await self._received(record, delivered, trace_id, span_id)
            if task_id and isinstance(sent_id, str) and sent_id in self._sent:
                self._by_task[task_id] = sent_id
            settled = outcome(event)
            if settled is not None:
                target = self._by_task.pop(task_id, None) if task_id else None
                await self._settle(target or sent_id, *settled)

    async def _received(
        self, record: Message, delivered: DeliveryReceipt, trace_id: str | None, span_id: str | None
    ) -> None:
        plugin = self.auditor.plugin
        await self.auditor.quietly(
            record,
            lambda: plugin.record_outcome(
                record, delivered, operation_id=OUTCOME_OPERATION, trace_id=trace_id, span_id=span_id
            ),
        )

    async def failed(self, message_id: str, exc: BaseException) -> None:
        """Record the sent message ``message_id`` FAILED because its call raised ``exc``."""
        record = self._sent.pop(message_id, None)
        if record is None:  # never sent, or already settled
            return
        self._forget_tasks(message_id)
        failed = receipt(record, MessageStatus.FAILED, f"the A2A call raised {error_text(exc)}")
        plugin = self.auditor.plugin
        await self.auditor.quietly(
            record, lambda: plugin.record_delivery(record, failed, operation_id=OUTCOME_OPERATION), exc
        )

    async def _settle(self, message_id: Any, status: MessageStatus, error: str | None) -> None:
        record = self._sent.pop(message_id, None) if isinstance(message_id, str) else None
        if record is None:
            return
        self._forget_tasks(message_id)
        settled = receipt(record, status, error)
        plugin = self.auditor.plugin
        await self.auditor.quietly(
            record, lambda: plugin.record_delivery(record, settled, operation_id=OUTCOME_OPERATION)
        )

    def _forget_tasks(self, message_id: str) -> None:
        for task_id in [task_id for task_id, sent in self._by_task.items() if sent == message_id]:
            del self._by_task[task_id]


class AuditedClient:
    """An A2A ``Client`` whose ``send_message`` failures are recorded; everything else is the wrapped client's."""

    def __init__(self, client: Client, interceptor: AuditClientInterceptor) -> None:
        self.client = client
        self.interceptor = interceptor

    async def send_message(
        self, request: SendMessageRequest, *, context: ClientCallContext | None = None
    ) -> AsyncIterator[Any]:
        """The wrapped client's ``send_message``; if it raises, the sent message is recorded FAILED first."""
        try:
            async for event in self.client.send_message(request, context=context):
                yield event
        except GeneratorExit:  # the caller stopped reading: not a failure
            raise
        except BaseException as exc:
            await self.interceptor.failed(request.message.message_id, exc)
            raise

    async def __aenter__(self) -> AuditedClient:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.client.__aexit__(*exc_info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)
