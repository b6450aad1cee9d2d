"""An MCP server and an MCP client, both audited into one trail (no network, no model, no API key).

``weather`` is an MCP server (the ``mcp`` SDK's ``MCPServer``) with a tool,
a resource and a prompt; ``planner`` is an MCP client that connects to it
through the SDK's in-memory transport. The server carries
``AuditMiddleware``, the client's transport is an ``AuditedTransport``; each
message is one record in one conversation, seen from both sides. One tool
call fails on purpose (there is no forecast for Atlantis), so a FAILED
record appears.

Run (needs ``pip install "audit-plugin[mcp]"``)::

    python examples/mcp_agents.py [DATABASE_URL]

It writes to the database URL given, else to ``AUDIT_DATABASE_URL``, else
to ``mcp_audit.db`` here; then try ``audit-plugin conversation <id it prints>``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from audit_plugin import MessageAuditTrail
from audit_plugin.integrations.mcp import AuditedTransport, AuditMiddleware

FORECASTS = {"Paris": "sunny, 21 °C", "Oslo": "snow, -3 °C"}


def weather_server(trail: MessageAuditTrail) -> MCPServer:
    server = MCPServer("weather", log_level="WARNING", middleware=[AuditMiddleware(trail, agent="weather")])

    @server.tool()
    def forecast(city: str) -> str:
        """Tomorrow's weather in a city."""
        if city not in FORECASTS:
            raise ToolError(f"no forecast for {city}")
        return FORECASTS[city]

    @server.resource("weather://cities")
    def cities() -> str:
        """The cities with a forecast."""
        return ", ".join(sorted(FORECASTS))

    @server.prompt()
    def packing_list(city: str) -> str:
        """Ask for a packing list."""
        return f"What should I pack for {city}?"

    return server


async def main(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        server = weather_server(trail)
        async with Client(AuditedTransport(server, trail, agent="planner")) as client:
            cities = await client.read_resource("weather://cities")
            print("planner read weather://cities:", cities.contents[0].text)  # type: ignore[union-attr]
            for city in ("Paris", "Atlantis"):
                result = await client.call_tool("forecast", {"city": city})
                text = result.content[0].text  # type: ignore[union-attr]
                print(f"planner called forecast({city!r}): {text}{' (error)' if result.is_error else ''}")
            prompt = await client.get_prompt("packing_list", {"city": "Oslo"})
            print("planner got prompt:", prompt.messages[0].content.text)  # type: ignore[union-attr]
        await trail.flush()

        records = await trail.get_agent_communication_history("planner")
        conversation = records[0].correlation_id
        print(f"\nConversation {conversation}: {len(records)} records")
        for record in await trail.get_conversation_history(conversation or ""):
            method = record.payload.get("method") or ("error" if "error" in record.payload else "result")
            reason = f" ({record.error_message})" if record.error_message else ""
            print(f"  {record.from_agent} -> {record.to_agent} {record.message_type} {method} {record.status}{reason}")
        print("verify:", "OK" if (await trail.verify()).ok else "BROKEN")
        print(f"next: audit-plugin conversation {conversation} --database-url {database_url}")


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AUDIT_DATABASE_URL", "sqlite+aiosqlite:///mcp_audit.db")
    asyncio.run(main(url))
