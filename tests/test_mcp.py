"""The MCP integration: the server middleware and the client transport, through the SDK's in-memory transport.

No network and no model: an ``MCPServer`` and an ``mcp.Client`` in one
process, on every backend.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client._memory import InMemoryTransport
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from audit_plugin import AuditQuery, AuditRecord, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.integrations.mcp import MESSAGE_ID_META, AuditedTransport, AuditMiddleware
from tests.test_examples import run_example, stored


def weather(trail: MessageAuditTrail | None = None, **options: Any) -> MCPServer:
    """A server with a tool (``forecast``; ``slow`` waits until cancelled), a resource and a prompt."""
    middleware = [AuditMiddleware(trail, agent="weather", **options)] if trail is not None else []
    server = MCPServer("weather", log_level="WARNING", middleware=middleware)
    seen: dict[str, Any] = {"slow": asyncio.Event()}
    server.seen = seen  # type: ignore[attr-defined]

    @server.tool()
    def forecast(city: str, ctx: Context) -> str:
        """Tomorrow's weather."""
        seen["meta"] = dict(ctx.request_context.meta or {})
        if city == "Atlantis":
            raise ToolError("no forecast for Atlantis")
        return f"sunny in {city}\x00"  # a NUL the stores cannot hold, passed through untouched

    @server.tool()
    async def slow(ctx: Context) -> str:
        """Waits until cancelled."""
        seen["slow"].set()
        await asyncio.Event().wait()
        return "never"

    @server.tool()
    async def pending_count(ctx: Context) -> int:
        """How many tools/call records are PENDING in the trail right now (the caller's own included)."""
        assert trail is not None
        records = await trail.query_messages(AuditQuery(status=MessageStatus.PENDING, to_agent="weather"))
        return sum(1 for record in records if record.payload.get("method") == "tools/call")

    @server.tool()
    async def check_client(ctx: Context) -> str:
        """Pings the client (a server-to-client request) and reports progress."""
        await ctx.report_progress(1, 2)
        await ctx.session.send_ping()
        return "client is alive"

    @server.resource("weather://cities")
    def cities() -> str:
        return "Oslo, Paris"

    @server.prompt()
    def packing(city: str) -> str:
        return f"What to pack for {city}?"

    return server


async def ignore_progress(progress: float, total: float | None, message: str | None) -> None:
    pass


async def exercise(client: Client) -> list[Any]:
    """Every kind of call, failing ones included; what each returned or raised."""
    seen: list[Any] = []
    seen.append((await client.call_tool("forecast", {"city": "Paris"})).model_dump())
    seen.append((await client.call_tool("forecast", {"city": "Atlantis"})).model_dump())
    seen.append((await client.read_resource("weather://cities")).contents[0].model_dump())
    seen.append((await client.get_prompt("packing", {"city": "Oslo"})).messages[0].model_dump())
    for bad in (client.get_prompt("nope", {}), client.session.send_ping()):
        try:
            seen.append(await bad)
        except MCPError as exc:
            seen.append(("MCPError", exc.error.code, exc.error.message))
    return seen


def without_meta(value: Any) -> Any:
    """A result without the server-info ``_meta`` (the same with and without auditing, but noisy to compare)."""
    if isinstance(value, dict):
        return {key: without_meta(item) for key, item in value.items() if key not in ("meta", "_meta")}
    if isinstance(value, list | tuple):
        return type(value)(without_meta(item) for item in value)
    return value


def pairs(records: list[AuditRecord]) -> Counter[tuple[str, str, MessageType, MessageStatus]]:
    return Counter((r.from_agent, r.to_agent, r.message_type, r.status) for r in records)


async def all_records(trail: MessageAuditTrail) -> list[AuditRecord]:
    await trail.flush()
    return list(reversed(await trail.query_messages(AuditQuery(limit=1000))))


async def test_client_and_server_record_each_message_once_with_its_outcome(trail: MessageAuditTrail) -> None:
    server = weather(trail)
    async with Client(AuditedTransport(server, trail, agent="planner")) as client:
        await exercise(client)
    records = await all_records(trail)

    calls = [r for r in records if r.message_type == MessageType.QUERY]
    assert [r.payload["method"] for r in calls] == [
        "server/discover",
        "tools/call",
        "tools/list",  # the SDK lists tools to validate the first result against its output schema
        "tools/call",
        "resources/read",
        "prompts/get",
        "prompts/get",
        "ping",
    ]
    assert len({r.message_id for r in records}) == len(records) == 2 * len(calls)  # each message once, each answered
    by_id = {r.message_id: r for r in records}
    for call in calls:
        answer = by_id[f"{call.message_id}/response"]
        assert (answer.from_agent, answer.to_agent, answer.reply_to) == ("weather", "planner", call.message_id)
        assert answer.status == MessageStatus.DELIVERED
    assert {r.correlation_id for r in records} == {calls[0].correlation_id}
    assert all((r.from_agent, r.to_agent) == ("planner", "weather") for r in calls)

    paris, atlantis = (r for r in calls if r.payload["method"] == "tools/call")
    assert paris.status == MessageStatus.DELIVERED
    assert paris.payload["params"]["arguments"] == {"city": "Paris"}
    assert MESSAGE_ID_META not in paris.payload["params"]["_meta"]  # the audit's own stamps are not in the record
    assert by_id[f"{paris.message_id}/response"].payload["result"]["content"][0]["text"] == "sunny in Paris\\x00"
    assert atlantis.status == MessageStatus.FAILED
    assert (
        atlantis.error_message
        == "tool 'forecast' returned an error: Error executing tool forecast: no forecast for Atlantis"
    )
    unknown = next(r for r in calls if (r.payload["params"] or {}).get("name") == "nope")
    assert unknown.status == MessageStatus.FAILED
    assert unknown.error_message == "the handler raised ValueError: Unknown prompt: nope"  # the server's reason, first
    assert by_id[f"{unknown.message_id}/response"].payload["error"]["code"] == -32603  # the reply the client read
    assert server.seen["meta"].keys().isdisjoint({MESSAGE_ID_META})  # the handler never sees the stamps
    assert (await trail.verify()).ok


async def test_auditing_changes_no_result_and_no_error(trail: MessageAuditTrail) -> None:
    async with Client(InMemoryTransport(weather())) as client:
        plain = await exercise(client)
    async with Client(AuditedTransport(weather(trail), trail, agent="planner")) as client:
        audited = await exercise(client)
    assert without_meta(audited) == without_meta(plain)
    assert plain[0]["content"][0]["text"] == "sunny in Paris\x00"


async def test_server_alone_names_the_client_from_its_client_info(trail: MessageAuditTrail) -> None:
    async with Client(weather(trail)) as client:  # the SDK's in-process path, no audited client
        await client.call_tool("forecast", {"city": "Paris"})
    records = await all_records(trail)
    call = next(r for r in records if r.payload.get("method") == "tools/call")
    assert (call.from_agent, call.to_agent, call.status) == ("mcp", "weather", MessageStatus.DELIVERED)
    assert (
        pairs(records)[("weather", "mcp", MessageType.RESPONSE, MessageStatus.DELIVERED)] == 3
    )  # discover, call, list


async def test_client_alone_learns_the_server_name_from_its_answers(trail: MessageAuditTrail) -> None:
    async with Client(AuditedTransport(InMemoryTransport(weather()), trail, agent="planner")) as client:
        await client.call_tool("forecast", {"city": "Paris"})
    records = await all_records(trail)
    discover, call, _list = (r for r in records if r.message_type == MessageType.QUERY)
    assert discover.to_agent == "unknown"  # sent before the server said who it is
    assert call.to_agent == "weather" and call.status == MessageStatus.DELIVERED


async def test_legacy_handshake_and_notifications_are_recorded(trail: MessageAuditTrail) -> None:
    async with Client(AuditedTransport(weather(trail), trail, agent="planner"), mode="legacy") as client:
        await client.call_tool("forecast", {"city": "Oslo"})
    records = await all_records(trail)
    methods = [(r.message_type, r.payload.get("method")) for r in records if r.message_type != MessageType.RESPONSE]
    assert methods[:2] == [(MessageType.QUERY, "initialize"), (MessageType.NOTIFICATION, "notifications/initialized")]
    [initialized] = [r for r in records if r.message_type == MessageType.NOTIFICATION]
    assert (initialized.from_agent, initialized.to_agent, initialized.status) == (
        "planner",
        "weather",
        MessageStatus.DELIVERED,
    )
    assert all(r.status == MessageStatus.DELIVERED for r in records)


async def test_server_requests_and_progress_reach_the_client_records(trail: MessageAuditTrail) -> None:
    transport = AuditedTransport(weather(trail), trail, agent="planner")
    async with Client(transport, mode="legacy") as client:
        result = await client.call_tool("check_client", {}, progress_callback=ignore_progress)
    assert result.content[0].text == "client is alive"  # type: ignore[union-attr]
    records = await all_records(trail)
    call = next(r for r in records if r.payload.get("method") == "tools/call")
    ping = next(r for r in records if r.payload.get("method") == "ping")
    assert (ping.from_agent, ping.to_agent, ping.status) == ("weather", "planner", MessageStatus.DELIVERED)
    answer = next(r for r in records if r.reply_to == ping.message_id)
    assert (answer.from_agent, answer.message_type, answer.payload["result"]) == ("planner", MessageType.RESPONSE, {})
    progress = next(r for r in records if r.payload.get("method") == "notifications/progress")
    assert (progress.from_agent, progress.reply_to) == ("weather", call.message_id)
    assert transport.pending == 0


async def test_cancelled_call_is_failed_once_and_nothing_stays_pending(trail: MessageAuditTrail) -> None:
    server = weather(trail)
    transport = AuditedTransport(server, trail, agent="planner")
    async with Client(transport, mode="legacy") as client:
        call = asyncio.create_task(client.call_tool("slow", {}))
        await server.seen["slow"].wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (await client.call_tool("forecast", {"city": "Oslo"})).is_error is False  # the session goes on
    await transport.auditor.drain()
    await server._lowlevel_server.middleware[-1].auditor.drain()  # type: ignore[attr-defined]
    records = await all_records(trail)
    slow = next(r for r in records if (r.payload.get("params") or {}).get("name") == "slow")
    assert slow.status == MessageStatus.FAILED
    assert slow.error_message in ("cancelled by the client: caller cancelled", "cancelled")
    assert not any(r.status == MessageStatus.PENDING for r in records)
    assert len({r.message_id for r in records}) == len(records)


async def test_concurrent_calls_each_get_one_record_and_one_answer(trail: MessageAuditTrail) -> None:
    cities = [f"city-{n}" for n in range(12)]
    async with Client(AuditedTransport(weather(trail), trail, agent="planner")) as client:
        results = await asyncio.gather(*(client.call_tool("forecast", {"city": city}) for city in cities))
    assert [r.content[0].text for r in results] == [f"sunny in {city}\x00" for city in cities]  # type: ignore[union-attr]
    records = await all_records(trail)
    forecasts = [r for r in records if r.payload.get("method") == "tools/call"]
    assert sorted(r.payload["params"]["arguments"]["city"] for r in forecasts) == sorted(cities)
    assert all(r.status == MessageStatus.DELIVERED for r in records)
    queries = [r for r in records if r.message_type == MessageType.QUERY]
    answered = Counter(r.reply_to for r in records if r.message_type == MessageType.RESPONSE)
    assert answered == Counter(r.message_id for r in queries)  # each request answered once (tools/list: one per call)


@pytest.fixture
async def lingering_trail(database_url: str) -> Any:
    """A trail whose writer waits 0.3 s for each batch to fill: a record is committed late unless awaited."""
    async with MessageAuditTrail(database_url, batch_interval=0.3) as trail:
        yield trail


@pytest.mark.parametrize(("durability", "pending"), [("commit", 1), ("buffered", 0)])
async def test_commit_durability_records_the_call_before_the_tool_runs(
    lingering_trail: MessageAuditTrail, durability: str, pending: int
) -> None:
    async with Client(weather(lingering_trail, durability=durability)) as client:
        result = await client.call_tool("pending_count", {})
    assert result.structured_content == {"result": pending}


async def test_spans_carry_mcp_and_genai_attributes_in_one_trace(
    trail: MessageAuditTrail, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    server = weather(trail, tracer_provider=provider)
    async with Client(AuditedTransport(server, trail, agent="planner", tracer_provider=provider)) as client:
        await client.call_tool("forecast", {"city": "Paris"})
    records = await all_records(trail)
    call = next(r for r in records if r.payload.get("method") == "tools/call")
    spans = exporter.get_finished_spans()
    send = next(s for s in spans if s.name == "send weather" and s.attributes["mcp.method.name"] == "tools/call")
    process = next(s for s in spans if s.name == "process weather" and s.attributes["mcp.method.name"] == "tools/call")
    assert send.kind == SpanKind.PRODUCER and process.kind == SpanKind.CONSUMER
    for span in (send, process):
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.attributes["gen_ai.tool.name"] == "forecast"
        assert span.attributes["mcp.session.id"] == call.correlation_id
        assert span.attributes["jsonrpc.request.id"] == str(call.payload["id"])
    assert send.attributes["gen_ai.agent.name"] == "planner"
    assert process.context.trace_id == send.context.trace_id  # the server joined the client's trace
    assert call.trace_id == format(send.context.trace_id, "032x")
    assert call.span_id == format(send.context.span_id, "016x")  # the client recorded it first


async def test_bad_options_are_typed_errors_naming_the_field(trail: MessageAuditTrail) -> None:
    with pytest.raises(InvalidFieldError, match="agent"):
        AuditMiddleware(trail, agent="")
    with pytest.raises(InvalidFieldError, match="durability"):
        AuditedTransport(weather(), trail, agent="planner", durability="eventually")  # type: ignore[arg-type]
    with pytest.raises(FieldTypeError, match="trail"):
        AuditMiddleware("sqlite:///x.db", agent="weather")  # type: ignore[arg-type]
    with pytest.raises(FieldTypeError, match="server"):
        AuditedTransport(weather(), trail, agent="planner", server=3)  # type: ignore[arg-type]


def test_example_mcp_agents(database_url: str, tmp_path: Path) -> None:
    out = run_example("mcp_agents.py", database_url, cwd=tmp_path)
    assert "planner called forecast('Paris'): sunny, 21 °C" in out
    assert "planner -> weather QUERY tools/call FAILED (tool 'forecast' returned an error:" in out
    assert "verify: OK" in out
    assert stored(database_url) == {
        ("planner", "weather", MessageStatus.DELIVERED): 5,  # discover, read, call, tools/list, prompt
        ("planner", "weather", MessageStatus.FAILED): 1,
        ("weather", "planner", MessageStatus.DELIVERED): 6,
    }


def test_example_mcp_agents_writes_to_audit_database_url(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'from_env.db'}"
    run_example("mcp_agents.py", cwd=tmp_path, AUDIT_DATABASE_URL=url)
    assert (tmp_path / "from_env.db").exists() and not (tmp_path / "mcp_audit.db").exists()
