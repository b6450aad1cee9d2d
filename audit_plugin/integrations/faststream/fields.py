"""What a FastStream publish command or received message becomes as an audit :class:`Message`.

One mapping for every FastStream broker (Redis, NATS, RabbitMQ, Kafka,
MQTT), read from the fields FastStream gives all of them and, where a broker
keeps something only in its raw message (a RabbitMQ exchange, a JetStream
sequence), from that raw message by duck typing: no broker client is
imported here.

Headers the publish side adds, so the consume side finds the same record:

* ``audit-message-id``: the record's ``message_id``;
* ``audit-from-agent``: the sender (``agent=`` of the publishing middleware);
* ``audit-message-type``: the record's ``message_type``;
* ``audit-in-reply-to`` (a handler's reply only): the ``message_id`` of the
  request it answers, the reply's ``reply_to``.

A reply goes to the requester's reply inbox (``_INBOX...`` on NATS, a random
Redis channel, an ``amq.rabbitmq.reply-to`` queue): its ``to_agent`` is the
requester (the request's ``audit-from-agent``) where that is known, else
:data:`REPLY_INBOX`, and its ``reply_to`` links it to the request.

Every field is made storable, never refused: text that is empty, not text,
too long or holds a NUL is cleaned up or replaced by a default, so auditing
never refuses what FastStream accepts.

A message from a publisher without the middleware has none of them: the
consume side records it with ``from_agent`` taken from an
``audit-from-agent`` header the publisher set itself, else
:data:`UNKNOWN_SENDER`, and a ``message_id`` derived from the broker's own
identity of the message, so a redelivery maps to the same record.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry import propagate

from audit_plugin.integrations.payloads import Body, not_captured, storable_text
from audit_plugin.model.messages import Message, MessageType

MESSAGE_ID_HEADER = "audit-message-id"
FROM_AGENT_HEADER = "audit-from-agent"
MESSAGE_TYPE_HEADER = "audit-message-type"
IN_REPLY_TO_HEADER = "audit-in-reply-to"
AUDIT_HEADERS = (MESSAGE_ID_HEADER, FROM_AGENT_HEADER, MESSAGE_TYPE_HEADER, IN_REPLY_TO_HEADER)

UNKNOWN_SENDER = "unknown"
"""``from_agent`` of a consumed message whose publisher did not say who it is."""

REPLY_INBOX = "(reply inbox)"
"""``to_agent`` of a reply whose requester is not known (an unaudited requester)."""

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
    if isinstance(raw, list | tuple) and raw:  # a NATS or Kafka batch: where its first message came from
        raw = raw[0]
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


@dataclass(frozen=True, slots=True)
class Received:
    """One message as a consumer received it (one of a batch, or the only one)."""

    payload: dict[str, Any]
    body: Body | None
    """The bytes the payload was read from (for a fallback the store keeps), ``None`` when a parser gave a value."""
    headers: Mapping[str, Any]
    raw: Any
    """The broker's own message (for its identity and delivery count); for a Redis batch, the batch's."""
    index: int | None = None
    """Position in a batch, ``None`` for a single message."""


def received_items(msg: Any) -> list[Received]:
    """The messages a FastStream ``StreamMessage`` holds: one, or each message of a batch.

    Read from the bytes as :class:`~audit_plugin.integrations.faststream.body.Body` reads them;
    FastStream's decoder (and any custom one) is never run.
    """
    batch = msg.batch_headers
    if batch:
        bodies = msg.body if isinstance(msg.body, list) else _json_list(msg.body)
        if bodies is not None and len(bodies) == len(batch):
            raw = msg.raw_message
            raws = raw if isinstance(raw, list | tuple) and len(raw) == len(batch) else None
            return [
                Received(
                    *value_payload(body, headers.get("content-type")),
                    headers,
                    raws[index] if raws is not None else raw,
                    index,
                )
                for index, (body, headers) in enumerate(zip(bodies, batch, strict=True))
            ]
    return [Received(*value_payload(msg.body, msg.content_type), msg.headers, msg.raw_message)]


def _json_list(data: Any) -> list[Any] | None:
    if not isinstance(data, bytes | bytearray):
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def value_payload(value: Any, content_type: Any = None) -> tuple[dict[str, Any], Body | None]:
    """The payload of a received body (bytes as :meth:`Body.payload` reads them, a value a parser made as it is).

    Returned with the :class:`Body` it was read from, ``None`` for a value.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        body = Body(bytes(value), content_type if isinstance(content_type, str) else None)
        return body.payload(), body
    if value is None:
        return {}, None
    if isinstance(value, dict):
        return value, None
    if isinstance(value, str | int | float | bool | list):
        return {"body": value}, None
    return not_captured(f"a {type(value).__name__} body"), None


def broker_identity(item: Received, destination: str, fallback_id: str) -> str:
    """The broker's own, redelivery-stable identity of a received message (as text).

    JetStream: stream and stream sequence; Redis streams: the entry id; Kafka:
    topic, partition and offset; otherwise the FastStream message id the
    publisher set (stable across redeliveries on RabbitMQ, Redis lists and
    channels, MQTT), with the position for a message of a batch.
    """
    raw, index = item.raw, item.index
    if isinstance(raw, Mapping):
        ids = raw.get("message_ids")
        position = index or 0
        if ids and len(ids) > position:
            entry = ids[position].decode() if isinstance(ids[position], bytes) else str(ids[position])
            return f"redis-stream:{destination}:{entry}"
    elif (meta := jetstream_metadata(raw)) is not None:
        return f"jetstream:{meta.stream}:{meta.sequence.stream}"
    elif hasattr(raw, "partition") and hasattr(raw, "offset"):
        return f"kafka:{raw.topic}:{raw.partition}:{raw.offset}"
    if index is None:
        return f"{destination}:{fallback_id}"
    own = item.headers.get("message_id") or item.headers.get("correlation_id") or fallback_id
    return f"{destination}:{own}:{index}"


def redelivers(msg: Any, subscriber: Any) -> bool:
    """Whether the broker delivers a NACKed message again (else a NACK is the message's end).

    Redis keeps an unacknowledged message only in a stream's consumer group
    (its pending list, for a consumer to claim); channels, lists and streams
    read without a group drop it. Core NATS drops it; JetStream (a
    ``subscriber`` with a stream) redelivers. RabbitMQ, Kafka and the others
    redeliver.
    """
    raw = msg.raw_message
    if isinstance(raw, list | tuple) and raw:
        raw = raw[0]
    if isinstance(raw, Mapping):
        return bool(getattr(msg, "group", None) or getattr(getattr(subscriber, "stream_sub", None), "group", None))
    if messaging_system(msg) == "nats":
        return getattr(subscriber, "stream", None) is not None or jetstream_metadata(raw) is not None
    return True


def jetstream_metadata(raw: Any) -> Any | None:
    """A NATS message's JetStream metadata, or ``None`` for core NATS and other brokers."""
    reply = getattr(raw, "reply", None)
    if not isinstance(reply, str) or not reply.startswith("$JS.ACK."):
        return None
    return raw.metadata


def delivery_count(raw: Any) -> int | None:
    """How many times the broker has delivered this message (1 = first time), when it says so.

    JetStream: ``num_delivered``; RabbitMQ quorum queues: ``x-delivery-count``
    (previous deliveries); Redis streams read with a claim: ``delivery_counts``.
    ``None`` elsewhere.
    """
    if isinstance(raw, Mapping):
        counts = raw.get("delivery_counts")
        return int(counts[0]) + 1 if counts else None
    meta = jetstream_metadata(raw)
    if meta is not None:
        return int(meta.num_delivered)
    headers = getattr(raw, "headers", None)
    if hasattr(raw, "routing_key") and isinstance(headers, Mapping) and "x-delivery-count" in headers:
        try:
            return int(headers["x-delivery-count"]) + 1
        except (TypeError, ValueError):
            return None
    return None


def record_id_for(item: Received, destination: str, fallback_id: str) -> str:
    """The record id of a received message: the publisher's ``audit-message-id``, else derived (uuid5)."""
    given = storable_text(item.headers.get(MESSAGE_ID_HEADER), None)
    if given is not None:
        return given
    return str(uuid.uuid5(_ID_NAMESPACE, broker_identity(item, destination, fallback_id)))


def trace_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """The headers worth keeping in a record: trace context, baggage and the ``audit-*`` ones."""
    keep = (*propagate.get_global_textmap().fields, *AUDIT_HEADERS)
    kept = {name: storable_text(headers[name], None) for name in keep if name in headers}
    return {name: value for name, value in kept.items() if value is not None}


def published_message(cmd: Any, agent: str, payload: dict[str, Any], *, request: Message | None = None) -> Message:
    """The audit record of one publish command from ``agent``; never raises for what FastStream accepts.

    ``request``: the message a handler is answering, when ``cmd`` is its reply.
    """
    kind = _type_or(cmd.headers.get(MESSAGE_TYPE_HEADER), PUBLISH_TYPES.get(str(cmd.publish_type.value)))
    to_agent, reply_to = publish_destination(cmd), cmd.reply_to
    if request is not None and kind is MessageType.RESPONSE:
        to_agent = request.from_agent if request.from_agent != UNKNOWN_SENDER else REPLY_INBOX
        reply_to = request.message_id
    return Message(
        from_agent=agent,
        to_agent=storable_text(to_agent, "unknown"),
        message_type=kind,
        payload=payload,
        correlation_id=storable_text(cmd.correlation_id, None),
        reply_to=storable_text(reply_to, None),
    )


def received_message(item: Received, msg: Any, message_id: str, destination: str, agent: str) -> Message:
    """The audit record of a received message, as the consume side sees it; never raises.

    A sender, type, correlation id or reply-to that does not validate is
    replaced by :data:`UNKNOWN_SENDER`, ``EVENT`` or left out. A reply a
    requester received (``request()``) goes to ``agent``, the requester.
    """
    headers = item.headers
    is_reply = str(getattr(msg.source_type, "value", "")) == "RESPONSE"
    kind = _type_or(headers.get(MESSAGE_TYPE_HEADER), MessageType.RESPONSE if is_reply else None)
    reply_to = headers.get(IN_REPLY_TO_HEADER) if is_reply else (headers.get("reply_to") or msg.reply_to)
    correlation = headers.get("correlation_id") if item.index is not None else msg.correlation_id
    return Message(
        from_agent=storable_text(headers.get(FROM_AGENT_HEADER), UNKNOWN_SENDER),
        to_agent=agent if is_reply else destination,
        message_type=kind,
        payload=item.payload,
        correlation_id=storable_text(correlation, None),
        reply_to=storable_text(reply_to, None),
        message_id=message_id,
        headers=trace_headers(headers),
    )


def _type_or(value: Any, default: MessageType | None) -> MessageType:
    try:
        return MessageType(value)
    except ValueError:
        return default or MessageType.EVENT
