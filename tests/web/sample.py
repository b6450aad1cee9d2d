"""A small known trail for the web tests: one ordinary conversation, one made of hostile text, noise."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from audit_plugin import Message, MessageAuditTrail, MessageStatus, MessageType

HOSTILE_AGENT = "<img src=x onerror=alert('agent')>"
HOSTILE_PAYLOAD = "<script>alert('payload')</script>"
HOSTILE_ERROR = '"><svg onload=alert(\'error\')><script>alert("error")</script>'
HOSTILE_CONVERSATION = "conv-<script>alert('cid')</script>;%%{init}%%"


@dataclass
class Sample:
    conversation: str = "conv-web"
    conversation_ids: list[str] = field(default_factory=list)
    """Message ids of ``conversation``, oldest first."""
    traced: dict[str, str] = field(default_factory=dict)
    """message id -> trace id."""
    hostile_ids: list[str] = field(default_factory=list)
    noise: int = 0


def trace_of(n: int) -> tuple[str, str]:
    return f"{n:032x}", f"{n:016x}"


async def seed(trail: MessageAuditTrail, *, noise: int = 30) -> Sample:
    """Write the sample through the trail's public API and wait until it is committed."""
    sample = Sample()
    start = datetime.now(UTC) - timedelta(minutes=5)
    steps = [
        ("planner", "worker", MessageType.QUERY, None, MessageStatus.DELIVERED, None, 0),
        ("worker", "planner", MessageType.RESPONSE, 0, MessageStatus.DELIVERED, None, 0),
        ("planner", "inventory", MessageType.QUERY, None, MessageStatus.DELIVERED, "timeout once", 1),
        ("inventory", "planner", MessageType.RESPONSE, 2, MessageStatus.DELIVERED, None, 0),
        ("planner", "reporter", MessageType.COMMAND, 3, MessageStatus.FAILED, "report store is read-only", 2),
    ]
    for index, (sender, receiver, kind, reply_index, status, error, retries) in enumerate(steps):
        at = start + timedelta(seconds=index)
        message = Message(
            sender,
            receiver,
            kind,
            {"step": index, "note": f"{sender} to {receiver}"},
            correlation_id=sample.conversation,
            reply_to=sample.conversation_ids[reply_index] if reply_index is not None else None,
            timestamp=at,
        )
        trace_id, span_id = trace_of(index + 1)
        await trail.log_message(message, trace_id=trace_id, span_id=span_id)
        delivered = at + timedelta(milliseconds=5 * (index + 1)) if status is MessageStatus.DELIVERED else None
        await trail.update_message_status(message.message_id, status, delivered, error, retries)
        sample.conversation_ids.append(message.message_id)
        sample.traced[message.message_id] = trace_id
    where = {"correlation_id": HOSTILE_CONVERSATION, "timestamp": start + timedelta(seconds=10)}
    hostile = [
        Message(HOSTILE_AGENT, "worker", MessageType.COMMAND, {"html": HOSTILE_PAYLOAD}, **where),
        Message("worker", HOSTILE_AGENT, MessageType.RESPONSE, {"x": HOSTILE_ERROR}, **where),
    ]
    for message in hostile:
        await trail.log_message(message)
        sample.hostile_ids.append(message.message_id)
    await trail.update_message_status(hostile[0].message_id, MessageStatus.FAILED, error_message=HOSTILE_ERROR)
    for n in range(noise):
        message = Message(
            f"agent-{n % 4}", f"agent-{(n + 1) % 4}", MessageType.EVENT, {"n": n}, timestamp=start - timedelta(hours=n)
        )
        await trail.log_message(message)
    sample.noise = noise
    await trail.flush()
    return sample
