"""Audit pydantic-ai agents (``pip install "audit-plugin[pydantic-ai]"``): one capability on the ``Agent``.

::

    agent = Agent(model, name="planner", capabilities=[AuditCapability(trail)])

:class:`AuditCapability` uses pydantic-ai's capability hooks, which fire
however the agent runs (``run``, ``run_sync``, ``run_stream``, ``iter``), and
records each step as a message between named agents:

* a run: a QUERY from ``user`` (or from the agent that delegated it, see
  below) to the agent, its prompt as payload; its output a RESPONSE back;
  the run's record DELIVERED, or FAILED with the error that ended the run
  (``UnexpectedModelBehavior`` when retries ran out, a cancellation...).
  Output that fails validation (the model is asked again) is a retry of the
  run's record;
* a model request: a QUERY from the agent to ``model:{model name}`` with the
  new request (``{"request": ..., "history": n}``: the messages sent before
  are in earlier records), the model's response a RESPONSE; streamed
  responses are recorded once, complete;
* a tool call: a QUERY from the agent to ``tool:{name}`` with its arguments,
  recorded when the model asks for it; its return value a RESPONSE; the
  call FAILED when its arguments fail validation, when the tool raises (or
  asks the model to retry with ``ModelRetry``), or when it is deferred;
* a delegation: an audited agent run inside an audited agent's tool is a
  QUERY from the delegating agent to the delegate, ``reply_to`` the tool
  call, in the delegating run's conversation.

What an agent does while handling a message has ``reply_to`` set to that
message (the run's record), so a conversation reads as a tree.
``correlation_id`` is pydantic-ai's ``conversation_id`` of the outermost
run. Each record is made in a ``send {to_agent}`` span with the GenAI
attributes (``gen_ai.operation.name`` ``invoke_agent``/``chat``/
``execute_tool``, ``gen_ai.agent.name``, ``gen_ai.conversation.id``,
``gen_ai.tool.name``, ``gen_ai.tool.call.id``, ``gen_ai.request.model``,
``gen_ai.provider.name``). Whatever a step still holds open when its run
ends is settled FAILED: no record stays PENDING.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Unpack

from pydantic import ValidationError
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry, ToolRetryError
from pydantic_ai.messages import ModelMessagesTypeAdapter

from audit_plugin.hooks.options import AuditOptionFields, AuditOptions
from audit_plugin.integrations import genai
from audit_plugin.integrations._json import to_json
from audit_plugin.integrations._recording import (
    MODEL_PREFIX,
    TOOL_PREFIX,
    USER,
    Auditor,
    agent_name,
    error_text,
    storable,
)
from audit_plugin.model import validation as v
from audit_plugin.model.messages import Message, MessageStatus, MessageType, new_message_id
from audit_plugin.trail import MessageAuditTrail

OUTCOME_OPERATION = "pydantic-ai-outcome"
"""``operation_id`` of every outcome this adapter records."""


@dataclass
class _Run:
    """One audited run: its record, its agent, its conversation, and the steps it holds open."""

    record: Message
    agent: str
    conversation: str | None
    retries: int = 0
    """Times the model was asked again because the run's output failed validation."""
    open: dict[str, Message] = field(default_factory=dict)
    """Model requests and tool calls sent and not settled yet, by key."""


@dataclass(frozen=True)
class _Delegation:
    """The tool call an agent runs in: a run started inside it was delegated by ``agent``."""

    agent: str
    conversation: str | None
    call_id: str


_DELEGATING: ContextVar[_Delegation | None] = ContextVar("audit_pydantic_ai_delegating", default=None)


class AuditCapability(AbstractCapability[Any]):
    """A pydantic-ai capability that records an agent's runs, model requests, tool calls and delegations.

    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail`.
    :param agent: the agent's name in the records (default: the ``Agent``'s
        ``name``, else ``"agent"``). One capability may serve several agents.
    :param options: durability (``"commit"``: each step's record is committed
        before the step runs), commit timeout, tracer and meter providers,
        payload tracing (:class:`~audit_plugin.AuditOptions`); ``overrides``:
        the same as keywords.
    """

    def __init__(
        self,
        trail: MessageAuditTrail,
        *,
        agent: str | None = None,
        options: AuditOptions | None = None,
        **overrides: Unpack[AuditOptionFields],
    ) -> None:
        options = AuditOptions.resolve(options, overrides)
        self.agent = v.check_text("agent", agent) if agent is not None else None
        self.auditor = Auditor(trail, options, operation_id=OUTCOME_OPERATION)
        self._runs: dict[str, _Run] = {}

    @property
    def open_runs(self) -> int:
        """Runs started and not ended."""
        return len(self._runs)

    # -- runs ---------------------------------------------------------------------

    async def wrap_run(self, ctx: Any, *, handler: Any) -> Any:
        agent = self.agent or agent_name(getattr(ctx.agent, "name", None), "agent")
        delegation = _DELEGATING.get()
        caller = delegation.agent if delegation is not None else USER
        conversation = (
            delegation.conversation if delegation is not None else storable(ctx.conversation_id or ctx.run_id)
        )
        record = Message(
            caller,
            agent,
            MessageType.QUERY,
            {"prompt": to_json(ctx.prompt), "run_id": to_json(ctx.run_id)},
            correlation_id=conversation,
            reply_to=delegation.call_id if delegation is not None else None,
        )
        await self.auditor.send(
            record, genai.genai_attributes(genai.INVOKE_AGENT, agent=agent, conversation=conversation)
        )
        run = _Run(record, agent, conversation)
        key = self._key(ctx)
        self._runs[key] = run
        try:
            result = await handler()
        except BaseException as exc:
            await self._end(run, MessageStatus.FAILED, _reason(exc), exc)
            raise
        finally:
            self._runs.pop(key, None)
        response = Message(
            agent,
            caller,
            MessageType.RESPONSE,
            {"output": to_json(result.output)},
            correlation_id=conversation,
            reply_to=record.message_id,
        )
        await asyncio.gather(self.auditor.record(response), self._end(run, MessageStatus.DELIVERED, None, None))
        return result

    async def _end(self, run: _Run, status: MessageStatus, error: str | None, cause: BaseException | None) -> None:
        """Settle the run's record, and FAILED whatever step it still holds open."""
        leftovers = list(run.open.values())
        run.open.clear()
        reason = "cancelled" if isinstance(cause, asyncio.CancelledError) else "the run ended before it was answered"
        for step in leftovers:
            await self.auditor.settle(step, MessageStatus.FAILED, reason, cause=cause)
        await self.auditor.settle(run.record, status, error, cause=cause, retry_count=run.retries)

    async def wrap_output_validate(self, ctx: Any, *, output_context: Any, output: Any, handler: Any) -> Any:
        try:
            return await handler(output)
        except (ValidationError, ModelRetry) as exc:
            run = self._runs.get(self._key(ctx))
            if run is not None and not ctx.partial_output:  # the model is asked again: a retry of the run
                run.retries += 1
                retry = self.auditor.plugin.audit_retry(message=run.record, attempt=run.retries, error=exc)
                await self.auditor.wait(retry)
            raise

    # -- model requests -----------------------------------------------------------

    async def wrap_model_request(self, ctx: Any, *, request_context: Any, handler: Any) -> Any:
        run = self._runs.get(self._key(ctx))
        if run is None:
            return await handler(request_context)
        model = request_context.model
        model_name = agent_name(getattr(model, "model_name", None), "model")
        messages = request_context.messages
        request = Message(
            run.agent,
            f"{MODEL_PREFIX}{model_name}",
            MessageType.QUERY,
            {"request": _messages_json(messages[-1:])[0] if messages else None, "history": len(messages) - 1},
            correlation_id=run.conversation,
            reply_to=run.record.message_id,
        )
        attributes = genai.genai_attributes(
            genai.CHAT,
            agent=run.agent,
            conversation=run.conversation,
            model=model_name,
            provider=storable(getattr(model, "system", None)),
        )
        await self.auditor.send(request, attributes)
        run.open[request.message_id] = request
        try:
            response = await handler(request_context)
        except BaseException as exc:
            if run.open.pop(request.message_id, None) is not None:
                await self.auditor.settle(request, MessageStatus.FAILED, _reason(exc), cause=exc)
            raise
        if run.open.pop(request.message_id, None) is not None:
            answer = Message(
                request.to_agent,
                run.agent,
                MessageType.RESPONSE,
                {"response": _messages_json([response])[0]},
                correlation_id=run.conversation,
                reply_to=request.message_id,
            )
            await asyncio.gather(self.auditor.record(answer), self.auditor.settle(request, MessageStatus.DELIVERED))
        return response

    # -- tool calls ---------------------------------------------------------------

    async def wrap_tool_validate(self, ctx: Any, *, call: Any, tool_def: Any, args: Any, handler: Any) -> Any:
        run = self._runs.get(self._key(ctx))
        if run is None:
            return await handler(args)
        record = await self._call(run, ctx, call, args)
        try:
            return await handler(args)
        except BaseException as exc:
            if run.open.pop(_call_key(call), None) is not None:
                reason = (
                    f"arguments rejected: {error_text(exc)}"
                    if isinstance(exc, ValidationError | ModelRetry)
                    else _reason(exc)
                )
                await self.auditor.settle(record, MessageStatus.FAILED, reason, cause=exc)
            raise

    async def wrap_tool_execute(self, ctx: Any, *, call: Any, tool_def: Any, args: Any, handler: Any) -> Any:
        run = self._runs.get(self._key(ctx))
        if run is None:
            return await handler(args)
        record = run.open.get(_call_key(call)) or await self._call(run, ctx, call, args)
        token = _DELEGATING.set(_Delegation(run.agent, run.conversation, record.message_id))
        try:
            result = await handler(args)
        except BaseException as exc:
            if run.open.pop(_call_key(call), None) is not None:
                await self.auditor.settle(record, MessageStatus.FAILED, _reason(exc), cause=exc)
            raise
        finally:
            _DELEGATING.reset(token)
        if run.open.pop(_call_key(call), None) is not None:
            answer = Message(
                record.to_agent,
                run.agent,
                MessageType.RESPONSE,
                {
                    "tool": record.payload["tool"],
                    "tool_call_id": record.payload["tool_call_id"],
                    "result": to_json(result),
                },
                correlation_id=run.conversation,
                reply_to=record.message_id,
            )
            await asyncio.gather(self.auditor.record(answer), self.auditor.settle(record, MessageStatus.DELIVERED))
        return result

    async def _call(self, run: _Run, ctx: Any, call: Any, args: Any) -> Message:
        """Record a tool call the model asked for (PENDING) and hold it open."""
        tool = agent_name(call.tool_name, "tool")
        call_id = storable(call.tool_call_id, max_length=256)
        record = Message(
            run.agent,
            f"{TOOL_PREFIX}{tool}",
            MessageType.QUERY,
            {"tool": to_json(call.tool_name), "tool_call_id": to_json(call.tool_call_id), "arguments": to_json(args)},
            correlation_id=run.conversation,
            reply_to=run.record.message_id,
            message_id=f"{run.record.message_id}/{call_id}" if call_id else new_message_id(),
        )
        attributes = genai.genai_attributes(
            genai.EXECUTE_TOOL, agent=run.agent, conversation=run.conversation, tool=tool, tool_call_id=call_id
        )
        await self.auditor.send(record, attributes)
        run.open[_call_key(call)] = record
        return record

    def _key(self, ctx: Any) -> str:
        """The run a hook belongs to (a capability may serve several runs at once)."""
        return str(ctx.run_id)


def _call_key(call: Any) -> str:
    return f"tool/{call.tool_call_id}"


def _messages_json(messages: list[Any]) -> list[Any]:
    """pydantic-ai messages in pydantic-ai's own JSON form (``ModelMessagesTypeAdapter``)."""
    try:
        return to_json(ModelMessagesTypeAdapter.dump_python(messages, mode="json"))
    except Exception:
        return [to_json(message) for message in messages]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, ToolRetryError):
        return f"the tool asked the model to retry: {exc}"
    if isinstance(exc, CallDeferred | ApprovalRequired):
        return f"deferred ({type(exc).__name__}): not run in this run"
    return error_text(exc)
