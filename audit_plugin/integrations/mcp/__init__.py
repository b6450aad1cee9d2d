"""Audit Model Context Protocol (MCP) servers and clients on the ``mcp`` SDK 2.x (``pip install "audit-plugin[mcp]"``).

Server side, one middleware::

    server = MCPServer("weather", middleware=[AuditMiddleware(trail, agent="weather")])

Client side, the transport wrapped::

    async with Client(AuditedTransport("http://127.0.0.1:8000/mcp", trail, agent="planner")) as client:
        ...

Every request and notification, in both directions, with its result or
error: :mod:`~audit_plugin.integrations.mcp.server`,
:mod:`~audit_plugin.integrations.mcp.client`,
:mod:`~audit_plugin.integrations.mcp.records` and docs/agent-frameworks.md.
"""

from __future__ import annotations

from audit_plugin.integrations.mcp.client import AuditedTransport
from audit_plugin.integrations.mcp.records import CONVERSATION_META, FROM_AGENT_META, MESSAGE_ID_META
from audit_plugin.integrations.mcp.server import AuditMiddleware

__all__ = ["CONVERSATION_META", "FROM_AGENT_META", "MESSAGE_ID_META", "AuditMiddleware", "AuditedTransport"]
