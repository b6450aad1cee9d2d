"""Client side: :class:`AuditedTransport`, any MCP client transport with what crosses it recorded.

``Client(AuditedTransport(url, trail, agent="planner"))`` in place of
``Client(url)``: the transport is the one seam every MCP client message
passes, in both directions, as JSON-RPC (a URL, a ``StdioServerParameters``,
any ``Transport``, or a ``Server``/``MCPServer`` reached in-process through
the SDK's in-memory transport).

* A request the client sends is recorded (PENDING, committed first in
  ``"commit"`` durability) from ``agent`` to the server in a ``send
  {server}`` PRODUCER span, which is a child of the SDK's own client span,
  and goes out with ``audit-plugin/*`` entries in its ``_meta``, so an
  audited server records it under the same id (once, in a shared trail).
* Its response is recorded when it is read (a RESPONSE, DELIVERED; in
  ``"commit"`` durability committed before the SDK sees it) and settles the
  request: DELIVERED, or FAILED with ``MCP error {code}: {message}`` or a
  ``tools/call`` result's ``isError`` text. A request the client cancels
  or times out (``notifications/cancelled``) is FAILED with the reason; one
  still open when the connection closes is FAILED ``connection closed``.
* Requests from the server (sampling, elicitation, roots, ping) are
  recorded from the server to ``agent``, the client's answer as their
  RESPONSE; notifications both ways as NOTIFICATIONs (a progress
  notification's ``reply_to`` is the request it reports on).
* The server's name in the records: ``server=`` if given, else the
  in-process server's name, else the name the server reports
  (``serverInfo``) from its first answer on; until then the URL's host or
  the stdio command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import PurePath
from types import TracebackType
from typing import Any, Self, Unpack
from urllib.parse import urlsplit

from mcp.client import Transport
from mcp.client._memory import InMemoryTransport  # the SDK's in-memory transport (what Client(server) uses)
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse
from opentelemetry import propagate

from audit_plugin.exceptions import AuditError
from audit_plugin.hooks.options import AuditOptionFields, AuditOptions
from audit_plugin.integrations._recording import UNKNOWN_AGENT, Auditor, agent_name, error_text, storable
from audit_plugin.integrations.mcp.records import (
    CONVERSATION_META,
    FROM_AGENT_META,
    MESSAGE_ID_META,
    OUTCOME_OPERATION,
    audit_stamps,
    error_reason,
    error_record,
    notification_record,
    request_record,
    result_outcome,
    result_record,
    server_name_in,
    span_attributes,
    with_stamps,
)
from audit_plugin.model import validation as v
from audit_plugin.model.messages import Message, MessageStatus, new_message_id
from audit_plugin.trail import MessageAuditTrail

log = logging.getLogger(__name__)

Target = Transport | str | StdioServerParameters | Server[Any] | MCPServer
"""What :class:`AuditedTransport` connects to, as ``mcp.Client`` takes it."""


class AuditedTransport:
    """An MCP client ``Transport`` that records every message crossing it in ``trail`` (module docs).

    :param target: a URL (streamable HTTP), ``StdioServerParameters``, any
        ``Transport``, or a ``Server``/``MCPServer`` (in-process, in memory).
    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail`.
    :param agent: this client's name in the records.
    :param server: the server's name in the records (default: see module docs).
    :param options: durability (``"commit"``: a request's record is committed
        before it is sent, a response's before the SDK sees it), commit
        timeout, tracer and meter providers, payload tracing
        (:class:`~audit_plugin.AuditOptions`); ``overrides``: the same as keywords.

    Use: ``async with Client(AuditedTransport(url, trail, agent="planner")) as client: ...``.
    One connection at a time, as any transport.
    """

    def __init__(
        self,
        target: Target,
        trail: MessageAuditTrail,
        *,
        agent: str,
        server: str | None = None,
        options: AuditOptions | None = None,
        **overrides: Unpack[AuditOptionFields],
    ) -> None:
        options = AuditOptions.resolve(options, overrides)
        self.agent: str = v.check_text("agent", agent)  # type: ignore[assignment]
        self.named_server = v.check_text("server", server) if server is not None else None
        self.auditor = Auditor(trail, options, operation_id=OUTCOME_OPERATION)
        self.inner, self.default_server = _transport_for(target)
        self._connection: _Connection | None = None

    @property
    def pending(self) -> int:
        """Requests sent or received whose answer has not been seen yet (on the open connection)."""
        return 0 if self._connection is None else len(self._connection.sent) + len(self._connection.received)

    async def __aenter__(self) -> tuple[_AuditedRead, _AuditedWrite]:
        read, write = await self.inner.__aenter__()
        connection = _Connection(self)
        self._connection = connection
        return _AuditedRead(read, connection), _AuditedWrite(write, connection)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        try:
            return await self.inner.__aexit__(exc_type, exc, traceback)
        finally:
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close(exc)


class _Connection:
    """One connection's state: its conversation id, the server's name, and the requests not answered yet."""

    def __init__(self, transport: AuditedTransport) -> None:
        self.agent = transport.agent
        self.auditor = transport.auditor
        self.named = transport.named_server is not None
        self.server = transport.named_server or transport.default_server
        self.conversation = new_message_id()
        self.sent: dict[Any, Message] = {}
        """Requests this client sent, by JSON-RPC id."""
        self.received: dict[Any, Message] = {}
        """Requests the server sent this client, by JSON-RPC id."""

    # -- what the client writes ---------------------------------------------------

    async def write(self, item: Any) -> tuple[Any, Message | None]:
        """Record an outgoing message; return what to send instead (stamped) and its record to settle after sending."""
        message = item.message if isinstance(item, SessionMessage) else None
        if isinstance(message, JSONRPCRequest):
            record = request_record(
                message.method, message.params, message.id, from_agent=self.agent, to_agent=self.server,
                conversation=self.conversation,
            )  # fmt: skip
            attributes = span_attributes(message.method, message.params, message.id, self.conversation, self.agent)
            await self.auditor.send(record, attributes)  # raises (nothing is sent) if the trail refuses it for good
            self.sent[coerce_request_id(message.id)] = record
            stamped = message.model_copy(update={"params": with_stamps(message.params, self.stamps(record))})
            return replace(item, message=stamped), None
        if isinstance(message, JSONRPCNotification):
            record = notification_record(
                message.method, message.params, from_agent=self.agent, to_agent=self.server,
                conversation=self.conversation,
            )  # fmt: skip
            await self.auditor.send(record, span_attributes(message.method, message.params, None, self.conversation))
            if message.method == "notifications/cancelled":
                await self.cancelled(self.sent, message.params, "cancelled by the client")
            stamped = message.model_copy(update={"params": with_stamps(message.params, self.stamps(record))})
            return replace(item, message=stamped), record
        if isinstance(message, JSONRPCResponse | JSONRPCError) and message.id is not None:
            await self.answered(self.received.pop(coerce_request_id(message.id), None), message, sent=False)
        return item, None

    def stamps(self, record: Message) -> dict[str, str]:
        """What goes into the ``_meta`` of what is sent: the record's identity, and its send span's trace context.

        The trace context (``traceparent``..., SEP-414) replaces the SDK's
        own, whose client span is the parent of the send span: the server's
        spans join the same trace, under the message's span.
        """
        fields = propagate.get_global_textmap().fields
        stamps = {key: value for key, value in record.headers.items() if key in fields}
        stamps.update(
            {MESSAGE_ID_META: record.message_id, FROM_AGENT_META: self.agent, CONVERSATION_META: self.conversation}
        )
        return stamps

    async def write_failed(self, item: Any, exc: BaseException) -> None:
        """The transport refused an outgoing message: if it was a request, its record is FAILED."""
        message = item.message if isinstance(item, SessionMessage) else None
        record = self.sent.pop(coerce_request_id(message.id), None) if isinstance(message, JSONRPCRequest) else None
        if record is not None:
            await self.auditor.settle(
                record, MessageStatus.FAILED, f"the transport refused it: {error_text(exc)}", cause=exc
            )

    # -- what the client reads ----------------------------------------------------

    async def read(self, item: Any) -> None:
        """Record an incoming message before the SDK sees it."""
        message = item.message if isinstance(item, SessionMessage) else None
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            request = self.sent.pop(coerce_request_id(message.id), None) if message.id is not None else None
            if request is not None:
                self.learn_server(message)
                await self.answered(request, message, sent=True)
        elif isinstance(message, JSONRPCRequest):
            stamped = storable(audit_stamps(message.params).get(MESSAGE_ID_META), max_length=256)
            record = request_record(
                message.method, message.params, message.id, from_agent=self.server, to_agent=self.agent,
                conversation=self.conversation, message_id=stamped,
            )  # fmt: skip
            self.received[coerce_request_id(message.id)] = record
            await self.auditor.receive(record)
        elif isinstance(message, JSONRPCNotification):
            about = self.sent.get(_progress_token(message.params))
            record = notification_record(
                message.method, message.params, from_agent=self.server, to_agent=self.agent,
                conversation=self.conversation, reply_to=about.message_id if about is not None else None,
            )  # fmt: skip
            await self.auditor.record(record)
            if message.method == "notifications/cancelled":
                await self.cancelled(self.received, message.params, "cancelled by the server")

    def learn_server(self, message: JSONRPCResponse | JSONRPCError) -> None:
        if not self.named and isinstance(message, JSONRPCResponse):
            name = agent_name(server_name_in(message.result), "")
            if name:
                self.server = name

    # -- outcomes -----------------------------------------------------------------

    async def answered(self, request: Message | None, message: JSONRPCResponse | JSONRPCError, *, sent: bool) -> None:
        """Record ``message`` as the response to ``request`` and settle it (one this client ``sent`` ends its span)."""
        if request is None:
            return
        if isinstance(message, JSONRPCResponse):
            response = result_record(request, message.result)
            status, error = result_outcome(request, message.result)
        else:
            response = error_record(request, message.error.code, message.error.message, message.error.data)
            status, error = MessageStatus.FAILED, error_reason(message.error.code, message.error.message)
        settle = self.auditor.settle if sent else self.auditor.record
        await asyncio.gather(self.auditor.record(response), settle(request, status, error))  # one commit

    async def cancelled(self, requests: dict[Any, Message], params: Mapping[str, Any] | None, who: str) -> None:
        request_id = (params or {}).get("requestId")
        request = requests.pop(coerce_request_id(request_id), None) if isinstance(request_id, str | int) else None
        if request is None:
            return
        reason = (params or {}).get("reason")
        error = f"{who}: {reason}" if isinstance(reason, str) and reason else who
        settle = self.auditor.settle if requests is self.sent else self.auditor.record
        await settle(request, MessageStatus.FAILED, error)

    async def close(self, exc: BaseException | None) -> None:
        """Settle what is still open FAILED: the connection closed before it was answered."""
        reason = "connection closed before a response"
        sent, received = list(self.sent.values()), list(self.received.values())
        self.sent.clear()
        self.received.clear()
        for request in sent:
            await self.auditor.settle(request, MessageStatus.FAILED, reason, cause=exc)
        for request in received:
            await self.auditor.record(request, MessageStatus.FAILED, reason, cause=exc)


class _AuditedStream:
    """A stream of the SDK's connection, wrapped: closing, context management and other attributes pass through."""

    def __init__(self, inner: Any, connection: _Connection) -> None:
        self.inner = inner
        self.connection = connection

    async def aclose(self) -> None:
        await self.inner.aclose()

    def close(self) -> None:
        self.inner.close()

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self.inner.__aexit__(*exc_info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _AuditedWrite(_AuditedStream):
    """The write stream the SDK sees: records each message, then passes it on."""

    async def send(self, item: Any, /) -> None:
        item, notification = await self.connection.write(item)
        try:
            await self.inner.send(item)
        except BaseException as exc:
            await self.connection.write_failed(item, exc)
            if notification is not None:
                reason = f"the transport refused it: {error_text(exc)}"
                await self.connection.auditor.settle(notification, MessageStatus.FAILED, reason, cause=exc)
            raise
        if notification is not None:
            await self.connection.auditor.settle(notification, MessageStatus.DELIVERED)


class _AuditedRead(_AuditedStream):
    """The read stream the SDK sees: records each message before handing it on.

    An audit failure here (the trail closed under an open connection) is
    logged and the message still handed on: the connection never breaks
    because of the audit.
    """

    @property
    def last_context(self) -> Any:
        """The sender's context of the last message (in-memory streams carry it; the SDK runs handlers in it)."""
        return getattr(self.inner, "last_context", None)

    async def receive(self) -> Any:
        return await self._recorded(await self.inner.receive())

    def __aiter__(self) -> _AuditedRead:
        return self

    async def __anext__(self) -> Any:
        return await self._recorded(await self.inner.__anext__())

    async def _recorded(self, item: Any) -> Any:
        try:
            await self.connection.read(item)
        except AuditError as exc:
            log.error("recording an incoming MCP message failed: %s", exc)
        return item


def _transport_for(target: Target) -> tuple[Any, str]:
    """The transport to wrap for ``target``, and the server's name to record until the server names itself."""
    if isinstance(target, MCPServer | Server):
        return InMemoryTransport(target), agent_name(target.name)
    if isinstance(target, str):
        parts = urlsplit(target)
        return streamable_http_client(target), agent_name(parts.hostname and parts.netloc.rpartition("@")[2])
    if isinstance(target, StdioServerParameters):
        return stdio_client(target), agent_name(PurePath(target.command).name)
    return target, UNKNOWN_AGENT


def _progress_token(params: Mapping[str, Any] | None) -> Any:
    token = (params or {}).get("progressToken")
    return coerce_request_id(token) if isinstance(token, str | int) and not isinstance(token, bool) else None
