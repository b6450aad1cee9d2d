"""Server side: :class:`AuditMiddleware`, an MCP server middleware (the SDK's ``(ctx, call_next)`` seam).

``MCPServer("weather", middleware=[AuditMiddleware(trail, agent="weather")])``
(or ``server.middleware.append(...)`` on a low-level ``Server``) sees every
inbound request and notification: ``initialize``, ``tools/call``,
``resources/read``, ``prompts/get``, ``notifications/cancelled``...

* A request is recorded (PENDING, committed first in ``"commit"``
  durability) from the client to ``agent`` before the handler runs, in a
  ``process {agent}`` CONSUMER span: a child of the current span (the SDK's
  own ``OpenTelemetryMiddleware`` server span, itself in the client's trace),
  else of the trace context the client put in ``_meta``.
* When the handler returns, its result is recorded (a RESPONSE, DELIVERED)
  and the request settled: DELIVERED, or FAILED for a ``tools/call`` whose
  result has ``isError``. An ``MCPError`` (or the ``ValidationError`` the SDK
  answers with -32602) is recorded as the error RESPONSE it becomes, the
  request FAILED with ``MCP error {code}: {message}``. Any other exception
  settles the request FAILED with ``the handler raised {error}`` (the SDK
  answers it with an internal error whose wording depends on the transport;
  an audited client records that reply). A request the client cancels is
  FAILED ``cancelled``. The exception, result or cancellation then goes on
  unchanged.
* A notification is recorded PENDING before its handler runs, then
  DELIVERED (FAILED if the handler raised).

What the server sends the client on its own (sampling, elicitation,
progress, log messages) does not pass through a server middleware: the
client's :class:`~audit_plugin.integrations.mcp.AuditedTransport` records it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Unpack

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from opentelemetry import propagate, trace

from audit_plugin.hooks.options import AuditOptionFields, AuditOptions
from audit_plugin.integrations._recording import UNKNOWN_AGENT, Auditor, agent_name, error_text, storable
from audit_plugin.integrations.mcp.records import (
    CONVERSATION_META,
    FROM_AGENT_META,
    MESSAGE_ID_META,
    OUTCOME_OPERATION,
    SESSION_HEADER,
    audit_stamps,
    error_reason,
    error_record,
    meta_without_stamps,
    notification_record,
    request_record,
    result_outcome,
    result_record,
    span_attributes,
    without_stamps,
)
from audit_plugin.model import validation as v
from audit_plugin.model.messages import Message, MessageStatus
from audit_plugin.telemetry.tracing import ProcessTracer
from audit_plugin.trail import MessageAuditTrail


class AuditMiddleware:
    """An MCP ``ServerMiddleware`` that records every message a server receives, and its answer, in ``trail``.

    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail`.
    :param agent: this server's name in the records (``to_agent`` of what it
        receives, ``from_agent`` of its answers).
    :param options: durability (``"commit"``: the request's record is
        committed before the handler runs, the answer's before it goes back),
        commit timeout, tracer and meter providers, payload tracing
        (:class:`~audit_plugin.AuditOptions`); ``overrides``: the same as keywords.
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
        self.agent: str = v.check_text("agent", agent)  # type: ignore[assignment]
        self.auditor = Auditor(trail, options, operation_id=OUTCOME_OPERATION)
        self._tracer = ProcessTracer(options.tracer_provider)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        stamps = audit_stamps(ctx.params)
        if stamps:  # the handler sees what an unaudited client would have sent
            ctx = replace(ctx, params=without_stamps(ctx.params), meta=meta_without_stamps(ctx.meta))
        caller = agent_name(stamps.get(FROM_AGENT_META) or _client_name(ctx), UNKNOWN_AGENT)
        conversation = storable(stamps.get(CONVERSATION_META) or _session_id(ctx), max_length=256)
        message_id = storable(stamps.get(MESSAGE_ID_META), max_length=256)
        if ctx.request_id is None:
            incoming = notification_record(
                ctx.method, ctx.params, from_agent=caller, to_agent=self.agent, conversation=conversation,
                message_id=message_id,
            )  # fmt: skip
        else:
            incoming = request_record(
                ctx.method, ctx.params, ctx.request_id, from_agent=caller, to_agent=self.agent,
                conversation=conversation, message_id=message_id,
            )  # fmt: skip
        incoming.headers.update(_trace_carrier(ctx))
        attributes = span_attributes(ctx.method, ctx.params, ctx.request_id, conversation)
        with self._tracer.processing(incoming, 0, attributes) as span:
            await self.auditor.receive(incoming, span)
            try:
                result = await call_next(ctx)
            except BaseException as exc:
                await self._failed(incoming, exc, span)
                raise
            if ctx.request_id is None:
                await self.auditor.record(incoming, span=span)
            else:
                await self._answered(incoming, result, span)
        return result

    async def _answered(self, request: Message, result: HandlerResult, span: trace.Span | None) -> None:
        wire = (
            result.model_dump(by_alias=True, mode="json", exclude_none=True)
            if hasattr(result, "model_dump")
            else result
        )
        status, error = result_outcome(request, wire)
        await asyncio.gather(  # queued together: one commit in "commit" durability
            self.auditor.record(result_record(request, wire), span=span),
            self.auditor.record(request, status, error, span=span),
        )

    async def _failed(self, incoming: Message, exc: BaseException, span: trace.Span | None) -> None:
        if isinstance(exc, asyncio.CancelledError):
            await self.auditor.record(incoming, MessageStatus.FAILED, "cancelled", cause=exc, span=span)
            return
        error = handler_exception_to_error_data(exc) if isinstance(exc, Exception) else None
        if error is None:  # the SDK's catch-all answers it; its wording depends on the transport
            reason = f"the handler raised {error_text(exc)}"
            await self.auditor.record(incoming, MessageStatus.FAILED, reason, span=span)
            return
        reason = error_reason(error.code, error.message)
        steps = [self.auditor.record(incoming, MessageStatus.FAILED, reason, span=span)]
        if incoming.payload.get("id") is not None:  # a request: the error is its answer
            steps.append(self.auditor.record(error_record(incoming, error.code, error.message, error.data), span=span))
        await asyncio.gather(*steps)  # queued together: one commit in "commit" durability


def _client_name(ctx: ServerRequestContext[Any, Any]) -> str | None:
    params = ctx.session.client_params
    info = params.client_info if params is not None else None
    return info.name if info is not None else None


def _session_id(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The streamable-HTTP session id of the request, if it came over HTTP with one."""
    headers = getattr(ctx.request, "headers", None)
    value = headers.get(SESSION_HEADER) if headers is not None else None
    return value if isinstance(value, str) else None


def _trace_carrier(ctx: ServerRequestContext[Any, Any]) -> dict[str, str]:
    """Where the CONSUMER span's parent comes from: the current span, else the trace context in ``_meta``."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
        return carrier
    meta = ctx.meta or {}
    return {key: value for key in propagate.get_global_textmap().fields if isinstance(value := meta.get(key), str)}
