"""What agents exchange: :class:`Message`, its enums and the :class:`DeliveryReceipt`.

A ``Message`` checks and normalises its fields when it is built (enum names
given as strings become members, a naive timestamp is taken as UTC), so a bad
value fails where it was written, not later inside the audit writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import uuid_utils

from audit_plugin.exceptions import FieldTypeError
from audit_plugin.model import validation as v


class MessageType(StrEnum):
    """What a message asks of its receiver."""

    COMMAND = "COMMAND"
    QUERY = "QUERY"
    RESPONSE = "RESPONSE"
    EVENT = "EVENT"
    NOTIFICATION = "NOTIFICATION"


class Priority(StrEnum):
    """Delivery priority, carried and recorded (the reference bus does not reorder)."""

    URGENT = "URGENT"
    HIGH = "HIGH"
    NORMAL = "NORMAL"
    LOW = "LOW"


class MessageStatus(StrEnum):
    """Where a message is in its lifecycle.

    PENDING: recorded before dispatch. SENT: handed to a transport that
    confirms later. DELIVERED, FAILED, EXPIRED: final outcomes.
    """

    PENDING = "PENDING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"

    @property
    def is_final(self) -> bool:
        return self in (MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.EXPIRED)


def new_message_id() -> str:
    """A fresh time-ordered message id: a UUID version 7 (RFC 9562) in canonical text form.

    Ids made one after another sort in the order they were made (within one
    process, even inside one millisecond), so new records land at the end of
    the ``message_id`` index instead of at random places in it: the index
    stays dense and the pages a write touches stay in memory however large
    the table grows.
    """
    return str(uuid_utils.uuid7())


SHORT_ID_LENGTH = 8


def short_id(message_id: str) -> str:
    """The part of a message id that tables and trees show: its last 8 characters.

    Time-ordered ids begin with their creation time, so every id minted in
    the same minute shares its first characters; the tail is random and
    tells messages apart. Commands that take an id accept this tail (or any
    unique start or end of the id) back.
    """
    return message_id[-SHORT_ID_LENGTH:]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Message:
    """One message from one agent to another.

    ``payload`` must be a JSON-serialisable dict (checked when the message is
    audited). ``headers`` is transport metadata (string to string); the audit
    plugin puts the W3C ``traceparent`` there. ``timestamp`` is when the
    message was created, aware UTC; ``ttl_seconds`` counts from it.
    ``message_id`` defaults to a time-ordered UUID (see :func:`new_message_id`);
    any non-empty string given instead is kept as it is.
    """

    from_agent: str
    to_agent: str
    message_type: MessageType
    payload: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    correlation_id: str | None = None
    reply_to: str | None = None
    message_id: str = field(default_factory=new_message_id)
    timestamp: datetime = field(default_factory=_utc_now)
    ttl_seconds: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check and normalise every field; raise a typed error naming the first bad one.

        Runs when the message is built and again when it is recorded, so a
        field changed in between (a ``Message`` is mutable) cannot carry a
        value the store would refuse past the audit plugin.
        """
        v.check_text("from_agent", self.from_agent)
        v.check_text("to_agent", self.to_agent)
        self.message_type = v.check_enum("message_type", MessageType, self.message_type)  # type: ignore[assignment]
        self.priority = v.check_enum("priority", Priority, self.priority)  # type: ignore[assignment]
        v.check_text("message_id", self.message_id)
        v.check_text("correlation_id", self.correlation_id, optional=True)
        v.check_text("reply_to", self.reply_to, optional=True)
        self.timestamp = v.to_utc("timestamp", self.timestamp)  # type: ignore[assignment]
        v.check_int("ttl_seconds", self.ttl_seconds, minimum=0, maximum=v.INT32_MAX, optional=True)
        if not isinstance(self.payload, dict):
            raise FieldTypeError("payload", "dict", self.payload)
        if not isinstance(self.headers, dict):
            raise FieldTypeError("headers", "dict[str, str]", self.headers)

    def is_expired(self, now: datetime | None = None) -> bool:
        """True when ``ttl_seconds`` have elapsed since ``timestamp``."""
        if self.ttl_seconds is None:
            return False
        elapsed = ((now or _utc_now()) - self.timestamp).total_seconds()
        return elapsed > self.ttl_seconds


@dataclass(slots=True)
class DeliveryReceipt:
    """The outcome of one ``send()``.

    ``retry_count`` counts retries (attempts - 1). ``error_message`` says why a
    FAILED or EXPIRED message was not delivered.
    """

    message_id: str
    status: MessageStatus
    delivered_at: datetime | None = None
    retry_count: int = 0
    error_message: str | None = None

    def __post_init__(self) -> None:
        v.check_text("message_id", self.message_id)
        self.status = v.check_enum("status", MessageStatus, self.status)  # type: ignore[assignment]
        self.delivered_at = v.to_utc("delivered_at", self.delivered_at, optional=True)
        v.check_int("retry_count", self.retry_count, minimum=0, maximum=v.INT32_MAX)
        v.check_text("error_message", self.error_message, optional=True, max_length=None)
