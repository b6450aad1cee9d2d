"""The format of one audit operation in a JetStream message, and its deduplication id.

Each record (a ``message_audit_log`` row) and each status update (a status
change or a retry) travels as one JetStream message: a JSON body with a
format version ``"v"`` that the reader dispatches on, and a ``Nats-Msg-Id``
header that names the operation, so the stream drops a producer's repeated
publish (a retry after a lost acknowledgement) inside its duplicate window.

Every operation also carries an identity the store checks, so an ingester's
repeated write (a batch redelivered after a lost ``ack``) changes nothing:
a record is identified by its ``message_id``; a status update by its
``operation_id``. An update queued without one gets an id derived from its
content (message, status, time reported, fields), which stays the same for
every publish of that update and differs between two real updates.

The reader (:func:`decode`) checks every field as :mod:`audit_plugin.validation`
checks a new message: anything else on the stream is refused with a typed
error naming the field, never written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from audit_plugin import validation as v
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.messages import MessageStatus, MessageType, Priority
from audit_plugin.records import StatusUpdate

FORMAT_VERSION = 1
"""Version of the body written by :func:`encode_record` and :func:`encode_update`."""

MSG_ID_HEADER = "Nats-Msg-Id"

RECORD = "record"
STATUS = "status"


@dataclass(frozen=True, slots=True)
class RecordOperation:
    """Insert ``row`` unless its ``message_id`` is stored; ``fallback``: a consume side's copy (``record_outcome``)."""

    row: dict[str, Any]
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class StatusOperation:
    """Apply ``update`` (its ``operation_id`` is always set) unless the message already holds that operation."""

    update: StatusUpdate


Operation = RecordOperation | StatusOperation


def derived_operation_id(update: StatusUpdate) -> str:
    """A stable identity for an update queued without one (see the module docs)."""
    content = orjson.dumps(
        [
            update.message_id,
            update.status.value,
            update.at,
            update.delivered_at,
            update.error_message,
            update.retry_count,
        ]
    )
    return "op-" + hashlib.sha256(content).hexdigest()[:32]


def with_operation_id(update: StatusUpdate) -> StatusUpdate:
    """``update`` itself if it has an ``operation_id``, else a copy carrying its derived one."""
    if update.operation_id is not None:
        return update
    return dataclasses.replace(update, operation_id=derived_operation_id(update))


def record_msg_id(message_id: str, *, fallback: bool = False) -> str:
    return f"{'outcome-record' if fallback else RECORD}:{message_id}"


def status_msg_id(update: StatusUpdate) -> str:
    return f"{STATUS}:{update.message_id}:{update.operation_id}"


def encode_record(row: Mapping[str, Any], *, fallback: bool = False) -> bytes:
    """The body of a record operation (the row's columns; datetimes as ISO 8601)."""
    return orjson.dumps({"v": FORMAT_VERSION, "op": RECORD, "fallback": fallback, "row": dict(row)})


def encode_update(update: StatusUpdate) -> bytes:
    """The body of a status operation; ``update`` must carry its ``operation_id``."""
    return orjson.dumps(
        {
            "v": FORMAT_VERSION,
            "op": STATUS,
            "message_id": update.message_id,
            "status": update.status.value,
            "delivered_at": update.delivered_at,
            "error_message": update.error_message,
            "retry_count": update.retry_count,
            "at": update.at,
            "operation_id": update.operation_id,
        }
    )


def decode(body: bytes) -> Operation:
    """The operation in a JetStream message body; a typed error naming the field if it is not one."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidFieldError("operation", "is not JSON") from None
    if not isinstance(document, dict):
        raise FieldTypeError("operation", "a JSON object", document)
    version = document.get("v")
    if version != FORMAT_VERSION:
        raise InvalidFieldError("operation.v", f"format version {version!r} is not supported (this reader: 1)")
    kind = document.get("op")
    if kind == RECORD:
        fallback = document.get("fallback", False)
        if not isinstance(fallback, bool):
            raise FieldTypeError("operation.fallback", "bool", fallback)
        return RecordOperation(_decode_row(document.get("row")), fallback)
    if kind == STATUS:
        return StatusOperation(_decode_update(document))
    raise InvalidFieldError("operation.op", f"{kind!r:.40} is not 'record' or 'status'")


def _decode_row(row: object) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise FieldTypeError("record.row", "a JSON object", row)
    field = "record."

    def text(name: str, *, optional: bool = False, max_length: int | None = v.MAX_TEXT_LENGTH) -> str | None:
        return v.check_text(field + name, row.get(name), optional=optional, max_length=max_length)

    payload_json = text("payload_json", max_length=None)
    try:
        payload = orjson.loads(payload_json)  # type: ignore[arg-type]
    except orjson.JSONDecodeError:
        raise InvalidFieldError(field + "payload_json", "is not JSON") from None
    if not isinstance(payload, dict):
        raise FieldTypeError(field + "payload_json", "a JSON object", payload)
    if "\\u0000" in payload_json and v.contains_nul(payload):  # the text "\\u0000" alone is not a NUL
        raise InvalidFieldError(field + "payload_json", "contains a NUL character, which PostgreSQL cannot store")
    return {
        "message_id": text("message_id"),
        "from_agent": text("from_agent"),
        "to_agent": text("to_agent"),
        "message_type": v.check_enum(field + "message_type", MessageType, row.get("message_type")).value,  # type: ignore[union-attr]
        "priority": v.check_enum(field + "priority", Priority, row.get("priority")).value,  # type: ignore[union-attr]
        "status": v.check_enum(field + "status", MessageStatus, row.get("status")).value,  # type: ignore[union-attr]
        "correlation_id": text("correlation_id", optional=True),
        "reply_to": text("reply_to", optional=True),
        "payload_json": payload_json,
        "timestamp": _time(field + "timestamp", row.get("timestamp")),
        "delivered_at": _time(field + "delivered_at", row.get("delivered_at"), optional=True),
        "ttl_seconds": v.check_int(field + "ttl_seconds", row.get("ttl_seconds"), minimum=0, optional=True),
        "retry_count": v.check_int(field + "retry_count", row.get("retry_count"), minimum=0),
        "error_message": text("error_message", optional=True, max_length=None),
        "trace_id": v.check_hex_id(field + "trace_id", row.get("trace_id"), 32),
        "span_id": v.check_hex_id(field + "span_id", row.get("span_id"), 16),
    }


def _decode_update(document: dict[str, Any]) -> StatusUpdate:
    operation_id = document.get("operation_id")
    if operation_id is None:
        raise InvalidFieldError("status.operation_id", "is missing (every published update has one)")
    update = StatusUpdate.build(
        document.get("message_id"),
        document.get("status"),
        _time("status.delivered_at", document.get("delivered_at"), optional=True),
        document.get("error_message"),
        document.get("retry_count"),
        operation_id=operation_id,
    )
    return dataclasses.replace(update, at=_time("status.at", document.get("at")))


def _time(field: str, value: object, *, optional: bool = False) -> datetime | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise FieldTypeError(field, "an ISO 8601 time", value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidFieldError(field, f"{value!r:.60} is not an ISO 8601 time") from None
    return v.to_utc(field, moment)
