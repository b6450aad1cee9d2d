"""Syslog: each event document as one RFC 5424 message, over TCP (RFC 6587 octet counting) or TLS (RFC 5425).

A message::

    <134>1 2026-12-03T11:47:30.205123Z host audit-plugin 4711 record [audit@32473 event="record"
    chain_id="default" sequence="17" message_id="..." status="PENDING" from_agent="planner"
    to_agent="worker-b" message_type="QUERY" correlation_id="demo-ac1e"] {"event":"record",...}

* PRI: the facility (``local0`` unless the URL says otherwise) and a
  severity from the entry: ``err`` for FAILED, ``warning`` for EXPIRED,
  ``notice`` for a late report, ``info`` otherwise.
* TIMESTAMP: the entry's time (UTC, microseconds); HOSTNAME this host;
  APP-NAME ``audit-plugin`` (``app_name=``); PROCID this process; MSGID the
  event (``record``, ``status``, ``late``, ``retention``).
* STRUCTURED-DATA: one element (``sd_id=``, default ``audit@32473``) with
  the fields a receiver filters on, escaped as RFC 5424 requires (``"``,
  ``\\`` and ``]`` behind a backslash).
* MSG: the whole event document as compact JSON (UTF-8, no BOM).

Each frame is ``LENGTH SP MESSAGE``, so a message may hold newlines and be
of any size; raise the receiver's limit for large payloads (rsyslog:
``global(maxMessageSize="256k")``; its default, 8 KiB, cuts longer
messages). TCP acknowledges nothing: before each send the connection is
checked for the receiver having closed it, and a failed send is retried on
a new connection, but what a receiver that died without closing received
last may be lost (RELP would acknowledge each message; it is not offered).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.sinks.address import SyslogAddress
from audit_plugin.sinks.documents import json_line

SEVERITY = {"FAILED": 3, "EXPIRED": 4}
"""Severity by status (RFC 5424: 3 err, 4 warning); a late report is 5 (notice), anything else 6 (info)."""
NOTICE, INFO = 5, 6

STRUCTURED_FIELDS = ("event", "chain_id", "sequence", "message_id", "status", "retry_count")
RECORD_STRUCTURED_FIELDS = ("from_agent", "to_agent", "message_type", "correlation_id", "trace_id")

CONNECT_TIMEOUT = 10.0
WRITE_TIMEOUT = 30.0


def severity(document: dict[str, Any]) -> int:
    if document.get("event") == "late":
        return NOTICE
    return SEVERITY.get(document.get("status") or "", INFO)


def sd_value(value: object) -> str:
    """A PARAM-VALUE: the text with ``\\``, ``"`` and ``]`` escaped by a backslash."""
    text = str(value)
    if "\\" in text or '"' in text or "]" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return text


def structured_data(document: dict[str, Any], sd_id: str) -> str:
    """``[sd_id name="value" ...]`` of the document's non-null filter fields."""
    params = [sd_id]
    for name in STRUCTURED_FIELDS:
        value = document.get(name)
        if value is not None:
            params.append(f'{name}="{sd_value(value)}"')
    record = document.get("record")
    if record:
        for name in RECORD_STRUCTURED_FIELDS:
            value = record.get(name)
            if value is not None:
                params.append(f'{name}="{sd_value(value)}"')
    return "[" + " ".join(params) + "]"


def header_text(text: str, most: int) -> str:
    """A header field: printable US-ASCII, at most ``most`` characters, ``-`` when there is nothing left."""
    kept = "".join(ch for ch in text if "!" <= ch <= "~")[:most]
    return kept or "-"


class SyslogFormat:
    """Turns event documents into RFC 5424 messages for one destination and this host and process."""

    def __init__(self, address: SyslogAddress, hostname: str | None = None, procid: int | None = None) -> None:
        self.address = address
        self.hostname = header_text(hostname if hostname is not None else socket.gethostname(), 255)
        self.procid = header_text(str(procid if procid is not None else os.getpid()), 128)

    def message(self, document: dict[str, Any]) -> bytes:
        pri = self.address.facility * 8 + severity(document)
        timestamp = document.get("at") or "-"
        msgid = header_text(str(document.get("event") or ""), 32)
        sd = structured_data(document, self.address.sd_id)
        body = json_line(document)
        head = f"<{pri}>1 {timestamp} {self.hostname} {self.address.app_name} {self.procid} {msgid} {sd} "
        return (head + body).encode("utf-8")

    def frames(self, documents: Sequence[dict[str, Any]]) -> bytes:
        """Octet-counted frames (``LENGTH SP MESSAGE``) of ``documents``, back to back."""
        parts = []
        for document in documents:
            message = self.message(document)
            parts.append(b"%d %s" % (len(message), message))
        return b"".join(parts)


def tls_context(address: SyslogAddress) -> ssl.SSLContext:
    """Verify the receiver against ``ca`` (or the system's trust store); present ``cert``/``key`` if given."""
    try:
        context = ssl.create_default_context(cafile=str(address.ca) if address.ca else None)
        if address.cert is not None:
            context.load_cert_chain(str(address.cert), str(address.key) if address.key else None)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidFieldError("url", f"the TLS files of {address.display} cannot be used: {reason}") from None
    return context


class SyslogSender:
    """Sends event documents to one syslog receiver over a connection kept open between sends."""

    def __init__(
        self,
        address: SyslogAddress,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.address = address
        self.format = SyslogFormat(address)
        self.context = tls_context(address) if address.tls else None
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, documents: Sequence[dict[str, Any]]) -> None:
        data = self.format.frames(documents)
        writer = await self._connection()
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except BaseException:
            await self._disconnect()
            raise

    async def _connection(self) -> asyncio.StreamWriter:
        if self._writer is not None and (self._writer.is_closing() or (self._reader and self._reader.at_eof())):
            await self._disconnect()  # the receiver closed it (a restart): do not write into a dead connection
        if self._writer is None:
            tls = {"ssl": self.context, "server_hostname": self.address.server_name or self.address.host}
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.address.host, self.address.port, **(tls if self.context else {})),
                self.connect_timeout,
            )
        return self._writer

    async def _disconnect(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def close(self) -> None:
        await self._disconnect()
