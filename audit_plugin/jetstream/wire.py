"""The format of audit operations in JetStream messages, their identities and digests.

**Format 2** (written): a JetStream message carries a *batch*: many
operations of one shard (see :mod:`audit_plugin.integrity.shards`),
published on ``<stream>.ops.<shard>``. The body is MessagePack, decoded
and checked in one pass by ``msgspec`` against :class:`WireBatch` (every
field's type, enum values, lengths, ranges, hex ids, aware times; then the
text checks PostgreSQL needs: no NUL, a payload that is a JSON object).
Two digests travel with it:

* the body's SHA-256, in the header ``Audit-Digest``: what the ingester
  received is what the producer published (also the message's
  ``Nats-Msg-Id``, so the stream drops a batch the producer's writer
  publishes again after a lost acknowledgement);
* per record, the digests of its lifecycle entry as the producer computed
  them (``record_digest`` and the entry's ``digest``, in its hash format):
  the ingester computes them again from what it decoded, and they must agree.

A message that does not decode, fails a check or whose digest does not match
is refused whole (:class:`~audit_plugin.exceptions.InvalidFieldError`
naming the field, e.g. ``operation.ops[3].message_id``); the ingester keeps
it in quarantine.

**Format 1** (still read): one operation per message, a JSON body with
``"v": 1``, on ``<stream>.record`` and ``<stream>.status``
(:func:`decode`). The first byte tells them apart: a format-1 body is a JSON
object (``{``), a format-2 body a MessagePack array.

Every operation carries an identity the store checks, so an ingester's
repeated write (a batch redelivered after a lost ``ack``) changes nothing:
a record is identified by its ``message_id``; a status update by its
``operation_id``. An update queued without one gets an id derived from its
content (message, status, time reported, fields), which stays the same for
every publish of that update and differs between two real updates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson

from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.integrity.ledger import FallbackRow, LedgeredRow
from audit_plugin.integrity.shards import MAX_SHARDS, shard_of
from audit_plugin.model import validation as v
from audit_plugin.model.messages import MessageStatus, MessageType, Priority
from audit_plugin.model.records import StatusUpdate

FORMAT_VERSION = 1
"""Version of the one-operation body written by :func:`encode_record` and :func:`encode_update` (still read)."""
BATCH_VERSION = 2
"""Version of the batch body written by :func:`encode_batches`."""

MSG_ID_HEADER = "Nats-Msg-Id"
DIGEST_HEADER = "Audit-Digest"
"""Header of a format-2 message: ``sha256=<hex>`` of its body."""

RECORD = "record"
STATUS = "status"


@dataclass(frozen=True, slots=True)
class RecordOperation:
    """Insert ``row`` unless its ``message_id`` is stored; ``fallback``: a consume side's copy (``record_outcome``).

    ``digests``: the producer's ``(record_digest, entry digest, hash
    format)`` of the row's lifecycle entry (format 2; ``None`` when it did not hash).
    """

    row: dict[str, Any]
    fallback: bool = False
    digests: tuple[str | None, str, int] | None = None


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


# -- format 2: batches ------------------------------------------------------------------------

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=v.MAX_TEXT_LENGTH)]
_OptionalText = Annotated[str, msgspec.Meta(max_length=v.MAX_TEXT_LENGTH)] | None
_Count = Annotated[int, msgspec.Meta(ge=0, le=v.INT32_MAX)]
_Time = Annotated[datetime, msgspec.Meta(tz=True)]
_Hex32 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")] | None
_Hex16 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")] | None
_Digest = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
_MessageTypeValue = Literal[tuple(member.value for member in MessageType)]  # type: ignore[valid-type]
_PriorityValue = Literal[tuple(member.value for member in Priority)]  # type: ignore[valid-type]
_StatusValue = Literal[tuple(member.value for member in MessageStatus)]  # type: ignore[valid-type]


class WireRecord(msgspec.Struct, tag="r", array_like=True, forbid_unknown_fields=True):
    """A record of a batch: its ``message_audit_log`` row, whether it is a fallback, the producer's digests."""

    message_id: _Text
    from_agent: _Text
    to_agent: _Text
    message_type: _MessageTypeValue
    priority: _PriorityValue
    status: _StatusValue
    correlation_id: _OptionalText
    reply_to: _OptionalText
    payload_json: str
    timestamp: _Time
    delivered_at: _Time | None
    ttl_seconds: _Count | None
    retry_count: _Count
    error_message: str | None
    trace_id: _Hex32
    span_id: _Hex16
    fallback: bool = False
    record_digest: _Digest | None = None
    digest: _Digest | None = None
    hash_version: Annotated[int, msgspec.Meta(ge=1, le=255)] | None = None


class WireStatus(msgspec.Struct, tag="s", array_like=True, forbid_unknown_fields=True):
    """A status operation of a batch (a status change or a retry), always with its operation id."""

    message_id: _Text
    status: _StatusValue
    delivered_at: _Time | None
    error_message: str | None
    retry_count: _Count | None
    at: _Time
    operation_id: _Text


class WireBatch(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """A format-2 body: ``[2, shard, shards, [operation, ...]]``."""

    v: Literal[2]
    shard: Annotated[int, msgspec.Meta(ge=0, lt=MAX_SHARDS)]
    shards: Annotated[int, msgspec.Meta(ge=1, le=MAX_SHARDS)]
    ops: Annotated[list[WireRecord | WireStatus], msgspec.Meta(min_length=1)]


ROW_FIELDS: tuple[str, ...] = tuple(WireRecord.__struct_fields__[:16])
"""The row's columns in the order a :class:`WireRecord` carries them."""
_row_values = operator.itemgetter(*ROW_FIELDS)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WireBatch)

BATCH_OVERHEAD = 16
"""Bytes of a batch body besides its operations (the array headers, version, shard numbers)."""
OPERATION_OVERHEAD = 320
"""Bytes an operation takes besides its payload and error texts, at most (for packing before encoding)."""


def record_item(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A record as a format-2 operation (the array form of :class:`WireRecord`), with its digests if it has them."""
    fallback = isinstance(row, FallbackRow)
    if isinstance(row, LedgeredRow) and row.digest is not None:
        return ("r", *_row_values(row), fallback, row.record_digest, row.digest, row.hash_version)
    return ("r", *_row_values(row), fallback)


def status_item(update: StatusUpdate) -> tuple[Any, ...]:
    """A status update (with its ``operation_id``) as a format-2 operation (the array form of :class:`WireStatus`)."""
    return (
        "s",
        update.message_id,
        update.status._value_,
        update.delivered_at,
        update.error_message,
        update.retry_count,
        update.at,
        update.operation_id,
    )


def item_size(item: tuple[Any, ...]) -> int:
    """An upper bound of the encoded size of an operation (its texts counted at 4 bytes a character at most)."""
    if item[0] == "r":
        return OPERATION_OVERHEAD + 4 * (len(item[9]) + len(item[14] or ""))
    return OPERATION_OVERHEAD + 4 * len(item[4] or "")


def encode_batches(shard: int, shards: int, items: Sequence[tuple[Any, ...]], max_bytes: int) -> list[bytes]:
    """``items`` (operations of one shard, in order) as format-2 bodies of at most ``max_bytes`` each.

    Operations are packed by an upper bound of their size, so a body is
    never larger than ``max_bytes``; an operation alone larger than that is
    a body of its own (the stream refuses it as too large).
    """
    bodies: list[bytes] = []
    chunk: list[tuple[Any, ...]] = []
    size = BATCH_OVERHEAD
    for item in items:
        each = item_size(item)
        if chunk and size + each > max_bytes:
            bodies.append(_encoder.encode((BATCH_VERSION, shard, shards, chunk)))
            chunk, size = [], BATCH_OVERHEAD
        chunk.append(item)
        size += each
    if chunk:
        bodies.append(_encoder.encode((BATCH_VERSION, shard, shards, chunk)))
    return bodies


def body_digest(body: bytes) -> str:
    """The ``Audit-Digest`` header value of ``body``: ``sha256=<hex>``."""
    return "sha256=" + hashlib.sha256(body).hexdigest()


def batch_msg_id(digest: str) -> str:
    """The ``Nats-Msg-Id`` of a batch: its digest (a batch published again is the same bytes, the same id)."""
    return "ops:" + digest.removeprefix("sha256=")


def decode_message(body: bytes, headers: Mapping[str, str] | None, *, shards: int) -> list[Operation]:
    """The operations of a JetStream message body in either format; a typed error naming the field otherwise.

    A format-2 body must carry a matching ``Audit-Digest`` header, belong to
    a stream of ``shards`` shards, and hold only operations of its own shard.
    """
    if body[:1] == b"{":
        return [decode(body)]
    expected = (headers or {}).get(DIGEST_HEADER)
    if expected is None:
        raise InvalidFieldError("operation", f"has no {DIGEST_HEADER} header (a format-2 batch always does)")
    if body_digest(body) != expected:
        raise InvalidFieldError("operation", f"body does not match its {DIGEST_HEADER} (altered or truncated)")
    return decode_batch(body, shards=shards)


def decode_batch(body: bytes, *, shards: int) -> list[Operation]:
    """The operations of a format-2 body (see :func:`decode_message`, which checks its digest first)."""
    try:
        batch = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidFieldError("operation", _version_problem(body) or _located(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidFieldError("operation", f"is not a format-2 batch ({exc})") from None
    if batch.shards != shards:
        raise InvalidFieldError("operation.shards", f"published for {batch.shards} shard(s); the stream has {shards}")
    operations: list[Operation] = []
    for index, op in enumerate(batch.ops):
        where = f"operation.ops[{index}]"
        if shard_of(op.message_id, shards) != batch.shard:
            raise InvalidFieldError(f"{where}.message_id", f"is not of shard {batch.shard}")
        operations.append(_record(op, where) if isinstance(op, WireRecord) else _status(op, where))
    return operations


def _record(op: WireRecord, where: str) -> RecordOperation:
    row = {name: getattr(op, name) for name in ROW_FIELDS}
    for name in ("message_id", "from_agent", "to_agent", "correlation_id", "reply_to", "error_message"):
        _storable(f"{where}.{name}", row[name])
    payload_json = op.payload_json
    try:
        payload = orjson.loads(payload_json)
    except orjson.JSONDecodeError:
        raise InvalidFieldError(f"{where}.payload_json", "is not JSON") from None
    if not isinstance(payload, dict):
        raise FieldTypeError(f"{where}.payload_json", "a JSON object", payload)
    if "\\u0000" in payload_json and v.contains_nul(payload):
        raise InvalidFieldError(f"{where}.payload_json", "contains a NUL character, which PostgreSQL cannot store")
    digests = None
    if op.digest is not None and op.hash_version is not None:
        digests = (op.record_digest, op.digest, op.hash_version)
    return RecordOperation(row, op.fallback, digests)


def _status(op: WireStatus, where: str) -> StatusOperation:
    for name in ("message_id", "error_message", "operation_id"):
        _storable(f"{where}.{name}", getattr(op, name))
    return StatusOperation(
        StatusUpdate(
            op.message_id,
            MessageStatus(op.status),
            op.delivered_at,
            op.error_message,
            op.retry_count,
            op.at,
            op.operation_id,
        )
    )


def _storable(field: str, value: str | None) -> None:
    if value is not None and "\x00" in value:
        raise InvalidFieldError(field, "contains a NUL character (\\x00), which PostgreSQL cannot store")


def _located(exc: msgspec.ValidationError) -> str:
    """msgspec's message with its ``$[3][0][1]`` path given as field names (``at `operation.ops[0].message_id```)."""
    text = str(exc)
    message, _, path = text.partition(" - at `$")
    if not path:
        return text
    indexes = [int(part) for part in path.rstrip("`").strip("[]").split("][") if part.isdigit()]
    names = ["v", "shard", "shards", "ops"]
    field = "operation"
    if indexes:
        field += "." + (names[indexes[0]] if indexes[0] < len(names) else str(indexes[0]))
    if len(indexes) >= 2:
        field += f"[{indexes[1]}]"
    if len(indexes) >= 3:
        field += f".{_op_field(indexes[2])}"
    return f"{message} (at {field})"


def _op_field(index: int) -> str:
    fields = ("op", *WireRecord.__struct_fields__)
    return fields[index] if index < len(fields) else str(index)


def _version_problem(body: bytes) -> str | None:
    """``format version N is not supported`` when the body is a batch of another version, else ``None``."""
    try:
        document = msgspec.msgpack.decode(body)
    except msgspec.DecodeError:
        return None
    if isinstance(document, list) and document and document[0] != BATCH_VERSION:
        return f"format version {document[0]!r:.20} is not supported (this reader: 1 and {BATCH_VERSION})"
    return None


def operation_ids(operations: Iterable[Operation]) -> list[str]:
    """Each operation's identity (as a format-1 ``Nats-Msg-Id``: ``record:<id>``, ``status:<id>:<operation>``)."""
    return [
        record_msg_id(op.row["message_id"], fallback=op.fallback)
        if isinstance(op, RecordOperation)
        else status_msg_id(op.update)
        for op in operations
    ]
