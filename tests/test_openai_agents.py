"""The OpenAI Agents SDK integration: AuditRunHooks on runs of the SDK's scripted test model (no network, no key)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from audit_plugin import AuditQuery, AuditRecord, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.integrations.openai_agents import AuditRunHooks
from tests.test_examples import run_example, stored


@pytest.fixture(autouse=True)
def no_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's default trace exporter sends to OpenAI only with a key: none here, nothing leaves."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@function_tool
def order_status(order_id: str) -> str:
    """The status of an order."""
    if order_id != "123":
        raise LookupError(f"no order {order_id}")
    return "shipped"


def triage() -> Agent[Any]:
    """``triage`` looks up order 123 (works) and 999 (the tool raises), then hands off to ``billing``."""
    billing = Agent(name="billing", model=ScriptedModel([[assistant_message("123 shipped, 999 unknown")]]))
    return Agent(
        name="triage",
        model=ScriptedModel(
            [
                [
                    function_call("order_status", {"order_id": "123"}, call_id="call-1"),
                    function_call("order_status", {"order_id": "999"}, call_id="call-2"),
                ],
                [function_call("transfer_to_billing", {}, call_id="call-3")],
            ]
        ),
        tools=[order_status],
        handoffs=[billing],
    )


async def all_records(trail: MessageAuditTrail, hooks: AuditRunHooks | None = None) -> list[AuditRecord]:
    if hooks is not None:
        await hooks.auditor.drain()
    await trail.flush()
    return list(reversed(await trail.query_messages(AuditQuery(limit=1000))))


def flow(records: list[AuditRecord]) -> list[tuple[str, str, str, str]]:
    return [(r.from_agent, r.to_agent, r.message_type.value, r.status.value) for r in records]


async def test_run_tools_and_handoff_are_messages_between_named_agents(trail: MessageAuditTrail) -> None:
    hooks = AuditRunHooks(trail)
    result = await Runner.run(triage(), "where are 123 and 999?", hooks=hooks)
    records = await all_records(trail, hooks)

    model = "model:ScriptedModel"
    assert flow(records) == [
        ("user", "triage", "QUERY", "DELIVERED"),
        ("triage", model, "QUERY", "DELIVERED"),
        (model, "triage", "RESPONSE", "DELIVERED"),
        ("triage", "tool:order_status", "QUERY", "DELIVERED"),
        ("triage", "tool:order_status", "QUERY", "FAILED"),
        ("tool:order_status", "triage", "RESPONSE", "DELIVERED"),
        ("tool:order_status", "triage", "RESPONSE", "DELIVERED"),
        ("triage", model, "QUERY", "DELIVERED"),
        (model, "triage", "RESPONSE", "DELIVERED"),
        ("triage", "billing", "COMMAND", "DELIVERED"),
        ("billing", model, "QUERY", "DELIVERED"),
        (model, "billing", "RESPONSE", "DELIVERED"),
        ("billing", "user", "RESPONSE", "DELIVERED"),
    ]
    run = records[0]
    assert run.payload == {"input": [{"content": "where are 123 and 999?", "role": "user"}]}
    assert {r.correlation_id for r in records} == {run.correlation_id} and run.correlation_id.startswith("trace_")  # type: ignore[union-attr]
    failed = records[4]
    assert failed.payload == {"tool": "order_status", "tool_call_id": "call-2", "arguments": {"order_id": "999"}}
    assert failed.error_message == "Error running tool (non-fatal): Tool execution failed. Error details are redacted."
    assert failed.message_id == f"{run.message_id}/call-2"
    assert records[-1].payload == {"output": result.final_output} and records[-1].reply_to == run.message_id
    answers = {r.reply_to: r for r in records if r.message_type == MessageType.RESPONSE}
    assert answers[failed.message_id].payload["result"] == "An error occurred while running the tool. Please try again."
    assert hooks.open_runs == 0
    assert (await trail.verify()).ok


async def test_auditing_changes_no_result_and_no_error(trail: MessageAuditTrail) -> None:
    plain = await Runner.run(triage(), "where?")
    audited = await Runner.run(triage(), "where?", hooks=AuditRunHooks(trail))
    assert (audited.final_output, audited.last_agent.name) == (plain.final_output, plain.last_agent.name)

    errors = []
    for hooks in (None, AuditRunHooks(trail)):
        with pytest.raises(RuntimeError) as raised:
            await Runner.run(Agent(name="down", model=ScriptedModel([RuntimeError("model down")])), "x", hooks=hooks)
        errors.append(str(raised.value))
    assert errors == ["model down", "model down"]


async def test_run_that_raises_fails_what_it_held_open(trail: MessageAuditTrail) -> None:
    hooks = AuditRunHooks(trail)
    with pytest.raises(RuntimeError, match="model down"):
        await Runner.run(Agent(name="down", model=ScriptedModel([RuntimeError("model down")])), "x", hooks=hooks)
    records = await all_records(trail, hooks)
    assert flow(records) == [("user", "down", "QUERY", "FAILED"), ("down", "model:ScriptedModel", "QUERY", "FAILED")]
    assert {r.error_message for r in records} == {"Error in agent run: model down"}
    assert hooks.open_runs == 0


async def test_streamed_run_is_recorded_once_with_the_final_outcome(trail: MessageAuditTrail) -> None:
    hooks = AuditRunHooks(trail)
    streamed = Runner.run_streamed(
        Agent(name="streamer", model=ScriptedModel([[assistant_message("hi!")]])), "x", hooks=hooks
    )
    events = [event async for event in streamed.stream_events()]
    assert events and streamed.final_output == "hi!"
    records = await all_records(trail, hooks)
    assert flow(records) == [
        ("user", "streamer", "QUERY", "DELIVERED"),
        ("streamer", "model:ScriptedModel", "QUERY", "DELIVERED"),
        ("model:ScriptedModel", "streamer", "RESPONSE", "DELIVERED"),
        ("streamer", "user", "RESPONSE", "DELIVERED"),
    ]


async def test_cancelled_run_leaves_nothing_pending(trail: MessageAuditTrail) -> None:
    started = asyncio.Event()

    @function_tool
    async def wait_forever() -> str:
        """Waits until cancelled."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    hooks = AuditRunHooks(trail)
    agent = Agent(
        name="waiter", model=ScriptedModel([[function_call("wait_forever", {}, call_id="w-1")]]), tools=[wait_forever]
    )
    run = asyncio.create_task(Runner.run(agent, "wait", hooks=hooks))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    records = await all_records(trail, hooks)
    assert not any(r.status == MessageStatus.PENDING for r in records)
    queries = {r.to_agent: r.status for r in records if r.message_type == MessageType.QUERY}
    assert queries == {
        "waiter": MessageStatus.FAILED,
        "model:ScriptedModel": MessageStatus.DELIVERED,
        "tool:wait_forever": MessageStatus.FAILED,
    }
    assert hooks.open_runs == 0


async def test_concurrent_runs_keep_their_own_records(trail: MessageAuditTrail) -> None:
    hooks = AuditRunHooks(trail)

    def agent(n: int) -> Agent[Any]:
        return Agent(name="echo", model=ScriptedModel([[assistant_message(f"answer {n}")]]))

    results = await asyncio.gather(*(Runner.run(agent(n), f"prompt {n}", hooks=hooks) for n in range(8)))
    records = await all_records(trail, hooks)
    runs = [r for r in records if r.from_agent == "user"]
    assert len({r.correlation_id for r in runs}) == 8
    for run in runs:
        n = int(run.payload["input"][0]["content"].split()[-1])
        answer = next(r for r in records if r.reply_to == run.message_id and r.to_agent == "user")
        assert answer.payload == {"output": results[n].final_output} == {"output": f"answer {n}"}
    assert all(r.status == MessageStatus.DELIVERED for r in records) and len(records) == 8 * 4


async def test_with_tracing_disabled_a_failed_run_is_settled_by_settle_open(trail: MessageAuditTrail) -> None:
    hooks = AuditRunHooks(trail)
    down = Agent(name="down", model=ScriptedModel([RuntimeError("model down")]))
    with pytest.raises(RuntimeError):
        await Runner.run(down, "x", hooks=hooks, run_config=RunConfig(tracing_disabled=True))
    assert hooks.open_runs == 1  # the SDK told nobody the run failed
    await hooks.settle_open()
    records = await all_records(trail, hooks)
    assert {(r.status, r.error_message) for r in records} == {
        (MessageStatus.FAILED, "the run ended without an outcome")
    }
    assert hooks.open_runs == 0


@pytest.fixture
async def lingering_trail(database_url: str) -> Any:
    """A trail whose writer waits 0.3 s for each batch to fill: a record is committed late unless awaited."""
    async with MessageAuditTrail(database_url, batch_interval=0.3) as trail:
        yield trail


@pytest.mark.parametrize(("durability", "seen"), [("commit", 1), ("buffered", 0)])
async def test_commit_durability_records_the_tool_call_before_the_tool_runs(
    lingering_trail: MessageAuditTrail, durability: str, seen: int
) -> None:
    counted: list[int] = []

    @function_tool
    async def count_my_call() -> str:
        """Counts its own record."""
        counted.append(await lingering_trail.count_messages(AuditQuery(to_agent="tool:count_my_call")))
        return "ok"

    model = ScriptedModel([[function_call("count_my_call", {}, call_id="c-1")], [assistant_message("done")]])
    agent = Agent(name="checker", model=model, tools=[count_my_call])
    await Runner.run(agent, "check", hooks=AuditRunHooks(lingering_trail, durability=durability))  # type: ignore[arg-type]
    assert counted == [seen]


async def test_spans_carry_the_genai_attributes(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    await Runner.run(triage(), "where?", hooks=AuditRunHooks(trail, tracer_provider=provider))
    records = await all_records(trail)
    conversation = records[0].correlation_id
    spans = exporter.get_finished_spans()
    by_name = {span.name: span for span in spans}
    invoke, handoff = by_name["send triage"], by_name["send billing"]
    assert (invoke.attributes["gen_ai.operation.name"], invoke.attributes["gen_ai.agent.name"]) == (
        "invoke_agent",
        "triage",
    )
    assert (handoff.attributes["gen_ai.operation.name"], handoff.attributes["gen_ai.agent.name"]) == (
        "invoke_agent",
        "billing",
    )
    tools = [span for span in spans if span.name == "send tool:order_status"]
    assert sorted(span.attributes["gen_ai.tool.call.id"] for span in tools) == ["call-1", "call-2"]
    assert {span.attributes["gen_ai.operation.name"] for span in tools} == {"execute_tool"}
    chat = by_name["send model:ScriptedModel"]
    assert (chat.attributes["gen_ai.operation.name"], chat.attributes["gen_ai.request.model"]) == (
        "chat",
        "ScriptedModel",
    )
    assert {span.attributes["gen_ai.conversation.id"] for span in spans} == {conversation}
    failed = next(span for span in tools if span.attributes["gen_ai.tool.call.id"] == "call-2")
    assert failed.attributes["error.type"] == "FAILED"


async def test_bad_options_are_typed_errors_naming_the_field(trail: MessageAuditTrail) -> None:
    with pytest.raises(InvalidFieldError, match="durability"):
        AuditRunHooks(trail, durability="eventually")  # type: ignore[arg-type]
    with pytest.raises(FieldTypeError, match="trail"):
        AuditRunHooks("sqlite:///x.db")  # type: ignore[arg-type]


def test_example_openai_agents_handoff(database_url: str, tmp_path: Path) -> None:
    out = run_example("openai_agents_handoff.py", database_url, cwd=tmp_path)
    assert "billing answered: Order 123 is shipped; 999 does not exist." in out
    assert "triage -> tool:order_status QUERY FAILED (Error running tool (non-fatal)" in out
    assert "triage -> billing COMMAND DELIVERED" in out
    assert "verify: OK" in out
    counts = stored(database_url)
    assert counts[("triage", "tool:order_status", MessageStatus.FAILED)] == 1
    assert counts[("triage", "billing", MessageStatus.DELIVERED)] == 1
    assert not any(status == MessageStatus.PENDING for _, _, status in counts)
