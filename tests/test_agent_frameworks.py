"""What the agent-framework integrations share: JSON capture, refused payloads, GenAI names, optional imports."""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import math
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes, jsonrpc_attributes, mcp_attributes
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus
from audit_plugin.integrations import genai
from audit_plugin.integrations._json import MAX_DEPTH, to_json
from audit_plugin.integrations.pydantic_ai import AuditCapability
from audit_plugin.model.validation import encode_payload
from audit_plugin.privacy.capture import PayloadPolicy


class Colour(enum.Enum):
    RED = "red"


class Point(BaseModel):
    x: float
    label: str


@dataclasses.dataclass
class Box:
    content: Any
    when: datetime


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


odd_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(max_size=20),
    st.sampled_from([Colour.RED, uuid.UUID(int=7), Decimal("NaN"), Decimal("1.5"), frozenset({1, 2})]),
    st.builds(Unprintable),
    st.builds(object),
    st.builds(Point, x=st.floats(allow_nan=False), label=st.text()),
    st.datetimes(timezones=st.just(UTC)),
)
odd_values = st.recursive(
    odd_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.one_of(st.text(), st.integers(), st.sampled_from([Colour.RED, None])), children, max_size=4),
        st.builds(Box, content=children, when=st.datetimes(timezones=st.just(UTC))),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(odd_values)
def test_to_json_turns_anything_into_a_payload_the_trail_stores(value: Any) -> None:
    payload = {"value": to_json(value)}
    encode_payload(payload)  # raises if the trail would refuse it
    assert to_json(payload) == payload  # plain JSON values come back unchanged


def test_to_json_keeps_what_json_can_say_and_marks_the_rest() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    deep: Any = "bottom"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    converted = to_json(
        {
            "model": Point(x=1.5, label="a\x00b"),
            "box": Box(content=Colour.RED, when=datetime(2026, 1, 2, tzinfo=UTC)),
            "nan": math.nan,
            "bytes": b"hi",
            "set": {3},
            "cycle": cyclic,
            "deep": deep,
            "odd": Unprintable(),
            7: "int key",
        }
    )
    assert converted["model"] == {"x": 1.5, "label": "a\\x00b"}
    assert converted["box"] == {"content": "red", "when": "2026-01-02T00:00:00+00:00"}
    assert converted["nan"] == {"$audit": "not-json", "type": "float", "repr": "nan"}
    assert converted["bytes"] == {"$audit": "bytes", "size": 2, "base64": "aGk="}
    assert converted["set"] == [3]
    assert converted["cycle"] == [1, {"$audit": "cycle"}]
    assert "too-deep" in str(converted["deep"])
    assert converted["odd"]["repr"] == "<tests.test_agent_frameworks.Unprintable object>"
    assert converted["7"] == "int key"


async def test_a_payload_the_trail_refuses_is_stored_as_a_marker_and_the_agent_goes_on(database_url: str) -> None:
    async with MessageAuditTrail(database_url, payload_policy=PayloadPolicy(max_bytes=300)) as trail:
        agent = Agent(TestModel(custom_output_text="x" * 500), name="verbose", capabilities=[AuditCapability(trail)])
        assert (await agent.run("talk")).output == "x" * 500
        await trail.flush()
        records = await trail.query_messages(AuditQuery())
        refused = [r for r in records if r.payload.get("$audit") == "not_captured"]
        assert refused and all("longer than" in r.payload["reason"] or "bytes" in r.payload["reason"] for r in refused)
        assert {r.status for r in records} == {MessageStatus.DELIVERED}


def test_genai_names_are_the_semantic_conventions_and_none_was_replaced_or_removed() -> None:
    """Ours equal the semantic-conventions package's; its notes say they moved, unchanged, never that they went."""
    pairs = {
        genai.GEN_AI_OPERATION_NAME: gen_ai_attributes.GEN_AI_OPERATION_NAME,
        genai.GEN_AI_AGENT_NAME: gen_ai_attributes.GEN_AI_AGENT_NAME,
        genai.GEN_AI_AGENT_ID: gen_ai_attributes.GEN_AI_AGENT_ID,
        genai.GEN_AI_CONVERSATION_ID: gen_ai_attributes.GEN_AI_CONVERSATION_ID,
        genai.GEN_AI_TOOL_NAME: gen_ai_attributes.GEN_AI_TOOL_NAME,
        genai.GEN_AI_TOOL_CALL_ID: gen_ai_attributes.GEN_AI_TOOL_CALL_ID,
        genai.GEN_AI_REQUEST_MODEL: gen_ai_attributes.GEN_AI_REQUEST_MODEL,
        genai.GEN_AI_PROVIDER_NAME: gen_ai_attributes.GEN_AI_PROVIDER_NAME,
        genai.GEN_AI_PROMPT_NAME: gen_ai_attributes.GEN_AI_PROMPT_NAME,
        genai.MCP_METHOD_NAME: mcp_attributes.MCP_METHOD_NAME,
        genai.MCP_SESSION_ID: mcp_attributes.MCP_SESSION_ID,
        genai.MCP_RESOURCE_URI: mcp_attributes.MCP_RESOURCE_URI,
        genai.JSONRPC_REQUEST_ID: jsonrpc_attributes.JSONRPC_REQUEST_ID,
    }
    assert all(ours == theirs for ours, theirs in pairs.items())
    operations = gen_ai_attributes.GenAiOperationNameValues
    assert (
        operations.INVOKE_AGENT.value,
        operations.EXECUTE_TOOL.value,
        operations.CHAT.value,
    ) == (genai.INVOKE_AGENT, genai.EXECUTE_TOOL, genai.CHAT)
    notes: dict[str, str] = {}
    for module in (gen_ai_attributes, mcp_attributes, jsonrpc_attributes):
        source = inspect.getsource(module)
        notes.update(re.findall(r'^\w+: Final = "([^"]+)"\n"""\n(.*)\n', source, re.MULTILINE))
    assert notes["gen_ai.system"].startswith("Deprecated: Replaced by")  # the parse sees a rename
    ours = set(pairs)
    assert all(not notes.get(name, "").startswith(("Deprecated: Replaced", "Deprecated: Removed")) for name in ours)


def modules_after(imports: str, roots: tuple[str, ...]) -> list[str]:
    code = f"import sys, {imports}; print(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(result.stdout)


@pytest.mark.parametrize(
    ("module", "root"),
    [
        ("audit_plugin.integrations.mcp", "mcp"),
        ("audit_plugin.integrations.pydantic_ai", "pydantic_ai"),
        ("audit_plugin.integrations.openai_agents", "agents"),
    ],
)
def test_importing_audit_plugin_imports_no_agent_framework(module: str, root: str) -> None:
    assert modules_after("audit_plugin, audit_plugin.integrations", (root,)) == []
    assert root in modules_after(module, (root,))  # the check sees an import
