"""The A2A integration: an audited agent executor through the SDK's request handler, and an audited client.

In-process through ``DefaultRequestHandler`` + ``InMemoryTaskStore``, and
over real HTTP (uvicorn on 127.0.0.1, an ephemeral port), on every backend.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import get_message_text
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import (
    CancelTaskRequest,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    Task,
    TaskState,
)
from a2a.types import (
    Message as A2AMessage,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.integrations.a2a import AuditClientInterceptor, AuditedAgentExecutor
from audit_plugin.integrations.payloads import storable_text
from tests.a2a_support import ScriptedAgent, agent_card, free_socket, serve
from tests.test_examples import run_example, stored

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


def user_message(text: str, message_id: str, **fields: str) -> A2AMessage:
    return A2AMessage(message_id=message_id, role=Role.ROLE_USER, parts=[Part(text=text)], **fields)


def caller_context(caller: str = "planner", traceparent: str = TRACEPARENT) -> ServerCallContext:
    """What the SDK's HTTP routes build for a request from an audited client."""
    return ServerCallContext(state={"headers": {"traceparent": traceparent, "audit-from-agent": caller}})


def handler_for(executor: ScriptedAgent, trail: MessageAuditTrail, provider: TracerProvider, **options: object):
    card = agent_card("ledger")
    audited = AuditedAgentExecutor(executor, trail, agent=card, tracer_provider=provider, **options)  # type: ignore[arg-type]
    return DefaultRequestHandler(agent_executor=audited, task_store=InMemoryTaskStore(), agent_card=card), audited


async def test_message_and_reply_recorded_with_their_conversation_and_trace(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handler, _ = handler_for(ScriptedAgent(), trail, provider)
    request = SendMessageRequest(message=user_message("hello", "m-1", context_id="ctx-1"))

    reply = await handler.on_message_send(request, caller_context())
    await trail.flush()

    assert isinstance(reply, A2AMessage)
    incoming, answer = await trail.get_message("m-1"), await trail.get_message(reply.message_id)
    assert incoming is not None and answer is not None
    assert (incoming.from_agent, incoming.to_agent, incoming.message_type) == ("planner", "ledger", MessageType.COMMAND)
    assert (answer.from_agent, answer.to_agent, answer.message_type) == ("ledger", "planner", MessageType.RESPONSE)
    assert incoming.status == answer.status == MessageStatus.DELIVERED
    assert incoming.payload["message"]["parts"] == [{"text": "hello"}]
    assert answer.payload["message"]["parts"] == [{"text": "echo hello"}]
    assert [r.message_id for r in await trail.get_conversation_history("ctx-1")] == ["m-1", reply.message_id]

    # Both records are in the caller's trace: the CONSUMER span is the caller's child, the reply's send span its child.
    spans = {span.name: span for span in exporter.get_finished_spans()}
    process, send = spans["process ledger"], spans["send planner"]
    assert process.kind == SpanKind.CONSUMER and send.kind == SpanKind.PRODUCER
    assert format(process.parent.span_id, "016x") == PARENT_SPAN_ID
    assert send.parent.span_id == process.context.span_id
    assert incoming.trace_id == answer.trace_id == TRACE_ID
    assert incoming.span_id == format(process.context.span_id, "016x")
    assert answer.span_id == format(send.context.span_id, "016x")
    assert (await trail.verify()).ok


@pytest.fixture
async def lingering_trail(database_url: str) -> AsyncIterator[MessageAuditTrail]:
    """A trail whose writer waits 0.3 s for each batch to fill: a record is committed late unless awaited."""
    async with MessageAuditTrail(database_url, batch_interval=0.3) as trail:
        yield trail


@pytest.mark.parametrize(("durability", "seen"), [("commit", "committed"), ("buffered", "not committed")])
async def test_commit_durability_records_the_message_before_the_agent_runs(
    lingering_trail: MessageAuditTrail, provider: TracerProvider, durability: str, seen: str
) -> None:
    handler, _ = handler_for(ScriptedAgent(lingering_trail), lingering_trail, provider, durability=durability)

    reply = await handler.on_message_send(SendMessageRequest(message=user_message("check", "m-c")), caller_context())

    assert isinstance(reply, A2AMessage)
    assert reply.parts[0].text == f"echo {seen}"


async def test_executor_that_raises_fails_the_message_with_the_error(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handler, _ = handler_for(ScriptedAgent(), trail, provider)

    with pytest.raises(RuntimeError, match="kaboom"):
        await handler.on_message_send(SendMessageRequest(message=user_message("boom", "m-boom")), caller_context())
    await trail.flush()

    record = await trail.get_message("m-boom")
    assert record is not None and record.status == MessageStatus.FAILED
    assert record.error_message == "agent 'ledger' raised RuntimeError: kaboom"
    process = next(span for span in exporter.get_finished_spans() if span.name == "process ledger")
    assert process.attributes["error.type"] == "RuntimeError"
    assert (await trail.verify()).ok


@pytest.mark.parametrize(
    ("text", "reason"), [("fail", "task failed: the ledger is closed"), ("reject", "task rejected: not my job")]
)
async def test_task_that_ends_failed_or_rejected_fails_the_message_with_the_reason(
    trail: MessageAuditTrail, provider: TracerProvider, text: str, reason: str
) -> None:
    handler, audited = handler_for(ScriptedAgent(), trail, provider)
    request = SendMessageRequest(message=user_message(text, f"m-{text}", context_id="ctx-task"))

    task = await handler.on_message_send(request, caller_context())
    await trail.flush()

    assert isinstance(task, Task)
    record = await trail.get_message(f"m-{text}")
    assert record is not None and (record.status, record.error_message) == (MessageStatus.FAILED, reason)
    events = await trail.query_messages(AuditQuery(message_type=MessageType.EVENT, correlation_id="ctx-task"))
    states = sorted(next(iter(r.payload.values())).get("status", {}).get("state", "") for r in events)
    assert states == sorted(["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", f"TASK_STATE_{text.upper()}ED"])
    assert all(r.status == MessageStatus.DELIVERED and r.to_agent == "planner" for r in events)
    assert audited.open_tasks == 0
    assert (await trail.verify()).ok


async def test_canceled_task_fails_the_message_with_the_reason(
    trail: MessageAuditTrail, provider: TracerProvider
) -> None:
    agent = ScriptedAgent()
    handler, audited = handler_for(agent, trail, provider)
    request = SendMessageRequest(
        message=user_message("work", "m-work"), configuration=SendMessageConfiguration(return_immediately=True)
    )

    task = await handler.on_message_send(request, caller_context())
    assert isinstance(task, Task)
    await asyncio.wait_for(agent.working.wait(), 10)
    assert (await trail.get_message("m-work")).status == MessageStatus.PENDING  # type: ignore[union-attr]
    canceled = await handler.on_cancel_task(CancelTaskRequest(id=task.id), caller_context())
    await trail.flush()

    assert canceled is not None and canceled.status.state == TaskState.TASK_STATE_CANCELED
    record = await trail.get_message("m-work")
    assert record is not None
    assert (record.status, record.error_message) == (MessageStatus.FAILED, "task canceled: stopped on request")
    assert audited.open_tasks == 0
    assert (await trail.verify()).ok


async def test_caller_name_that_cannot_be_stored_is_recorded_as_unknown(
    trail: MessageAuditTrail, provider: TracerProvider
) -> None:
    handler, _ = handler_for(ScriptedAgent(), trail, provider)

    await handler.on_message_send(SendMessageRequest(message=user_message("hi", "m-nul")), caller_context("eve\x00"))
    await trail.flush()

    record = await trail.get_message("m-nul")
    assert record is not None and (record.from_agent, record.status) == ("unknown", MessageStatus.DELIVERED)


async def test_task_waiting_for_input_delivers_the_message_and_the_follow_up_gets_its_own_record(
    trail: MessageAuditTrail, provider: TracerProvider
) -> None:
    handler, audited = handler_for(ScriptedAgent(), trail, provider)

    task = await handler.on_message_send(SendMessageRequest(message=user_message("ask", "q-1")), caller_context())
    assert isinstance(task, Task) and task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    follow_up = user_message("savings", "q-2", task_id=task.id, context_id=task.context_id)
    done = await handler.on_message_send(SendMessageRequest(message=follow_up), caller_context())
    await trail.flush()

    assert isinstance(done, Task) and done.status.state == TaskState.TASK_STATE_COMPLETED
    first, second = await trail.get_message("q-1"), await trail.get_message("q-2")
    assert first is not None and second is not None
    assert first.status == second.status == MessageStatus.DELIVERED
    assert first.correlation_id == second.correlation_id == task.context_id
    question = await trail.get_message(task.status.message.message_id)
    assert question is not None and question.reply_to == "q-1"
    assert audited.open_tasks == 0
    assert (await trail.verify()).ok


async def test_caller_unknown_without_header_and_trace_from_request_metadata(
    trail: MessageAuditTrail, provider: TracerProvider
) -> None:
    handler, _ = handler_for(ScriptedAgent(), trail, provider, durability="buffered")
    request = SendMessageRequest(message=user_message("hi", "m-anon"))
    request.metadata.update({"traceparent": TRACEPARENT})

    await handler.on_message_send(request, ServerCallContext())
    await trail.flush()

    record = await trail.get_message("m-anon")
    assert record is not None
    assert (record.from_agent, record.status, record.trace_id) == ("unknown", MessageStatus.DELIVERED, TRACE_ID)


async def test_client_and_server_over_http_share_one_conversation_and_trace(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    card = agent_card("ledger", url)
    audited = AuditedAgentExecutor(ScriptedAgent(), trail, agent=card, tracer_provider=provider)
    handler = DefaultRequestHandler(agent_executor=audited, task_store=InMemoryTaskStore(), agent_card=card)
    audit = AuditClientInterceptor(trail, agent="planner", tracer_provider=provider)

    async with serve(handler, card, sock):
        client = audit.wrap(await create_client(url, ClientConfig(streaming=False), interceptors=[audit]))
        async with client:
            replies = [e async for e in client.send_message(SendMessageRequest(message=user_message("hi", "h-1")))]
            failed = [e async for e in client.send_message(SendMessageRequest(message=user_message("fail", "h-2")))]
            with pytest.raises(Exception) as raised:
                [e async for e in client.send_message(SendMessageRequest(message=user_message("boom", "h-3")))]
    await trail.flush()

    reply = replies[0].message
    sent, answer = await trail.get_message("h-1"), await trail.get_message(reply.message_id)
    assert sent is not None and answer is not None
    assert (sent.from_agent, sent.to_agent, sent.status) == ("planner", "ledger", MessageStatus.DELIVERED)
    assert (answer.from_agent, answer.to_agent, answer.status) == ("ledger", "planner", MessageStatus.DELIVERED)
    assert sent.correlation_id is not None and sent.correlation_id == reply.context_id == answer.correlation_id
    # The client's send span is the record's; the server's CONSUMER span continues its trace.
    spans = exporter.get_finished_spans()
    client_send = next(s for s in spans if s.name == "send ledger" and s.attributes["messaging.message.id"] == "h-1")
    server_process = next(
        s for s in spans if s.name == "process ledger" and s.attributes["messaging.message.id"] == "h-1"
    )
    assert sent.span_id == format(client_send.context.span_id, "016x")
    assert server_process.parent.span_id == client_send.context.span_id
    assert sent.trace_id == answer.trace_id == format(client_send.context.trace_id, "032x")
    # Both ends report each outcome; the store applies it once (one operation id per message's outcome).
    for message_id in ("h-1", reply.message_id):
        history = await trail.get_message_history(message_id)
        assert [(step.kind, step.status) for step in history] == [
            ("record", MessageStatus.PENDING),
            ("status", MessageStatus.DELIVERED),
        ]

    assert failed[0].task.status.state == TaskState.TASK_STATE_FAILED
    failed_record = await trail.get_message("h-2")
    assert failed_record is not None
    assert (failed_record.status, failed_record.error_message) == (
        MessageStatus.FAILED,
        "task failed: the ledger is closed",
    )

    boom = await trail.get_message("h-3")
    assert boom is not None and boom.status == MessageStatus.FAILED
    # Recorded by the server (the executor raised) and by the client (its call raised); either text names the error.
    assert "kaboom" in str(raised.value) and "kaboom" in (boom.error_message or "")
    assert audit.pending == 0 and audited.open_tasks == 0
    assert (await trail.verify()).ok


async def test_client_in_commit_durability_records_before_sending_to_an_unaudited_server(
    lingering_trail: MessageAuditTrail, provider: TracerProvider
) -> None:
    trail = lingering_trail
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    card = agent_card("ledger", url)
    plain = DefaultRequestHandler(agent_executor=ScriptedAgent(trail), task_store=InMemoryTaskStore(), agent_card=card)
    audit = AuditClientInterceptor(trail, agent="planner", tracer_provider=provider)

    config = ClientConfig(streaming=False)
    async with serve(plain, card, sock), audit.wrap(await create_client(url, config, interceptors=[audit])) as client:
        replies = [e async for e in client.send_message(SendMessageRequest(message=user_message("check", "c-1")))]
    await trail.flush()

    assert replies[0].message.parts[0].text == "echo committed"  # the server found the client's record
    sent, answer = await trail.get_message("c-1"), await trail.get_message(replies[0].message.message_id)
    assert sent is not None and sent.status == MessageStatus.DELIVERED
    assert answer is not None and (answer.from_agent, answer.to_agent, answer.reply_to) == ("ledger", "planner", "c-1")


async def test_client_call_that_raises_is_recorded_failed_although_after_is_skipped(
    trail: MessageAuditTrail, provider: TracerProvider
) -> None:
    sock = free_socket()  # bound, never listening: the connection is refused
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    audit = AuditClientInterceptor(trail, agent="planner", tracer_provider=provider)
    client = audit.wrap(
        await create_client(agent_card("ledger", url), ClientConfig(streaming=False), interceptors=[audit])
    )

    try:
        with pytest.raises(Exception) as raised:
            [e async for e in client.send_message(SendMessageRequest(message=user_message("hi", "down-1")))]
    finally:
        await client.close()
        sock.close()
    await trail.flush()

    record = await trail.get_message("down-1")
    assert record is not None
    assert (record.from_agent, record.to_agent, record.status) == ("planner", "ledger", MessageStatus.FAILED)
    assert record.error_message == f"the A2A call raised {type(raised.value).__name__}: {raised.value}"
    assert audit.pending == 0
    assert (await trail.verify()).ok


async def test_a_message_id_the_store_cannot_keep_is_handled_and_recorded_cut_with_its_digest(
    trail: MessageAuditTrail, provider: TracerProvider
) -> None:
    """The SDK accepts a 2,000-character message id; auditing must not refuse the request for it."""
    handler, _ = handler_for(ScriptedAgent(trail), trail, provider)
    long_id = "x" * 2000

    reply = await handler.on_message_send(SendMessageRequest(message=user_message("hi", long_id)), caller_context())
    await trail.flush()

    assert get_message_text(reply) == "echo hi"
    [incoming] = await trail.query_messages(AuditQuery(message_type=MessageType.COMMAND))
    assert len(incoming.message_id) == 1024 and incoming.message_id.startswith("x" * 1000)
    assert incoming.message_id == storable_text(long_id, None)  # the client side cuts it the same way
    assert incoming.status is MessageStatus.DELIVERED


async def test_bad_options_are_typed_errors_naming_the_field(trail: MessageAuditTrail) -> None:
    with pytest.raises(FieldTypeError, match="executor"):
        AuditedAgentExecutor(object(), trail, agent="ledger")  # type: ignore[arg-type]
    with pytest.raises(InvalidFieldError, match="agent"):
        AuditedAgentExecutor(ScriptedAgent(), trail, agent="")
    with pytest.raises(InvalidFieldError, match="durability"):
        AuditClientInterceptor(trail, agent="planner", durability="eventually")  # type: ignore[arg-type]
    with pytest.raises(FieldTypeError, match="trail"):
        AuditClientInterceptor("sqlite:///x.db", agent="planner")  # type: ignore[arg-type]


def a2a_modules_after(imports: str) -> list[str]:
    code = f"import sys, {imports}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'a2a'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(result.stdout)


def test_importing_audit_plugin_does_not_import_a2a() -> None:
    assert a2a_modules_after("audit_plugin, audit_plugin.integrations") == []
    assert "a2a.client" in a2a_modules_after("audit_plugin.integrations.a2a")  # the check sees an import


def test_example_a2a_agents(database_url: str, tmp_path: Path) -> None:
    out = run_example("a2a_agents.py", database_url, cwd=tmp_path)
    assert "planner asked '100 EUR USD', got '108.00 USD'" in out
    assert "planner asked '5 EUR JPY', TASK_STATE_FAILED: no rate for EUR -> JPY" in out
    assert "planner -> exchange COMMAND FAILED (task failed: no rate for EUR -> JPY)" in out
    assert "verify: OK" in out
    assert stored(database_url) == {
        ("planner", "exchange", MessageStatus.DELIVERED): 1,
        ("planner", "exchange", MessageStatus.FAILED): 1,
        ("exchange", "planner", MessageStatus.DELIVERED): 3,  # the answer, the task, its failed status
    }
