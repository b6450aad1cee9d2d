"""Reading a message's lifecycle back: its append-only events in order, with the time spent in each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_plugin.integrity_schema import events
from audit_plugin.messages import MessageStatus

e = events.c


@dataclass(frozen=True, slots=True)
class LifecycleStep:
    """One lifecycle event of a message.

    ``kind`` is ``"record"`` for the first (the message was recorded; ``at``
    is its creation time), ``"status"`` for each later change or retry
    (``at`` is when it was reported) and ``"late"`` for an update reported
    after the status was final (kept, not applied: a redelivery's second
    outcome, a producer's report that arrived after the consumer's).
    ``operation_id`` is the identity the update carried, if any. ``seconds``
    is the time until the next step, ``None`` for the last one.
    """

    sequence: int
    kind: str
    status: MessageStatus
    at: datetime
    retry_count: int | None
    error: str | None
    delivered_at: datetime | None
    seconds: float | None
    operation_id: str | None = None


async def message_history(engine: AsyncEngine, message_id: str) -> list[LifecycleStep]:
    stmt = (
        select(e.sequence, e.kind, e.status, e.at, e.retry_count, e.error, e.delivered_at, e.operation_id)
        .where(e.message_id == message_id, e.kind != "retention")
        .order_by(e.sequence)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    steps = []
    for index, row in enumerate(rows):
        following = rows[index + 1].at if index + 1 < len(rows) else None
        steps.append(
            LifecycleStep(
                sequence=row.sequence,
                kind=row.kind,
                status=MessageStatus(row.status),
                at=row.at,
                retry_count=row.retry_count,
                error=row.error,
                delivered_at=row.delivered_at,
                seconds=(following - row.at).total_seconds() if following is not None else None,
                operation_id=row.operation_id,
            )
        )
    return steps
