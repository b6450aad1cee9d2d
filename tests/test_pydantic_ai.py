"""The pydantic-ai integration: an AuditCapability on agents run with pydantic-ai's test models (no LLM, no network)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.exceptions import UnexpectedModelBehavior
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from audit_plugin import AuditQuery, AuditRecord, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.integrations.pydantic_ai import AuditCapability
from tests.test_examples import run_example, stored


async def all_records(trail: MessageAuditTrail) -> list[AuditRecord]:
    await trail.flush()
    return list(reversed(await trail.query_messages(AuditQuery(limit=1000))))


def flow(records: list[AuditRecord]) -> list[tuple[str, str, str, str]]:
    return [(r.from_agent, r.to_agent, r.message_type.value, r.status.value) for r in records]


def team(capability: AuditCapability | None) -> Agent[None, str]:
    """``planner`` (TestModel: calls every tool once, then answers) with ``ask_researcher`` (delegates)
    and ``stock`` (asks the model to retry the first time)."""
    capabilities = [capability] if capability is not None else []
    researcher = Agent(TestModel(custom_output_text="9 sold"), name="researcher", capabilities=capabilities)
    planner = Agent(TestModel(), name="planner", capabilities=capabilities)
    calls = {"stock": 0}

    @planner.tool_plain
    async def ask_researcher(question: str) -> str:
        return (await researcher.run(question)).output

    @planner.tool_plain
    def stock(sku: str) -> dict[str, Any]:
        calls["stock"] += 1
        if calls["stock"] == 1:
            raise ModelRetry("unknown SKU, try again")
        return {"units": 42, "ratio": math.nan, "raw": b"\x00\x01", "note": "a\x00b"}  # odd values on purpose

    return planner


async def test_run_tools_and_delegation_are_messages_between_named_agents(trail: MessageAuditTrail) -> None:
    audit = AuditCapability(trail)
    result = await team(audit).run("stock of SKU-7?")
    records = await all_records(trail)

    run, *_ = records
    assert (run.from_agent, run.to_agent, run.message_type, run.status) == (
        "user",
        "planner",
        MessageType.QUERY,
        MessageStatus.DELIVERED,
    )
    assert run.payload["prompt"] == "stock of SKU-7?"
    assert {r.correlation_id for r in records} == {run.correlation_id}  # delegation included: one conversation
    by_id = {r.message_id: r for r in records}
    tool_calls = [r for r in records if r.to_agent.startswith("tool:")]
    assert sorted((r.to_agent, r.status) for r in tool_calls) == [
        ("tool:ask_researcher", MessageStatus.DELIVERED),
        ("tool:stock", MessageStatus.DELIVERED),
        ("tool:stock", MessageStatus.FAILED),
    ]
    failed = next(r for r in tool_calls if r.status == MessageStatus.FAILED)
    assert failed.error_message == "the tool asked the model to retry: unknown SKU, try again"
    assert all(r.reply_to == run.message_id for r in tool_calls)

    delegation = next(r for r in records if r.to_agent == "researcher")
    assert (delegation.from_agent, delegation.status) == ("planner", MessageStatus.DELIVERED)
    assert by_id[delegation.reply_to or ""].to_agent == "tool:ask_researcher"  # delegated from inside that call
    answer = next(r for r in records if r.reply_to == delegation.message_id and r.to_agent == "planner")
    assert answer.payload == {"output": "9 sold"}

    stock_answer = next(r for r in records if r.from_agent == "tool:stock")
    odd = stock_answer.payload["result"]
    assert odd["units"] == 42
    assert odd["ratio"]["$audit"] == "not-json" and odd["raw"]["$audit"] == "bytes"
    assert odd["note"] == "a\\x00b"

    models = [r for r in records if r.to_agent.startswith("model:")]
    assert all(r.status == MessageStatus.DELIVERED for r in models) and len(models) >= 4
    assert records[-1].payload == {"output": result.output} and records[-1].to_agent == "user"
    assert not any(r.status == MessageStatus.PENDING for r in records)
    assert audit.open_runs == 0
    assert (await trail.verify()).ok


async def test_auditing_changes_no_output_and_no_error(trail: MessageAuditTrail) -> None:
    plain = await team(None).run("stock of SKU-7?")
    audited = await team(AuditCapability(trail)).run("stock of SKU-7?")
    assert audited.output == plain.output

    def wrong_arguments(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart("lookup", {"wrong": 1})])

    errors = []
    for capabilities in ([], [AuditCapability(trail)]):
        agent = Agent(FunctionModel(wrong_arguments), name="bad", capabilities=capabilities, retries=1)
        agent.tool_plain(lambda q: q, name="lookup")
        with pytest.raises(UnexpectedModelBehavior) as raised:
            await agent.run("x")
        errors.append(str(raised.value))
    assert errors[0] == errors[1]
    records = await all_records(trail)
    run = next(r for r in records if r.to_agent == "bad")
    assert run.status == MessageStatus.FAILED and run.error_message == f"UnexpectedModelBehavior: {errors[1]}"
    lookups = [r for r in records if r.to_agent == "tool:lookup"]
    assert len(lookups) == 2
    assert all(
        r.status == MessageStatus.FAILED and r.error_message.startswith("arguments rejected: ValidationError")
        for r in lookups
    )  # type: ignore[union-attr]


async def test_output_that_fails_validation_is_a_retry_of_the_run(trail: MessageAuditTrail) -> None:
    answers = iter(["not a number", 42])

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"response": next(answers)})])

    agent = Agent(FunctionModel(model), name="counter", output_type=int, capabilities=[AuditCapability(trail)])
    assert (await agent.run("how many?")).output == 42
    records = await all_records(trail)
    run = next(r for r in records if r.to_agent == "counter")
    assert (run.status, run.retry_count) == (MessageStatus.DELIVERED, 1)


async def test_streamed_run_is_recorded_once_with_the_final_outcome(trail: MessageAuditTrail) -> None:
    agent = Agent(
        TestModel(custom_output_text="streamed answer"), name="streamer", capabilities=[AuditCapability(trail)]
    )
    async with agent.run_stream("stream please") as streamed:
        chunks = [chunk async for chunk in streamed.stream_text(delta=True)]
    assert "".join(chunks) == "streamed answer"
    records = await all_records(trail)
    assert flow(records) == [
        ("user", "streamer", "QUERY", "DELIVERED"),
        ("streamer", "model:test", "QUERY", "DELIVERED"),
        ("model:test", "streamer", "RESPONSE", "DELIVERED"),
        ("streamer", "user", "RESPONSE", "DELIVERED"),
    ]
    assert records[2].payload["response"]["parts"][0]["content"] == "streamed answer"


async def test_cancelled_run_fails_its_open_steps_and_leaves_nothing_pending(trail: MessageAuditTrail) -> None:
    audit = AuditCapability(trail)
    agent = Agent(TestModel(), name="waiter", capabilities=[audit])
    started = asyncio.Event()

    @agent.tool_plain
    async def wait_forever() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    run = asyncio.create_task(agent.run("wait"))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await audit.auditor.drain()
    records = await all_records(trail)
    assert not any(r.status == MessageStatus.PENDING for r in records)
    statuses = {
        r.to_agent: (r.status, r.error_message)
        for r in records
        if r.message_type == MessageType.QUERY and r.to_agent != "model:test"
    }
    assert statuses == {
        "waiter": (MessageStatus.FAILED, "cancelled"),
        "tool:wait_forever": (MessageStatus.FAILED, "cancelled"),
    }
    assert audit.open_runs == 0


async def test_concurrent_runs_keep_their_own_records(trail: MessageAuditTrail) -> None:
    audit = AuditCapability(trail)
    agent = Agent(TestModel(), name="echo", capabilities=[audit])

    @agent.tool_plain
    async def pause(text: str) -> str:
        await asyncio.sleep(0.01)
        return text

    results = await asyncio.gather(*(agent.run(f"prompt {n}") for n in range(8)))
    records = await all_records(trail)
    runs = [r for r in records if r.from_agent == "user"]
    assert sorted(r.payload["prompt"] for r in runs) == sorted(f"prompt {n}" for n in range(8))
    assert len({r.correlation_id for r in runs}) == 8
    for run, result in zip(sorted(runs, key=lambda r: r.payload["prompt"]), results, strict=True):
        mine = [r for r in records if r.correlation_id == run.correlation_id]
        assert [r.to_agent for r in mine if r.from_agent == "echo" and r.to_agent.startswith("tool:")] == ["tool:pause"]
        assert mine[-1].payload == {"output": result.output}
    assert all(r.status == MessageStatus.DELIVERED for r in records)
    assert len({r.message_id for r in records}) == len(records)


@pytest.fixture
async def lingering_trail(database_url: str) -> Any:
    """A trail whose writer waits 0.3 s for each batch to fill: a record is committed late unless awaited."""
    async with MessageAuditTrail(database_url, batch_interval=0.3) as trail:
        yield trail


@pytest.mark.parametrize(("durability", "seen"), [("commit", 1), ("buffered", 0)])
async def test_commit_durability_records_the_tool_call_before_the_tool_runs(
    lingering_trail: MessageAuditTrail, durability: str, seen: int
) -> None:
    agent = Agent(TestModel(), name="checker", capabilities=[AuditCapability(lingering_trail, durability=durability)])  # type: ignore[arg-type]
    counted: list[int] = []

    @agent.tool_plain
    async def count_my_call() -> str:
        counted.append(await lingering_trail.count_messages(AuditQuery(to_agent="tool:count_my_call")))
        return "ok"

    await agent.run("check")
    assert counted == [seen]


async def test_spans_carry_the_genai_attributes(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    await team(AuditCapability(trail, tracer_provider=provider)).run("stock?")
    records = await all_records(trail)
    conversation = records[0].correlation_id
    spans = {span.name: span for span in exporter.get_finished_spans()}
    invoke, chat, tool = spans["send planner"], spans["send model:test"], spans["send tool:ask_researcher"]
    assert invoke.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert invoke.attributes["gen_ai.agent.name"] == "planner"
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert (chat.attributes["gen_ai.request.model"], chat.attributes["gen_ai.provider.name"]) == ("test", "test")
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "ask_researcher"
    assert tool.attributes["gen_ai.tool.call.id"]
    assert {span.attributes["gen_ai.conversation.id"] for span in (invoke, chat, tool)} == {conversation}
    delegated = spans["send researcher"]
    assert (delegated.attributes["gen_ai.agent.name"], delegated.attributes["messaging.audit_plugin.from_agent"]) == (
        "researcher",
        "planner",
    )


async def test_bad_options_are_typed_errors_naming_the_field(trail: MessageAuditTrail) -> None:
    with pytest.raises(InvalidFieldError, match="agent"):
        AuditCapability(trail, agent="")
    with pytest.raises(InvalidFieldError, match="commit_timeout"):
        AuditCapability(trail, commit_timeout=-1)
    with pytest.raises(FieldTypeError, match="trail"):
        AuditCapability("sqlite:///x.db")  # type: ignore[arg-type]


def test_example_pydantic_ai_agents(database_url: str, tmp_path: Path) -> None:
    out = run_example("pydantic_ai_agents.py", database_url, cwd=tmp_path)
    assert "planner answered: north holds 42 units; yes, 9 sold today" in out
    assert "planner -> tool:warehouse QUERY FAILED (the tool asked the model to retry:" in out
    assert "planner -> researcher QUERY DELIVERED" in out
    assert "verify: OK" in out
    counts = stored(database_url)
    assert counts[("planner", "tool:warehouse", MessageStatus.FAILED)] == 1
    assert counts[("planner", "researcher", MessageStatus.DELIVERED)] == 1
    assert not any(status == MessageStatus.PENDING for _, _, status in counts)
