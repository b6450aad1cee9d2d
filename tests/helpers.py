"""Small builders shared by the test modules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import make_url

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


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    """The DSN asyncpg takes for a ``postgresql+asyncpg`` URL (no query parameters; another ``database`` if given),
    for a test's own connection beside the store's."""
    parsed = make_url(url).set(drivername="postgresql", query={})
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)
