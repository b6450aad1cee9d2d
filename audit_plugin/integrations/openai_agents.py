"""Audit OpenAI Agents SDK runs (``pip install "audit-plugin[openai-agents]"``): one ``hooks=`` argument.

::

    result = await Runner.run(agent, "Plan my trip", hooks=AuditRunHooks(trail))

:class:`AuditRunHooks` is a ``RunHooks``: it sees every agent of the run
(``run``, ``run_sync``, ``run_streamed``) and records each step as a message
between named agents:

* the run's input: a QUERY from ``user`` to the starting agent; the final
  output a RESPONSE from the agent that produced it; the input's record
  DELIVERED, or FAILED with the error that ended the run;
* a model call: a QUERY from the agent to ``model:{model name}`` with the
  input items new since the agent's previous call (``{"input": [...],
  "history": n}``), its response a RESPONSE;
* a tool call: a QUERY from the agent to ``tool:{name}`` with its
  arguments, its result a RESPONSE; the call FAILED when the tool raised
  (the SDK then gives the model an error text instead of a result);
* a handoff: a COMMAND from one agent to the other, DELIVERED when the
  other agent starts.

What an agent does while handling the run has ``reply_to`` set to the
input's record; ``correlation_id`` is the run's trace id (the SDK's
``trace_...``). Each record is made in a ``send {to_agent}`` span with the
GenAI attributes.

Run hooks are not called when a step fails: a tool's error becomes a text
for the model, a failing model call or guardrail raises out of the run. The
SDK's own tracing sees both (the tool's function span and the agent's span
end with an error), so the hooks also register one trace processor
(``agents.add_trace_processor``) that settles what a failed step held open,
FAILED with the SDK's error text. Tracing is on by default; with it
disabled (``set_tracing_disabled(True)``, ``RunConfig(tracing_disabled=True)``)
a tool's error text is recorded as its result, and what a failing run left
open stays PENDING until :meth:`AuditRunHooks.settle_open` settles it FAILED.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Unpack

from agents import Agent, RunHooks, add_trace_processor
from agents.tracing import Span, Trace, TracingProcessor, get_current_span, get_current_trace

from audit_plugin.hooks.options import AuditOptionFields, AuditOptions
from audit_plugin.integrations import genai
from audit_plugin.integrations._json import to_json
from audit_plugin.integrations._recording import (
    MODEL_PREFIX,
    TOOL_PREFIX,
    USER,
    Auditor,
    agent_name,
    storable,
)
from audit_plugin.model.messages import Message, MessageStatus, MessageType, new_message_id
from audit_plugin.trail import MessageAuditTrail

log = logging.getLogger(__name__)

OUTCOME_OPERATION = "openai-agents-outcome"
"""``operation_id`` of every outcome this adapter records."""


@dataclass
class _Run:
    """One audited run: its input's record, the agent running now, and the steps it holds open."""

    usage: weakref.ref[Any]
    """The run's ``Usage`` (one per run, shared by every hook context of it): which run a hook belongs to."""
    record: Message
    agent: str
    conversation: str | None
    trace_id: str | None
    agent_span: str | None = None
    seen_items: int = 0
    open: dict[str, Message] = field(default_factory=dict)
    """Model calls, tool calls and handoffs sent and not settled yet, by key."""


class AuditRunHooks(RunHooks[Any]):
    """``RunHooks`` that record a run's agents, model calls, tool calls and handoffs in ``trail`` (module docs).

    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail`.
    :param options: durability (``"commit"``: each step's record is committed
        before the step runs), commit timeout, tracer and meter providers,
        payload tracing (:class:`~audit_plugin.AuditOptions`); ``overrides``:
        the same as keywords.

    One object may serve many runs, at once or one after another.
    """

    def __init__(
        self,
        trail: MessageAuditTrail,
        *,
        options: AuditOptions | None = None,
        **overrides: Unpack[AuditOptionFields],
    ) -> None:
        options = AuditOptions.resolve(options, overrides)
        self.auditor = Auditor(trail, options, operation_id=OUTCOME_OPERATION)
        self._runs: dict[int, _Run] = {}
        _FailureListener.install().watch(self)

    @property
    def open_runs(self) -> int:
        """Runs started whose outcome is not known yet."""
        return len(self._runs)

    async def settle_open(self, reason: str = "the run ended without an outcome") -> None:
        """Settle every run still open (and what it holds open) FAILED with ``reason``."""
        for key in list(self._runs):
            self._fail(self._runs.pop(key), reason)
        await self.auditor.drain()

    # -- agents -------------------------------------------------------------------

    async def on_agent_start(self, context: Any, agent: Agent[Any]) -> None:
        name = agent_name(agent.name, "agent")
        run = self._run(context)
        if run is None:
            run = await self._start(context, name)
        else:
            handoff = run.open.pop(f"handoff/{name}", None)
            if handoff is not None:
                await self.auditor.settle(handoff, MessageStatus.DELIVERED)
            run.agent = name
        run.agent_span = _agent_span_id()

    async def _start(self, context: Any, agent: str) -> _Run:
        key = id(context.usage)
        stale = self._runs.pop(key, None)
        if stale is not None:  # a run on this context ended without an outcome the hooks could see
            self._fail(stale, "the run ended without an outcome")
        trace = get_current_trace()
        trace_id = storable(getattr(trace, "trace_id", None), max_length=256)
        conversation = trace_id or new_message_id()
        record = Message(
            USER, agent, MessageType.QUERY, {"input": to_json(context.turn_input)}, correlation_id=conversation
        )
        await self.auditor.send(
            record, genai.genai_attributes(genai.INVOKE_AGENT, agent=agent, conversation=conversation)
        )
        run = _Run(weakref.ref(context.usage), record, agent, conversation, trace_id)
        self._runs[key] = run
        return run

    async def on_agent_end(self, context: Any, agent: Agent[Any], output: Any) -> None:
        run = self._run(context)
        if run is None:
            return
        del self._runs[id(context.usage)]
        name = agent_name(agent.name, "agent")
        response = self._message(run, name, run.record.from_agent, MessageType.RESPONSE, {"output": to_json(output)})
        leftovers = list(run.open.values())
        run.open.clear()
        for step in leftovers:
            await self.auditor.settle(step, MessageStatus.FAILED, "the run ended before it was answered")
        await asyncio.gather(self.auditor.record(response), self.auditor.settle(run.record, MessageStatus.DELIVERED))

    async def on_handoff(self, context: Any, from_agent: Agent[Any], to_agent: Agent[Any]) -> None:
        run = self._run(context)
        if run is None:
            return
        source, target = agent_name(from_agent.name, "agent"), agent_name(to_agent.name, "agent")
        record = self._message(run, source, target, MessageType.COMMAND, {"handoff": {"from": source, "to": target}})
        await self.auditor.send(
            record, genai.genai_attributes(genai.INVOKE_AGENT, agent=target, conversation=run.conversation)
        )
        run.open[f"handoff/{target}"] = record

    # -- model calls --------------------------------------------------------------

    async def on_llm_start(
        self, context: Any, agent: Agent[Any], system_prompt: str | None, input_items: list[Any]
    ) -> None:
        run = self._run(context)
        if run is None:
            return
        name = agent_name(agent.name, "agent")
        model = _model_name(agent)
        new = input_items[run.seen_items :] if len(input_items) >= run.seen_items else input_items
        payload = {
            "system_prompt": to_json(system_prompt),
            "input": to_json(new),
            "history": len(input_items) - len(new),
        }
        run.seen_items = len(input_items)
        record = self._message(run, name, f"{MODEL_PREFIX}{model}", MessageType.QUERY, payload)
        attributes = genai.genai_attributes(genai.CHAT, agent=name, conversation=run.conversation, model=model)
        await self.auditor.send(record, attributes)
        run.open[f"model/{name}"] = record

    async def on_llm_end(self, context: Any, agent: Agent[Any], response: Any) -> None:
        run = self._run(context)
        request = run.open.pop(f"model/{agent_name(agent.name, 'agent')}", None) if run is not None else None
        if run is None or request is None:
            return
        payload = {
            "output": to_json(getattr(response, "output", None)),
            "usage": to_json(getattr(response, "usage", None)),
            "response_id": to_json(getattr(response, "response_id", None)),
        }
        answer = self._message(run, request.to_agent, request.from_agent, MessageType.RESPONSE, payload, request)
        await asyncio.gather(self.auditor.record(answer), self.auditor.settle(request, MessageStatus.DELIVERED))

    # -- tool calls ---------------------------------------------------------------

    async def on_tool_start(self, context: Any, agent: Agent[Any], tool: Any) -> None:
        run = self._run(context)
        if run is None:
            return
        name, tool_name = agent_name(agent.name, "agent"), agent_name(getattr(tool, "name", None), "tool")
        call_id = storable(getattr(context, "tool_call_id", None), max_length=256)
        payload = {"tool": tool_name, "tool_call_id": call_id, "arguments": _arguments(context)}
        record = Message(
            name,
            f"{TOOL_PREFIX}{tool_name}",
            MessageType.QUERY,
            payload,
            correlation_id=run.conversation,
            reply_to=run.record.message_id,
            message_id=f"{run.record.message_id}/{call_id}" if call_id else new_message_id(),
        )
        attributes = genai.genai_attributes(
            genai.EXECUTE_TOOL, agent=name, conversation=run.conversation, tool=tool_name, tool_call_id=call_id
        )
        await self.auditor.send(record, attributes)
        run.open[_tool_key(context, tool_name)] = record

    async def on_tool_end(self, context: Any, agent: Agent[Any], tool: Any, result: object) -> None:
        run = self._run(context)
        tool_name = agent_name(getattr(tool, "name", None), "tool")
        record = run.open.pop(_tool_key(context, tool_name), None) if run is not None else None
        if run is None or record is None:
            return
        payload = {"tool": tool_name, "tool_call_id": record.payload["tool_call_id"], "result": to_json(result)}
        answer = self._message(run, record.to_agent, record.from_agent, MessageType.RESPONSE, payload, record)
        error = _span_error(get_current_span())  # the tool's function span: its error, if the tool raised
        status = MessageStatus.DELIVERED if error is None else MessageStatus.FAILED
        await asyncio.gather(self.auditor.record(answer), self.auditor.settle(record, status, error))

    # -- failures the hooks do not see ----------------------------------------------

    def span_ended(self, span: Span[Any]) -> None:
        """A span of the SDK ended: an agent span with an error ends the run it belongs to FAILED."""
        error = _span_error(span)
        if error is None:
            return
        for key, run in list(self._runs.items()):
            if run.agent_span is not None and run.agent_span == span.span_id:
                del self._runs[key]
                self._fail(run, error)

    def trace_ended(self, trace: Trace) -> None:
        """A trace ended: a run in it still open ended without an outcome the hooks saw."""
        for key, run in list(self._runs.items()):
            if run.trace_id is not None and run.trace_id == trace.trace_id:
                del self._runs[key]
                self._fail(run, "the run ended without an outcome")

    def _fail(self, run: _Run, reason: str) -> None:
        """Settle a run and what it holds open FAILED, without awaiting (finished in the background)."""
        for step in [*run.open.values(), run.record]:
            self.auditor.settle_soon(step, MessageStatus.FAILED, reason)
        run.open.clear()

    # -- helpers ------------------------------------------------------------------

    def _run(self, context: Any) -> _Run | None:
        usage = getattr(context, "usage", None)
        run = self._runs.get(id(usage))
        return run if run is not None and run.usage() is usage else None

    @staticmethod
    def _message(
        run: _Run,
        from_agent: str,
        to_agent: str,
        message_type: MessageType,
        payload: dict[str, Any],
        answers: Message | None = None,
    ) -> Message:
        return Message(
            from_agent,
            to_agent,
            message_type,
            payload,
            correlation_id=run.conversation,
            reply_to=(answers or run.record).message_id,
        )


class _FailureListener(TracingProcessor):
    """The one trace processor the hooks share: passes span and trace ends to every live :class:`AuditRunHooks`."""

    _installed: _FailureListener | None = None

    def __init__(self) -> None:
        self._hooks: weakref.WeakSet[AuditRunHooks] = weakref.WeakSet()

    @classmethod
    def install(cls) -> _FailureListener:
        if cls._installed is None:
            cls._installed = cls()
            add_trace_processor(cls._installed)
        return cls._installed

    def watch(self, hooks: AuditRunHooks) -> None:
        self._hooks.add(hooks)

    def on_trace_start(self, trace: Trace) -> None:
        pass

    def on_trace_end(self, trace: Trace) -> None:
        self._each(lambda hooks: hooks.trace_ended(trace))

    def on_span_start(self, span: Span[Any]) -> None:
        pass

    def on_span_end(self, span: Span[Any]) -> None:
        self._each(lambda hooks: hooks.span_ended(span))

    def _each(self, call: Any) -> None:
        for hooks in list(self._hooks):
            try:
                call(hooks)
            except Exception:  # a trace processor must never break the SDK's run
                log.exception("settling a failed OpenAI Agents step failed")

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass


def _agent_span_id() -> str | None:
    """The id of the current agent's span (hooks run inside a turn span, whose parent it is)."""
    span = get_current_span()
    if span is None:
        return None
    kind = getattr(getattr(span, "span_data", None), "type", None)
    return span.span_id if kind == "agent" else span.parent_id


def _span_error(span: Any) -> str | None:
    """``"{message}: {error}"`` of a span that ended with an error, else ``None``."""
    error = getattr(span, "error", None)
    if not isinstance(error, dict):
        return None
    message = str(error.get("message") or "error")
    data = error.get("data")
    detail = data.get("error") if isinstance(data, dict) else None
    return f"{message}: {detail}" if detail else message


def _model_name(agent: Agent[Any]) -> str:
    model = agent.model
    if isinstance(model, str):
        return agent_name(model, "model")
    if model is None:
        return "default"
    return agent_name(getattr(model, "model", None), type(model).__name__)


def _arguments(context: Any) -> Any:
    raw = getattr(context, "tool_arguments", None)
    if not isinstance(raw, str):
        return to_json(raw)
    try:
        return to_json(json.loads(raw))
    except ValueError:
        return to_json(raw)


def _tool_key(context: Any, tool_name: str) -> str:
    return f"tool/{getattr(context, 'tool_call_id', None) or tool_name}"
