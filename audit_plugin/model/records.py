"""What the trail stores and returns: records, queries, statistics, retention.

``AuditQuery`` validates itself when built, so a hostile or mistyped filter is
a typed error at the call site; every value then reaches SQL as a bound
parameter, never as SQL text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.model import validation as v
from audit_plugin.model.messages import Message, MessageStatus, MessageType, Priority

MAX_QUERY_LIMIT = 100_000
"""Largest page ``AuditQuery.limit`` accepts; export streams for more."""


class RetentionPolicy(Enum):
    """How long records are kept; ``apply_retention_policy()`` deletes older ones."""

    DAYS_30 = 30
    DAYS_90 = 90
    DAYS_365 = 365
    FOREVER = None

    @property
    def max_age(self) -> timedelta | None:
        return None if self.value is None else timedelta(days=self.value)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored message with its current status.

    ``payload`` is the decoded JSON payload; ``trace_id`` (32 hex) and
    ``span_id`` (16 hex) point at the message's OpenTelemetry span.
    """

    message_id: str
    from_agent: str
    to_agent: str
    message_type: MessageType
    priority: Priority
    status: MessageStatus
    correlation_id: str | None
    reply_to: str | None
    payload: dict[str, Any]
    timestamp: datetime
    delivered_at: datetime | None
    ttl_seconds: int | None
    retry_count: int
    error_message: str | None
    trace_id: str | None = None
    span_id: str | None = None

    @property
    def delivery_seconds(self) -> float | None:
        """Seconds from creation to delivery, for delivered messages."""
        if self.delivered_at is None:
            return None
        return (self.delivered_at - self.timestamp).total_seconds()

    @classmethod
    def from_row(cls, row: Any) -> AuditRecord:
        """Build a record from a ``message_audit_log`` row mapping."""
        return cls(
            message_id=row["message_id"],
            from_agent=row["from_agent"],
            to_agent=row["to_agent"],
            message_type=MessageType(row["message_type"]),
            priority=Priority(row["priority"]),
            status=MessageStatus(row["status"]),
            correlation_id=row["correlation_id"],
            reply_to=row["reply_to"],
            payload=json.loads(row["payload_json"]),
            timestamp=row["timestamp"],
            delivered_at=row["delivered_at"],
            ttl_seconds=row["ttl_seconds"],
            retry_count=row["retry_count"],
            error_message=row["error_message"],
            trace_id=row["trace_id"],
            span_id=row["span_id"],
        )


def check_message(message: object) -> Message:
    """``message`` itself once every field is checked (a ``Message`` is mutable: fields may have changed since
    it was built); raises a typed error naming the first bad field."""
    if not isinstance(message, Message):
        raise v.FieldTypeError("message", "audit_plugin.Message", message)
    message.validate()
    return message


def build_row(
    message: Message,
    payload_json: str,
    *,
    status: MessageStatus = MessageStatus.PENDING,
    trace_id: str | None = None,
    span_id: str | None = None,
) -> dict[str, Any]:
    """The ``message_audit_log`` row of a message :func:`check_message` has passed, storing ``payload_json``.

    Only the span ids are checked here (the message was, once, just before). Enum members
    are stored as their values (``_value_``: the plain attribute behind ``.value``).
    """
    return {
        "message_id": message.message_id,
        "from_agent": message.from_agent,
        "to_agent": message.to_agent,
        "message_type": message.message_type._value_,
        "priority": message.priority._value_,
        "status": status._value_,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "payload_json": payload_json,
        "timestamp": message.timestamp,
        "delivered_at": None,
        "ttl_seconds": message.ttl_seconds,
        "retry_count": 0,
        "error_message": None,
        "trace_id": v.check_hex_id("trace_id", trace_id, 32),
        "span_id": v.check_hex_id("span_id", span_id, 16),
    }


def record_row(
    message: Message,
    *,
    status: MessageStatus = MessageStatus.PENDING,
    trace_id: str | None = None,
    span_id: str | None = None,
    payload_json: str | None = None,
) -> dict[str, Any]:
    """The ``message_audit_log`` row for ``message``, validated and ready to insert.

    Raises a typed error naming the field if anything cannot be stored.
    ``payload_json`` is the payload text to store when the caller has already
    prepared it; otherwise the payload is stored as strict JSON, unredacted.
    The trail builds its rows with :class:`~audit_plugin.privacy.capture.MessageCapture`
    instead (redaction, size cap, encryption, ledger entry: one pass).
    """
    check_message(message)
    text = payload_json if payload_json is not None else v.encode_payload(message.payload)
    return build_row(message, text, status=status, trace_id=trace_id, span_id=span_id)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A validated status change for one message; ``None`` fields keep their stored value.

    ``at`` is when the change was reported (the lifecycle event's time).
    ``operation_id`` names the operation (a broker delivery's outcome, one
    retry): the store applies each operation of a message once, so a
    redelivered report changes nothing. ``None``: no identity, never deduplicated.
    """

    message_id: str
    status: MessageStatus
    delivered_at: datetime | None = None
    error_message: str | None = None
    retry_count: int | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    operation_id: str | None = None

    @classmethod
    def build(
        cls,
        message_id: object,
        status: object,
        delivered_at: object = None,
        error_message: object = None,
        retry_count: object = None,
        *,
        operation_id: object = None,
    ) -> StatusUpdate:
        return cls(
            message_id=v.check_text("message_id", message_id),  # type: ignore[arg-type]
            status=v.check_enum("status", MessageStatus, status),  # type: ignore[arg-type]
            delivered_at=v.to_utc("delivered_at", delivered_at, optional=True),
            error_message=v.check_text("error_message", error_message, optional=True, max_length=None),
            retry_count=v.check_int("retry_count", retry_count, minimum=0, maximum=v.INT32_MAX, optional=True),
            operation_id=check_operation_id(operation_id),
        )

    @classmethod
    def retry(
        cls, message_id: object, attempt: object, error_message: object, *, operation_id: object = None
    ) -> StatusUpdate:
        """Retry number ``attempt`` (1 for the first) is about to start after ``error_message``.

        A retry is a lifecycle event with status PENDING, the retry count and
        the error; like any non-final update it never touches a message whose
        outcome is final.
        """
        v.check_int("attempt", attempt, minimum=1)
        return cls.build(message_id, MessageStatus.PENDING, None, error_message, attempt, operation_id=operation_id)


def check_operation_id(operation_id: object) -> str | None:
    """An operation id is non-empty storable text of at most 1024 characters, or ``None``."""
    value = v.check_text("operation_id", operation_id, optional=True)
    if value == "":
        raise InvalidFieldError("operation_id", "must not be empty (use None for no identity)")
    return value


@dataclass(slots=True)
class AuditQuery:
    """Filters for ``query_messages``; every filter given must match (AND).

    Times are inclusive (``start_time <= timestamp <= end_time``); naive
    datetimes are taken as UTC. Results are newest first with
    ``message_id`` breaking ties, so ``limit``/``offset`` pages are stable.

    ``before`` is a keyset cursor: ``(timestamp, message_id)`` of the last
    record of the previous page; only records after it in that order
    (older, or as old with a smaller ``message_id``) match. Page 500 then
    costs what page 1 does, where ``offset`` reads and skips every row before.
    """

    from_agent: str | None = None
    to_agent: str | None = None
    message_type: MessageType | None = None
    status: MessageStatus | None = None
    correlation_id: str | None = None
    trace_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    limit: int = 100
    offset: int = 0
    before: tuple[datetime, str] | None = None

    def __post_init__(self) -> None:
        v.check_text("AuditQuery.from_agent", self.from_agent, optional=True)
        v.check_text("AuditQuery.to_agent", self.to_agent, optional=True)
        v.check_text("AuditQuery.correlation_id", self.correlation_id, optional=True)
        self.message_type = v.check_enum("AuditQuery.message_type", MessageType, self.message_type, optional=True)
        self.status = v.check_enum("AuditQuery.status", MessageStatus, self.status, optional=True)
        self.trace_id = v.check_hex_id("AuditQuery.trace_id", self.trace_id, 32)
        self.start_time = v.to_utc("AuditQuery.start_time", self.start_time, optional=True)
        self.end_time = v.to_utc("AuditQuery.end_time", self.end_time, optional=True)
        v.check_int("AuditQuery.limit", self.limit, minimum=1, maximum=MAX_QUERY_LIMIT)
        v.check_int("AuditQuery.offset", self.offset, minimum=0, maximum=v.INT64_MAX)
        if self.start_time and self.end_time and self.start_time > self.end_time:
            raise InvalidFieldError("AuditQuery.start_time", "is after end_time")
        if self.before is not None:
            if not isinstance(self.before, tuple) or len(self.before) != 2:
                raise v.FieldTypeError("AuditQuery.before", "(datetime, str) tuple", self.before)
            at = v.to_utc("AuditQuery.before", self.before[0])
            self.before = (at, v.check_text("AuditQuery.before", self.before[1]))  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class IdMatches:
    """What :meth:`MessageAuditTrail.find_ids` found for a prefix: matching message and correlation ids, sorted."""

    message_ids: list[str] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AuditStatistics:
    """Aggregates over a time window.

    ``avg_delivery_time`` is the mean seconds from creation to delivery over
    delivered messages (0.0 if none); ``error_rate`` is the percentage of
    messages that FAILED; ``top_senders``/``top_receivers`` are
    ``(agent, count)`` pairs, busiest first (at most 10).
    """

    total_messages: int
    messages_by_status: dict[str, int] = field(default_factory=dict)
    messages_by_type: dict[str, int] = field(default_factory=dict)
    top_senders: list[tuple[str, int]] = field(default_factory=list)
    top_receivers: list[tuple[str, int]] = field(default_factory=list)
    avg_delivery_time: float = 0.0
    error_rate: float = 0.0
