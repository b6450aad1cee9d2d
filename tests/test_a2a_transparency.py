"""The A2A adapters change nothing an A2A caller sees: requests, streaming and errors, with and without them.

Modelled on a2a-sdk's own request-handler and client tests: the same calls
go to a server and client built without the adapters and to ones built with
them (over real HTTP, JSON-RPC), and what the caller gets must be equal once
the ids that are random on every run are set aside.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from a2a.client import ClientConfig, create_client
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import GetTaskRequest, Part, Role, SendMessageRequest
from a2a.types import Message as A2AMessage
from google.protobuf.json_format import MessageToDict, MessageToJson
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus
from audit_plugin.integrations.a2a import AuditClientInterceptor, AuditedAgentExecutor
from audit_plugin.integrations.payloads import storable_text
from tests.a2a_support import ScriptedAgent, agent_card, free_socket, serve

RANDOM_KEYS = frozenset({"messageId", "contextId", "taskId", "id", "timestamp"})
"""Fields the SDK (or the agent) fills with a new random value or the time on every run."""


def comparable(value: Any) -> Any:
    """A protobuf result (or error) as a plain structure without the values that differ on every run."""
    if hasattr(value, "DESCRIPTOR"):
        value = MessageToDict(value)
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items() if key not in RANDOM_KEYS}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


@asynccontextmanager
async def a2a_client(trail: MessageAuditTrail | None, *, streaming: bool) -> AsyncIterator[Any]:
    """A client of the scripted agent over HTTP: both audited when ``trail`` is given, neither otherwise."""
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    card = agent_card("ledger", url, streaming=streaming)
    executor: Any = ScriptedAgent()
    interceptors: list[Any] = []
    if trail is not None:
        executor = AuditedAgentExecutor(executor, trail, agent=card)
        interceptors = [AuditClientInterceptor(trail, agent="planner")]
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    async with serve(handler, card, sock):
        client = await create_client(url, ClientConfig(streaming=streaming), interceptors=interceptors)
        if interceptors:
            client = interceptors[0].wrap(client)
        async with client:
            yield client


Call = Callable[[Any], Any]


async def outcome_of(client: Any, call: Call) -> Any:
    """What a caller sees from ``call(client)``: its events, or the type and text of its error."""
    try:
        return ("events", [comparable(event) for event in await call(client)])
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


async def same_with_and_without(trail: MessageAuditTrail, call: Call, *, streaming: bool) -> Any:
    seen = []
    for audited in (None, trail):
        async with a2a_client(audited, streaming=streaming) as client:
            seen.append(await outcome_of(client, call))
    without, with_audit = seen
    assert with_audit == without
    await trail.flush()
    return with_audit


def send(text: str, message_id: str = "m-1") -> Call:
    async def call(client: Any) -> list[Any]:
        message = A2AMessage(message_id=message_id, role=Role.ROLE_USER, parts=[Part(text=text)])
        return [event async for event in client.send_message(SendMessageRequest(message=message))]

    return call


def ask_then_answer(client: Any) -> Any:
    """A task that waits for input, then the follow-up that completes it (the SDK's task ends)."""

    async def call(client: Any) -> list[Any]:
        asked = await send("ask", "m-ask")(client)
        task_id = next(event.task.id for event in asked if event.HasField("task"))
        context_id = next(event.task.context_id for event in asked if event.HasField("task"))
        follow_up = A2AMessage(
            message_id="m-answer",
            role=Role.ROLE_USER,
            parts=[Part(text="savings")],
            task_id=task_id,
            context_id=context_id,
        )
        return [*asked, *[event async for event in client.send_message(SendMessageRequest(message=follow_up))]]

    return call(client)


@pytest.mark.parametrize("streaming", [False, True], ids=["request", "streaming"])
@pytest.mark.parametrize("scenario", ["hello", "fail", "reject", "ask"])
async def test_requests_and_streams_give_the_same_events(
    trail: MessageAuditTrail, streaming: bool, scenario: str
) -> None:
    call = ask_then_answer if scenario == "ask" else send(scenario)
    kind, events = await same_with_and_without(trail, call, streaming=streaming)
    assert kind == "events" and events
    assert await trail.count_messages(AuditQuery(status=MessageStatus.PENDING)) == 0


@pytest.mark.parametrize("streaming", [False, True], ids=["request", "streaming"])
async def test_an_agent_error_reaches_the_caller_unchanged(trail: MessageAuditTrail, streaming: bool) -> None:
    outcome = await same_with_and_without(trail, send("boom"), streaming=streaming)
    assert outcome[0] == "raised"
    [record] = [record async for record in trail.stream_messages(AuditQuery())]
    assert record.status is MessageStatus.FAILED and "kaboom" in (record.error_message or "")


async def test_an_error_reply_of_the_sdk_reaches_the_caller_unchanged(trail: MessageAuditTrail) -> None:
    async def unknown_task(client: Any) -> list[Any]:
        return [await client.get_task(GetTaskRequest(id="no-such-task"))]

    outcome = await same_with_and_without(trail, unknown_task, streaming=False)
    assert (outcome[0] == "raised" and "no-such-task" in outcome[2].lower()) or "not found" in outcome[2].lower()


async def test_the_callers_request_is_left_as_the_sdk_leaves_it(trail: MessageAuditTrail) -> None:
    after = []
    for audited in (None, trail):
        message = A2AMessage(message_id="m-9", role=Role.ROLE_USER, parts=[Part(text="hello")])
        request = SendMessageRequest(message=message)
        async with a2a_client(audited, streaming=False) as client:
            [event] = [event async for event in client.send_message(request)]
        after.append(request.SerializeToString(deterministic=True))
    assert after[1] == after[0]  # no context id and no header written into the caller's object
    assert not request.message.context_id
    await trail.flush()
    sent = await trail.get_message("m-9")
    assert sent is not None and sent.correlation_id == event.message.context_id


@pytest.mark.parametrize("streaming", [False, True], ids=["request", "streaming"])
async def test_text_the_store_cannot_keep_is_answered_and_recorded_as_base64(
    trail: MessageAuditTrail, streaming: bool
) -> None:
    outcome = await same_with_and_without(trail, send("nul \x00 inside", "m-nul"), streaming=streaming)
    assert outcome[0] == "events"
    sent = await trail.get_message("m-nul")
    assert sent is not None and sent.status is MessageStatus.DELIVERED
    assert set(sent.payload) == {"body_base64", "content_type"}
    assert "nul \\u0000 inside" in base64.b64decode(sent.payload["body_base64"]).decode()


async def test_ids_the_store_cannot_keep_are_answered_and_recorded_the_same_on_both_sides(
    trail: MessageAuditTrail,
) -> None:
    long_id = "id-" + "y" * 1500
    outcome = await same_with_and_without(trail, send("hello", long_id), streaming=False)
    assert outcome[0] == "events"
    sent = await trail.get_message(storable_text(long_id, None) or "")
    assert sent is not None and (sent.from_agent, sent.status) == ("planner", MessageStatus.DELIVERED)
    history = await trail.get_message_history(sent.message_id)
    assert [step.status for step in history] == [MessageStatus.PENDING, MessageStatus.DELIVERED]  # one record


def test_a_base64_fallback_is_the_events_own_json() -> None:
    from audit_plugin.integrations.a2a.records import request_record

    message = A2AMessage(message_id="m-1", role=Role.ROLE_USER, parts=[Part(text="a\x00b")])
    record = request_record(message, from_agent="planner", to_agent="ledger")
    assert base64.b64decode(record.payload["body_base64"]) == MessageToJson(message, indent=None).encode()


@given(
    message_id=st.text(max_size=1500),
    text=st.text(max_size=50),
    context_id=st.text(max_size=1500),
    agent=st.text(max_size=1500),
)
@settings(max_examples=150, deadline=None)
def test_any_message_the_sdk_takes_becomes_a_record_the_store_keeps(
    message_id: str, text: str, context_id: str, agent: str
) -> None:
    from audit_plugin.integrations.a2a.records import request_record
    from audit_plugin.model import validation as v
    from audit_plugin.model.records import check_message

    message = A2AMessage(message_id=message_id, context_id=context_id, role=Role.ROLE_USER, parts=[Part(text=text)])
    record = request_record(message, from_agent=agent, to_agent="ledger")
    check_message(record)  # every field storable
    v.encode_payload(record.payload)
    assert record.message_id == (storable_text(message_id, None) or record.message_id)
