"""What a FastStream publish command or received message becomes as an audit :class:`Message`.

One mapping for every FastStream broker (Redis, NATS, RabbitMQ, Kafka,
MQTT), read from the fields FastStream gives all of them and, where a broker
keeps something only in its raw message (a RabbitMQ exchange, a JetStream
sequence), from that raw message by duck typing: no broker client is
imported here.

Headers the publish side adds, so the consume side finds the same record:

* ``audit-message-id``: the record's ``message_id``;
* ``audit-from-agent``: the sender (``agent=`` of the publishing middleware);
* ``audit-message-type``: the record's ``message_type``.

A message from a publisher without the middleware has none of them: the
consume side records it with ``from_agent`` taken from an
``audit-from-agent`` header the publisher set itself, else
:data:`UNKNOWN_SENDER`, and a ``message_id`` derived from the broker's own
identity of the message, so a redelivery maps to the same record.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry import propagate

from audit_plugin.exceptions import AuditError
from audit_plugin.messages import Message, MessageType
from audit_plugin.validation import check_text

MESSAGE_ID_HEADER = "audit-message-id"
FROM_AGENT_HEADER = "audit-from-agent"
MESSAGE_TYPE_HEADER = "audit-message-type"
AUDIT_HEADERS = (MESSAGE_ID_HEADER, FROM_AGENT_HEADER, MESSAGE_TYPE_HEADER)

UNKNOWN_SENDER = "unknown"
"""``from_agent`` of a consumed message whose publisher did not say who it is."""

PUBLISH_TYPES = {"PUBLISH": MessageType.EVENT, "REQUEST": MessageType.QUERY, "REPLY": MessageType.RESPONSE}
"""FastStream's publish type (``PublishType`` value) -> the record's message type."""

MESSAGING_SYSTEMS = {"redis": "redis", "nats": "nats", "rabbit": "rabbitmq", "kafka": "kafka", "mqtt": "mqtt"}
"""FastStream subpackage -> ``messaging.system`` (OpenTelemetry semantic conventions)."""

_ID_NAMESPACE = uuid.UUID("5b0c3c52-6f1e-4c64-9d0e-7d7c4e1d2a11")
"""Namespace of the uuid5 message ids derived from a broker's identity of a message."""


def messaging_system(obj: object) -> str:
    """``messaging.system`` for a FastStream object (command, message) by the broker package it comes from."""
    parts = type(obj).__module__.split(".")
    return MESSAGING_SYSTEMS.get(parts[1] if len(parts) > 1 else "", "faststream")


def payload_of(body: Any) -> dict[str, Any]:
    """A JSON-able dict for the record from a FastStream body (as published, or as decoded).

    A dict is kept as is; a pydantic model or dataclass becomes its dict;
    ``None`` becomes ``{}``; bytes holding a JSON object become that object;
    any other value is wrapped as ``{"body": value}`` (text for UTF-8 bytes,
    ``{"body_base64": ...}`` for other bytes).
    """
    if isinstance(body, dict):
        return body
    if body is None:
        return {}
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:
                return {"body": raw.decode("utf-8")}
            except UnicodeDecodeError:
                return {"body_base64": base64.b64encode(raw).decode("ascii")}
        return decoded if isinstance(decoded, dict) else {"body": decoded}
    dump = getattr(body, "model_dump", None)
    if callable(dump):  # pydantic v2 model
        return payload_of(dump(mode="json"))
    if dataclasses.is_dataclass(body) and not isinstance(body, type):
        return dataclasses.asdict(body)
    if isinstance(body, list | tuple):
        return {"body": [payload_of(item) if not _is_json_scalar(item) else item for item in body]}
    return {"body": body}


def _is_json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def publish_destination(cmd: Any) -> str:
    """Where a publish command goes: channel/list/stream, subject, topic, or ``exchange/routing key``."""
    exchange = getattr(getattr(cmd, "exchange", None), "name", None)
    destination = str(cmd.destination or "")
    if exchange:
        return f"{exchange}/{destination}"
    return destination or "unknown"


def consume_destination(msg: Any) -> str:
    """Where a received message came from, named as :func:`publish_destination` names it."""
    raw = msg.raw_message
    if isinstance(raw, Mapping):  # Redis: channel, list or stream, all under "channel"
        name = raw.get("channel")
    elif hasattr(raw, "routing_key"):  # RabbitMQ (aio-pika)
        exchange = raw.exchange or ""
        name = f"{exchange}/{raw.routing_key}" if exchange else raw.routing_key
    elif hasattr(raw, "subject"):  # NATS
        name = raw.subject
    elif hasattr(raw, "topic"):  # Kafka, MQTT
        name = raw.topic
    else:
        name = None
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return str(name) if name else "unknown"


def broker_identity(msg: Any, destination: str) -> str:
    """The broker's own, redelivery-stable identity of a received message (as text).

    JetStream: stream and stream sequence; Redis streams: the entry id; Kafka:
    topic, partition and offset; otherwise the FastStream message id the
    publisher set (stable across redeliveries on RabbitMQ, Redis lists and
    channels, MQTT).
    """
    raw = msg.raw_message
    if isinstance(raw, Mapping):
        ids = raw.get("message_ids")
        if ids:
            entry = ids[0].decode() if isinstance(ids[0], bytes) else str(ids[0])
            return f"redis-stream:{destination}:{entry}"
    elif jetstream_metadata(raw) is not None:
        meta = jetstream_metadata(raw)
        return f"jetstream:{meta.stream}:{meta.sequence.stream}"
    elif hasattr(raw, "partition") and hasattr(raw, "offset"):
        return f"kafka:{raw.topic}:{raw.partition}:{raw.offset}"
    return f"{destination}:{msg.message_id}"


def jetstream_metadata(raw: Any) -> Any | None:
    """A NATS message's JetStream metadata, or ``None`` for core NATS and other brokers."""
    reply = getattr(raw, "reply", None)
    if not isinstance(reply, str) or not reply.startswith("$JS.ACK."):
        return None
    return raw.metadata


def delivery_count(msg: Any) -> int | None:
    """How many times the broker has delivered this message (1 = first time), when it says so.

    JetStream: ``num_delivered``; RabbitMQ quorum queues: ``x-delivery-count``
    (previous deliveries); Redis streams read with a claim: ``delivery_counts``.
    ``None`` elsewhere.
    """
    raw = msg.raw_message
    if isinstance(raw, Mapping):
        counts = raw.get("delivery_counts")
        return int(counts[0]) + 1 if counts else None
    meta = jetstream_metadata(raw)
    if meta is not None:
        return int(meta.num_delivered)
    headers = getattr(raw, "headers", None)
    if hasattr(raw, "routing_key") and isinstance(headers, Mapping) and "x-delivery-count" in headers:
        return int(headers["x-delivery-count"]) + 1
    return None


def record_id_for(msg: Any, destination: str) -> str:
    """The record id of a received message: the publisher's ``audit-message-id``, else derived (uuid5)."""
    given = _text_or(msg.headers.get(MESSAGE_ID_HEADER), None)
    if given is not None:
        return given
    return str(uuid.uuid5(_ID_NAMESPACE, broker_identity(msg, destination)))


def trace_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """The headers worth keeping in a record: trace context, baggage and the ``audit-*`` ones."""
    keep = (*propagate.get_global_textmap().fields, *AUDIT_HEADERS)
    return {name: str(headers[name]) for name in keep if name in headers}


def published_message(cmd: Any, agent: str) -> Message:
    """The audit record of one publish command from ``agent`` (validated; raises a typed error)."""
    bodies = cmd.batch_bodies
    payload = payload_of(bodies[0]) if len(bodies) <= 1 else {"batch": [payload_of(body) for body in bodies]}
    kind = cmd.headers.get(MESSAGE_TYPE_HEADER) or PUBLISH_TYPES.get(str(cmd.publish_type.value), MessageType.EVENT)
    return Message(
        from_agent=agent,
        to_agent=publish_destination(cmd),
        message_type=kind,
        payload=payload,
        correlation_id=cmd.correlation_id or None,
        reply_to=cmd.reply_to or None,
    )


def received_message(msg: Any, body: Any, message_id: str, destination: str) -> Message:
    """The audit record of a received message, as the consume side sees it.

    Never raises for what the publisher sent: a sender, type, correlation id
    or reply-to that does not validate is replaced by :data:`UNKNOWN_SENDER`,
    ``EVENT`` or left out.
    """
    headers = msg.headers
    sender = headers.get(FROM_AGENT_HEADER) or UNKNOWN_SENDER
    default_type = MessageType.RESPONSE if str(getattr(msg.source_type, "value", "")) == "RESPONSE" else None
    kind = headers.get(MESSAGE_TYPE_HEADER) or default_type or MessageType.EVENT
    fields: dict[str, Any] = {
        "from_agent": sender,
        "to_agent": destination,
        "message_type": kind,
        "payload": payload_of(body),
        "correlation_id": msg.correlation_id or None,
        "reply_to": msg.reply_to or None,
        "message_id": message_id,
        "headers": trace_headers(headers),
    }
    try:
        return Message(**fields)
    except AuditError:
        fields.update(
            from_agent=_text_or(sender, UNKNOWN_SENDER),
            message_type=_type_or(kind),
            correlation_id=_text_or(fields["correlation_id"], None),
            reply_to=_text_or(fields["reply_to"], None),
        )
        return Message(**fields)


def _text_or(value: Any, default: str | None) -> str | None:
    try:
        return check_text("header", value)
    except AuditError:
        return default


def _type_or(value: Any) -> MessageType:
    try:
        return MessageType(value)
    except ValueError:
        return MessageType.EVENT
