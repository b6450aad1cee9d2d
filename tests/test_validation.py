"""Bad input: a typed error naming the field, raised before anything is written."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from audit_plugin import AuditQuery, Message, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.exceptions import (
    AuditError,
    FieldTypeError,
    InvalidFieldError,
    PayloadNotSerializableError,
)
from audit_plugin.model.validation import encode_payload
from tests.helpers import make_message


class NotJSON:
    pass


def _circular() -> dict:
    payload: dict = {}
    payload["self"] = payload
    return payload


def _deep(levels: int) -> dict:
    payload: dict = {}
    for _ in range(levels):
        payload = {"d": payload}
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        {"s": {1, 2}},
        {"b": b"bytes"},
        {"o": NotJSON()},
        {"nan": float("nan")},
        {"inf": float("-inf")},
        _circular(),
        {"when": datetime(2026, 1, 1)},
    ],
    ids=["set", "bytes", "object", "nan", "infinity", "circular", "datetime"],
)
async def test_unserialisable_payloads_are_rejected(trail: MessageAuditTrail, payload: dict) -> None:
    with pytest.raises(PayloadNotSerializableError) as caught:
        await trail.log_message(make_message(payload=payload))
    assert caught.value.field == "payload"
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, AuditError)
    assert await trail.query_messages() == []


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "héllo ✓ \u2028", "n": -12, "big": 2**80, "f": [0.1, 1e16, -2.5e-07], "none": None, "ok": True},
        {1: "int key", 2.5: "float key", None: "null key", "t": (1, [2, {"x": ()}])},
        {},
    ],
    ids=["values", "keys-and-tuples", "empty"],
)
def test_payload_text_is_the_standard_librarys_strict_compact_json(payload: dict) -> None:
    assert encode_payload(payload) == json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


async def test_deeply_nested_payload_is_a_typed_error_not_recursion_error(trail: MessageAuditTrail) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        await trail.log_message(make_message(payload=_deep(100_000)))
    assert caught.value.field == "payload"
    assert await trail.query_messages() == []


@pytest.mark.parametrize(
    "payload",
    [{"text": "a\x00b"}, {"key\x00": 1}, {"list": ["ok", ["deep\x00"]]}, {"bad": "\ud800"}],
    ids=["nul-value", "nul-key", "nul-nested", "lone-surrogate"],
)
async def test_text_no_database_can_store_is_rejected_on_every_backend(trail: MessageAuditTrail, payload: dict) -> None:
    with pytest.raises(InvalidFieldError, match="payload"):
        await trail.log_message(make_message(payload=payload))
    assert await trail.query_messages() == []


async def test_escaped_nul_lookalike_text_is_stored(trail: MessageAuditTrail) -> None:
    payload = {"text": "backslash-u-zero: \\u0000 is fine", "emoji": "🙂"}
    message = make_message(payload=payload)
    await trail.log_message(message)
    record = await trail.get_message(message.message_id)
    assert record is not None and record.payload == payload


async def test_huge_payload_round_trips(trail: MessageAuditTrail) -> None:
    payload = {"blob": "x" * 5_000_000, "items": list(range(10_000))}
    message = make_message(payload=payload)
    await trail.log_message(message)
    record = await trail.get_message(message.message_id)
    assert record is not None and record.payload == payload


@pytest.mark.parametrize(
    ("fields", "field_name", "error"),
    [
        ({"from_agent": ""}, "from_agent", InvalidFieldError),
        ({"from_agent": 42}, "from_agent", FieldTypeError),
        ({"to_agent": "bad\x00agent"}, "to_agent", InvalidFieldError),
        ({"message_type": "SHOUT"}, "message_type", InvalidFieldError),
        ({"priority": "critical"}, "priority", InvalidFieldError),
        ({"ttl_seconds": "60"}, "ttl_seconds", FieldTypeError),
        ({"ttl_seconds": -1}, "ttl_seconds", InvalidFieldError),
        ({"timestamp": "2026-01-01"}, "timestamp", FieldTypeError),
        ({"payload": ["not", "a", "dict"]}, "payload", FieldTypeError),
        ({"correlation_id": "x" * 5000}, "correlation_id", InvalidFieldError),
    ],
)
def test_message_fields_are_checked_when_built(fields: dict, field_name: str, error: type[Exception]) -> None:
    base = {"from_agent": "a", "to_agent": "b", "message_type": MessageType.EVENT}
    with pytest.raises(error) as caught:
        Message(**{**base, **fields})
    assert caught.value.field == field_name  # type: ignore[attr-defined]
    assert field_name in str(caught.value)
    assert isinstance(caught.value, ValueError | TypeError)


def test_enum_values_given_as_strings_are_accepted() -> None:
    message = Message("a", "b", "command", priority="high")
    assert message.message_type is MessageType.COMMAND
    assert message.priority.value == "HIGH"


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"limit": 0}, "AuditQuery.limit"),
        ({"limit": 10**9}, "AuditQuery.limit"),
        ({"limit": "10"}, "AuditQuery.limit"),
        ({"offset": -1}, "AuditQuery.offset"),
        ({"status": "LOST"}, "AuditQuery.status"),
        ({"message_type": 3}, "AuditQuery.message_type"),
        ({"trace_id": "not-a-trace"}, "AuditQuery.trace_id"),
        ({"trace_id": "' OR 1=1 --"}, "AuditQuery.trace_id"),
        ({"from_agent": "x\x00"}, "AuditQuery.from_agent"),
        ({"from_agent": 7}, "AuditQuery.from_agent"),
        ({"start_time": "yesterday"}, "AuditQuery.start_time"),
        ({"start_time": datetime(2026, 2, 1), "end_time": datetime(2026, 1, 1)}, "AuditQuery.start_time"),
    ],
)
def test_bad_query_values_are_typed_errors(fields: dict, field_name: str) -> None:
    with pytest.raises(AuditError) as caught:
        AuditQuery(**fields)
    assert caught.value.field == field_name  # type: ignore[attr-defined]
    assert isinstance(caught.value, ValueError | TypeError)


async def test_bad_status_updates_are_typed_errors(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    with pytest.raises(InvalidFieldError, match="status"):
        await trail.update_message_status(message.message_id, "ARRIVED")  # type: ignore[arg-type]
    with pytest.raises(InvalidFieldError, match="retry_count"):
        await trail.update_message_status(message.message_id, MessageStatus.FAILED, retry_count=-1)
    with pytest.raises(FieldTypeError, match="delivered_at"):
        await trail.update_message_status(message.message_id, MessageStatus.DELIVERED, delivered_at="now")  # type: ignore[arg-type]
    with pytest.raises(InvalidFieldError, match="error_message"):
        await trail.update_message_status(message.message_id, MessageStatus.FAILED, error_message="a\x00b")
    [record] = await trail.query_messages()
    assert record.status is MessageStatus.PENDING  # nothing was changed by the rejected updates


async def test_log_message_rejects_non_messages(trail: MessageAuditTrail) -> None:
    with pytest.raises(FieldTypeError, match="message"):
        await trail.log_message({"from_agent": "a"})  # type: ignore[arg-type]


async def test_other_methods_check_their_arguments(trail: MessageAuditTrail) -> None:
    with pytest.raises(FieldTypeError, match="query"):
        await trail.query_messages("SELECT 1")  # type: ignore[arg-type]
    with pytest.raises(InvalidFieldError, match="days"):
        await trail.get_agent_communication_history("a", days=-1)
    with pytest.raises(InvalidFieldError, match="correlation_id"):
        await trail.get_conversation_history("")
    with pytest.raises(FieldTypeError, match="start_time"):
        await trail.get_statistics(start_time="2026")  # type: ignore[arg-type]
