"""OpenTelemetry GenAI (and MCP) semantic-convention attributes on the agent-framework adapters' spans.

Names as the OpenTelemetry semantic conventions v1.44.0 define them (the
``opentelemetry-semantic-conventions`` 0.66b2 package). That release moved
the ``gen_ai.*`` and ``mcp.*`` attributes, unchanged, to the GenAI
semantic-conventions repository (status: development); none used here was
renamed or removed (``gen_ai.system`` was: ``gen_ai.provider.name`` is used).
Kept as plain strings, so the runtime needs no semantic-conventions package
(the tests check them against it). Which attribute goes on which span, and
how it matches the record's own fields: docs/agent-frameworks.md.
"""

from __future__ import annotations

from typing import Any

SEMCONV_VERSION = "1.44.0"
"""Semantic-conventions version these names follow."""

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_PROMPT_NAME = "gen_ai.prompt.name"
MCP_METHOD_NAME = "mcp.method.name"
MCP_SESSION_ID = "mcp.session.id"
MCP_RESOURCE_URI = "mcp.resource.uri"
JSONRPC_REQUEST_ID = "jsonrpc.request.id"

# gen_ai.operation.name values
INVOKE_AGENT = "invoke_agent"
EXECUTE_TOOL = "execute_tool"
CHAT = "chat"


def genai_attributes(
    operation: str,
    *,
    agent: str | None = None,
    agent_id: str | None = None,
    conversation: str | None = None,
    tool: str | None = None,
    tool_call_id: str | None = None,
    model: str | None = None,
    provider: str | None = None,
) -> dict[str, Any]:
    """The ``gen_ai.*`` attributes of one operation, leaving out what is not known."""
    pairs = {
        GEN_AI_OPERATION_NAME: operation,
        GEN_AI_AGENT_NAME: agent,
        GEN_AI_AGENT_ID: agent_id,
        GEN_AI_CONVERSATION_ID: conversation,
        GEN_AI_TOOL_NAME: tool,
        GEN_AI_TOOL_CALL_ID: tool_call_id,
        GEN_AI_REQUEST_MODEL: model,
        GEN_AI_PROVIDER_NAME: provider,
    }
    return {name: value for name, value in pairs.items() if value is not None}
