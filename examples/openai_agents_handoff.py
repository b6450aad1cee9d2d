"""An OpenAI Agents SDK run with a tool and a handoff, audited (no network, no model, no API key).

``triage`` looks up two orders with its ``order_status`` tool (the second
lookup fails on purpose: there is no order 999, so a FAILED record appears)
and hands the customer off to ``billing``, which answers. Both agents run
on the SDK's scripted test model (``agents.testing.ScriptedModel``); the
run carries ``hooks=AuditRunHooks(trail)``: the input, each model call, tool
call and the handoff are one record each, in one conversation.

Run (needs ``pip install "audit-plugin[openai-agents]"``)::

    python examples/openai_agents_handoff.py [DATABASE_URL]

It writes to the database URL given, else to ``AUDIT_DATABASE_URL``, else
to ``openai_agents_audit.db`` here; then try ``audit-plugin conversation <id it prints>``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agents import Agent, Runner, function_tool, set_trace_processors
from agents.testing import ScriptedModel, assistant_message, function_call

from audit_plugin import MessageAuditTrail
from audit_plugin.integrations.openai_agents import AuditRunHooks

ORDERS = {"123": "shipped"}


@function_tool
def order_status(order_id: str) -> str:
    """The status of an order."""
    if order_id not in ORDERS:
        raise LookupError(f"no order {order_id}")
    return ORDERS[order_id]


async def main(database_url: str) -> None:
    set_trace_processors([])  # the SDK's own trace export (to OpenAI) off: nothing leaves this machine
    billing = Agent(
        name="billing", model=ScriptedModel([[assistant_message("Order 123 is shipped; 999 does not exist.")]])
    )
    triage = Agent(
        name="triage",
        model=ScriptedModel(
            [
                [function_call("order_status", {"order_id": "123"}, call_id="call-1")],
                [function_call("order_status", {"order_id": "999"}, call_id="call-2")],
                [function_call("transfer_to_billing", {}, call_id="call-3")],
            ]
        ),
        tools=[order_status],
        handoffs=[billing],
    )
    async with MessageAuditTrail(database_url) as trail:
        result = await Runner.run(
            triage, "Where are my orders 123 and 999?", hooks=AuditRunHooks(trail)
        )  # the one line
        print(f"{result.last_agent.name} answered: {result.final_output}")
        await trail.flush()

        [first] = [r for r in await trail.get_agent_communication_history("triage") if r.from_agent == "user"]
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
        else os.environ.get("AUDIT_DATABASE_URL", "sqlite+aiosqlite:///openai_agents_audit.db")
    )
    asyncio.run(main(url))
