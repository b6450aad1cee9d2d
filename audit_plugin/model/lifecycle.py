"""A message's lifecycle as read back: its append-only events in order, with the time spent in each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from audit_plugin.model.messages import MessageStatus


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
