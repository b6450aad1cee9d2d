"""An agent's numbers over a period, computed from its recent messages (sent and received)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from audit_plugin.model.messages import MessageStatus
from audit_plugin.model.records import AuditRecord

PERCENTILES = (50, 90, 99)
TOP_PEERS = 8


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    sent: int
    received: int


@dataclass(slots=True)
class Direction:
    """The messages an agent sent, or those it received."""

    total: int = 0
    failed: int = 0
    expired: int = 0
    latencies: list[float] = field(default_factory=list)
    peers: Counter[str] = field(default_factory=Counter)

    def add(self, record: AuditRecord, peer: str) -> None:
        self.total += 1
        self.failed += record.status is MessageStatus.FAILED
        self.expired += record.status is MessageStatus.EXPIRED
        if record.delivery_seconds is not None:
            self.latencies.append(record.delivery_seconds)
        self.peers[peer] += 1

    @property
    def error_rate(self) -> float | None:
        """Percent of messages that FAILED."""
        return 100.0 * self.failed / self.total if self.total else None

    def percentiles(self) -> dict[int, float | None]:
        """Nearest-rank delivery-time percentiles, as ``trail.get_delivery_percentiles`` defines them."""
        ordered = sorted(self.latencies)
        if not ordered:
            return dict.fromkeys(PERCENTILES)
        return {p: ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] for p in PERCENTILES}

    def top_peers(self) -> list[tuple[str, int]]:
        return self.peers.most_common(TOP_PEERS)


@dataclass(slots=True)
class AgentNumbers:
    name: str
    since: datetime
    sample: int
    """How many messages the numbers are computed from."""
    capped: bool
    """True when the period held more messages than were read: the numbers cover the newest ``sample``."""
    sent: Direction
    received: Direction
    buckets: list[Bucket]
    bucket_label: str


def bucket_width(days: int) -> tuple[timedelta, str]:
    return (timedelta(hours=1), "hour") if days <= 2 else (timedelta(days=1), "day")


def floor_time(moment: datetime, width: timedelta) -> datetime:
    """The start of the UTC hour or day holding ``moment``, so buckets are calendar hours and days."""
    start = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start.replace(hour=0) if width >= timedelta(days=1) else start


def agent_numbers(
    name: str, records: Sequence[AuditRecord], *, days: int, cap: int, now: datetime | None = None
) -> AgentNumbers:
    """Tally ``records`` (the agent's messages, newest first, at most ``cap``) into its numbers."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=days)
    width, label = bucket_width(days)
    origin = floor_time(since, width)
    sent, received = Direction(), Direction()
    counts: dict[int, list[int]] = {}
    for record in records:
        index = (record.timestamp - origin) // width
        slot = counts.setdefault(index, [0, 0])
        if record.from_agent == name:
            sent.add(record, record.to_agent)
            slot[0] += 1
        if record.to_agent == name:
            received.add(record, record.from_agent)
            slot[1] += 1
    first = min(counts, default=0) if len(records) >= cap else 0
    last = int((now - since) / width)
    buckets = [Bucket(since + index * width, *counts.get(index, [0, 0])) for index in range(max(first, 0), last + 1)]
    return AgentNumbers(name, since, len(records), len(records) >= cap, sent, received, buckets, label)
