"""Small builders shared by the test modules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from audit_plugin import Message, MessageType, Priority

BASE_TIME = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)


def make_message(
    from_agent: str = "planner",
    to_agent: str = "worker",
    message_type: MessageType = MessageType.QUERY,
    *,
    at: datetime | None = None,
    seconds: float = 0,
    **fields: Any,
) -> Message:
    """A message created ``seconds`` after ``at`` (default :data:`BASE_TIME`)."""
    fields.setdefault("payload", {"text": f"{from_agent}->{to_agent}"})
    fields.setdefault("priority", Priority.NORMAL)
    return Message(
        from_agent, to_agent, message_type, timestamp=(at or BASE_TIME) + timedelta(seconds=seconds), **fields
    )
