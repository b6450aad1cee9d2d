"""From MCP (JSON-RPC) messages to audit records: ids, agents, payloads, outcomes, span attributes.

Pure functions shared by the server middleware and the client transport, so
both record one MCP message the same way (a trail shared by both sides then
holds it once: records are idempotent by ``message_id``).

* A request (it expects a response) is a QUERY; its result or error a
  RESPONSE with ``reply_to`` = the request's record id and the id
  ``{request record id}/response``; a notification a NOTIFICATION.
* An audited client names itself, the record id and the session in the
  request's ``_meta`` (``audit-plugin/from-agent``, ``audit-plugin/message-id``,
  ``audit-plugin/conversation-id``); an audited server records under those
  and removes them before its handler runs. Without them the server uses the
  client's ``clientInfo`` name, a new id, and the HTTP session id.
* ``correlation_id`` is the MCP session (the conversation).
* Payloads: ``{"id", "method", "params"}`` for a request (``params`` without
  the ``audit-plugin/*`` keys), ``{"method", "params"}`` for a notification,
  ``{"id", "result"}`` or ``{"id", "error": {"code", "message", "data"}}`` for
  a response, each as JSON (:func:`~audit_plugin.integrations._json.to_json`).
* A request's outcome: DELIVERED when answered with a result; FAILED with
  ``MCP error {code}: {message}`` when answered with an error, with
  ``tool {name!r} returned an error: {text}`` for a ``tools/call`` result
  with ``isError``, and with the reason when cancelled or never answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit_plugin.integrations import genai
from audit_plugin.integrations._json import to_json
from audit_plugin.model.messages import Message, MessageStatus, MessageType

MESSAGE_ID_META = "audit-plugin/message-id"
FROM_AGENT_META = "audit-plugin/from-agent"
CONVERSATION_META = "audit-plugin/conversation-id"
AUDIT_META_KEYS = frozenset({MESSAGE_ID_META, FROM_AGENT_META, CONVERSATION_META})
"""``_meta`` keys an audited client adds to what it sends (an audited server removes them)."""

SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
"""``_meta`` key of the server's name and version on every result of a 2026-07-28 server."""

OUTCOME_OPERATION = "mcp-outcome"
"""``operation_id`` of every outcome: a message's outcome, reported by both ends, is applied once."""

SESSION_HEADER = "mcp-session-id"
"""The streamable-HTTP transport's session header."""


def audit_stamps(params: Mapping[str, Any] | None) -> dict[str, str]:
    """The ``audit-plugin/*`` entries of ``params["_meta"]`` that are text."""
    meta = params.get("_meta") if params else None
    if not isinstance(meta, Mapping):
        return {}
    return {key: value for key in AUDIT_META_KEYS if isinstance(value := meta.get(key), str) and value}


def without_stamps(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``params`` without the ``audit-plugin/*`` ``_meta`` entries (and without ``_meta`` if nothing else is left)."""
    if params is None:
        return None
    meta = params.get("_meta")
    if not isinstance(meta, Mapping) or AUDIT_META_KEYS.isdisjoint(meta):
        return dict(params)
    rest = {key: value for key, value in meta.items() if key not in AUDIT_META_KEYS}
    cleaned = {key: value for key, value in params.items() if key != "_meta"}
    if rest:
        cleaned["_meta"] = rest
    return cleaned


def meta_without_stamps(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A ``_meta`` mapping without the ``audit-plugin/*`` entries."""
    return None if meta is None else {key: value for key, value in meta.items() if key not in AUDIT_META_KEYS}


def with_stamps(params: Mapping[str, Any] | None, stamps: Mapping[str, str]) -> dict[str, Any]:
    """``params`` with ``stamps`` added to its ``_meta``."""
    stamped = dict(params or {})
    meta = stamped.get("_meta")
    stamped["_meta"] = {**(meta if isinstance(meta, Mapping) else {}), **stamps}
    return stamped


def request_record(
    method: str,
    params: Mapping[str, Any] | None,
    request_id: Any,
    *,
    from_agent: str,
    to_agent: str,
    conversation: str | None,
    message_id: str | None = None,
) -> Message:
    """The record of a request (QUERY)."""
    payload = {"id": to_json(request_id), "method": to_json(method), "params": to_json(without_stamps(params))}
    return _record(MessageType.QUERY, payload, from_agent, to_agent, conversation, message_id)


def notification_record(
    method: str,
    params: Mapping[str, Any] | None,
    *,
    from_agent: str,
    to_agent: str,
    conversation: str | None,
    message_id: str | None = None,
    reply_to: str | None = None,
) -> Message:
    """The record of a notification (NOTIFICATION); ``reply_to``: the request a progress notification is about."""
    payload = {"method": to_json(method), "params": to_json(without_stamps(params))}
    return _record(MessageType.NOTIFICATION, payload, from_agent, to_agent, conversation, message_id, reply_to)


def result_record(request: Message, result: Any) -> Message:
    """The record of the result that answers ``request`` (from its receiver to its sender)."""
    return _response(request, {"id": request.payload.get("id"), "result": to_json(result)})


def error_record(request: Message, code: int, message: str, data: Any = None) -> Message:
    """The record of the error that answers ``request``."""
    error = {"code": code, "message": to_json(message), "data": to_json(data)}
    return _response(request, {"id": request.payload.get("id"), "error": error})


def response_id(request: Message) -> str:
    """The record id of the response to ``request``: the same on both sides."""
    return f"{request.message_id}/response"


def result_outcome(request: Message, result: Any) -> tuple[MessageStatus, str | None]:
    """What a result says about ``request``: DELIVERED, or FAILED for a ``tools/call`` result with ``isError``."""
    if request.payload.get("method") == "tools/call" and _is_error_result(result):
        tool = (request.payload.get("params") or {}).get("name")
        text = _result_text(result)
        reason = f"tool {tool!r} returned an error"
        return MessageStatus.FAILED, f"{reason}: {text}" if text else reason
    return MessageStatus.DELIVERED, None


def error_reason(code: int, message: str) -> str:
    """The FAILED reason of a request answered with an error."""
    return f"MCP error {code}: {message}"


def span_attributes(
    method: str, params: Mapping[str, Any] | None, request_id: Any, conversation: str | None, agent: str | None = None
) -> dict[str, Any]:
    """MCP and GenAI attributes of the span a request or notification is sent or handled in."""
    attributes: dict[str, Any] = {genai.MCP_METHOD_NAME: method}
    if request_id is not None:
        attributes[genai.JSONRPC_REQUEST_ID] = str(request_id)
    if conversation is not None:
        attributes[genai.MCP_SESSION_ID] = conversation
    if agent is not None:
        attributes[genai.GEN_AI_AGENT_NAME] = agent
    name = params.get("name") if params else None
    if method == "tools/call" and isinstance(name, str):
        attributes[genai.GEN_AI_OPERATION_NAME] = genai.EXECUTE_TOOL
        attributes[genai.GEN_AI_TOOL_NAME] = name
    elif method == "prompts/get" and isinstance(name, str):
        attributes[genai.GEN_AI_PROMPT_NAME] = name
    uri = params.get("uri") if params else None
    if method.startswith("resources/") and isinstance(uri, str):
        attributes[genai.MCP_RESOURCE_URI] = uri
    return attributes


def server_name_in(result: Any) -> str | None:
    """The server's name a result carries (``_meta`` server info, or an ``initialize`` result's ``serverInfo``)."""
    if not isinstance(result, Mapping):
        return None
    meta = result.get("_meta")
    for info in (meta.get(SERVER_INFO_META) if isinstance(meta, Mapping) else None, result.get("serverInfo")):
        if isinstance(info, Mapping) and isinstance(info.get("name"), str) and info["name"]:
            return info["name"]
    return None


def _is_error_result(result: Any) -> bool:
    if isinstance(result, Mapping):
        return result.get("isError") is True
    return getattr(result, "is_error", False) is True


def _result_text(result: Any) -> str:
    content = result.get("content") if isinstance(result, Mapping) else getattr(result, "content", None)
    texts = []
    for block in content or ():
        text = block.get("text") if isinstance(block, Mapping) else getattr(block, "text", None)
        if isinstance(text, str):
            texts.append(text)
    return " ".join(texts)


def _response(request: Message, payload: dict[str, Any]) -> Message:
    return _record(
        MessageType.RESPONSE,
        payload,
        request.to_agent,
        request.from_agent,
        request.correlation_id,
        response_id(request),
        request.message_id,
    )


def _record(
    message_type: MessageType,
    payload: dict[str, Any],
    from_agent: str,
    to_agent: str,
    conversation: str | None,
    message_id: str | None,
    reply_to: str | None = None,
) -> Message:
    fields: dict[str, Any] = {"message_id": message_id} if message_id else {}
    return Message(
        from_agent=from_agent,
        to_agent=to_agent,
        message_type=message_type,
        payload=payload,
        correlation_id=conversation,
        reply_to=reply_to,
        **fields,
    )
