"""Two pydantic-ai agents, one delegating to the other, audited (no network, no model, no API key).

``planner`` answers a stock question by calling its tools: ``ask_researcher``
delegates to the ``researcher`` agent (an agent-to-agent message), and
``warehouse`` fails on purpose for an unknown warehouse (the tool asks the
model to retry), so a FAILED record appears. Both agents run on
pydantic-ai's scripted models (``FunctionModel``, ``TestModel``) and carry an
``AuditCapability``: each run, model request, tool call and delegation is
one record, in one conversation.

Run (needs ``pip install "audit-plugin[pydantic-ai]"``)::

    python examples/pydantic_ai_agents.py [DATABASE_URL]

It writes to the database URL given, else to ``AUDIT_DATABASE_URL``, else
to ``pydantic_ai_audit.db`` here; then try ``audit-plugin conversation <id it prints>``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from audit_plugin import MessageAuditTrail
from audit_plugin.integrations.pydantic_ai import AuditCapability

STOCK = {"north": 42}


def planner_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """A scripted model: ask the wrong warehouse, then the right one, then the researcher, then answer."""
    parts = [part for message in messages for part in message.parts]
    answered = {
        part.tool_name: part.content
        for part in parts
        if isinstance(part, ToolReturnPart) and getattr(part, "outcome", None) != "retried"
    }
    if not any(isinstance(part, ToolCallPart) for part in parts):
        return ModelResponse(parts=[ToolCallPart("warehouse", {"name": "south"})])
    if "warehouse" not in answered:
        return ModelResponse(parts=[ToolCallPart("warehouse", {"name": "north"})])
    if "ask_researcher" not in answered:
        return ModelResponse(parts=[ToolCallPart("ask_researcher", {"question": "is SKU-7 selling?"})])
    return ModelResponse(parts=[TextPart(f"north holds {answered['warehouse']} units; {answered['ask_researcher']}")])


async def main(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        audit = AuditCapability(trail)
        researcher = Agent(TestModel(custom_output_text="yes, 9 sold today"), name="researcher", capabilities=[audit])
        planner = Agent(FunctionModel(planner_model), name="planner", capabilities=[audit])  # the one line

        @planner.tool_plain
        def warehouse(name: str) -> int:
            """Units of SKU-7 in a warehouse."""
            if name not in STOCK:
                raise ModelRetry(f"no warehouse called {name!r}; try 'north'")
            return STOCK[name]

        @planner.tool_plain
        async def ask_researcher(question: str) -> str:
            """Ask the researcher agent."""
            return (await researcher.run(question)).output

        result = await planner.run("How many units of SKU-7 do we have, and is it selling?")
        print("planner answered:", result.output)
        await trail.flush()

        [first] = [r for r in await trail.get_agent_communication_history("planner") if r.from_agent == "user"]
        conversation = first.correlation_id or ""
        records = await trail.get_conversation_history(conversation)
        print(f"\nConversation {conversation}: {len(records)} records")
        for record in records:
            reason = f" ({record.error_message})" if record.error_message else ""
            print(f"  {record.from_agent} -> {record.to_agent} {record.message_type} {record.status}{reason}")
        print("verify:", "OK" if (await trail.verify()).ok else "BROKEN")
        print(f"next: audit-plugin conversation {conversation} --database-url {database_url}")


if __name__ == "__main__":
    url = (
        sys.argv[1]
        if len(sys.argv) > 1
        else os.environ.get("AUDIT_DATABASE_URL", "sqlite+aiosqlite:///pydantic_ai_audit.db")
    )
    asyncio.run(main(url))
