"""A scripted multi-agent conversation through the audited reference bus.

Used by ``audit-plugin demo``, the tests and the examples. One run shows every
lifecycle the audit trail records:

* a planner asks two workers (QUERY) and both reply (RESPONSE, ``reply_to``
  the question, same ``correlation_id``);
* worker-b's handler fails on its first attempt and succeeds on the retry;
* an old question that sat in a queue past its ``ttl_seconds`` EXPIRES
  without its handler being called (it has no ``reply_to``: the thread shows
  it in chronological order);
* acting on worker-b's answer, the planner tells the reporter to publish; the
  reporter's handler keeps raising, so that COMMAND FAILS for good after the
  bus's retries.

Every run uses a new correlation id, so running it again on the same database
adds a second conversation next to the first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from audit_plugin.hooks.bus import MessageBus
from audit_plugin.hooks.plugin import AuditPlugin
from audit_plugin.model.messages import DeliveryReceipt, Message, MessageStatus, MessageType, Priority
from audit_plugin.trail import MessageAuditTrail

PLANNER, WORKER_A, WORKER_B, REPORTER = "planner", "worker-a", "worker-b", "reporter"
MAX_RETRIES = 2
RETRY_DELAY = 0.01
"""Seconds before the first retry (doubling), so retried deliveries show a real latency."""


@dataclass(slots=True)
class DemoRun:
    """What one run of the scenario sent, for printing and for tests."""

    correlation_id: str
    receipts: dict[str, DeliveryReceipt] = field(default_factory=dict)
    """Final receipt per message id, in sending order."""

    def count(self, status: MessageStatus) -> int:
        return sum(1 for receipt in self.receipts.values() if receipt.status is status)


class _Scenario:
    """The agents of the demo: their handlers send the replies through the same bus."""

    def __init__(self, bus: MessageBus, run: DemoRun) -> None:
        self.bus = bus
        self.run = run
        self._worker_b_attempts = 0
        self.answers: dict[str, Message] = {}

    async def send(self, message: Message) -> Message:
        self.run.receipts[message.message_id] = await self.bus.send(message)
        return message

    def message(self, sender: str, receiver: str, kind: MessageType, payload: dict, **extra: object) -> Message:
        return Message(sender, receiver, kind, payload, correlation_id=self.run.correlation_id, **extra)  # type: ignore[arg-type]

    async def planner(self, message: Message) -> None:
        if message.message_type is MessageType.RESPONSE:
            self.answers[message.from_agent] = message

    async def worker_a(self, message: Message) -> None:
        await self.reply(message, {"forecast": "sunny", "confidence": 0.92})

    async def worker_b(self, message: Message) -> None:
        self._worker_b_attempts += 1
        if self._worker_b_attempts == 1:
            raise ConnectionError("inventory service timed out")
        await self.reply(message, {"in_stock": 42, "warehouse": "north"})

    async def reporter(self, message: Message) -> None:
        raise PermissionError("report store is read-only")

    async def reply(self, question: Message, answer: dict) -> None:
        await self.send(
            self.message(
                question.to_agent, question.from_agent, MessageType.RESPONSE, answer, reply_to=question.message_id
            )
        )


async def run_demo(trail: MessageAuditTrail) -> DemoRun:
    """Run the scenario on a fresh bus audited into ``trail`` (initialised); return what was sent.

    Every record is committed when this returns (the plugin runs in
    ``"commit"`` durability mode).
    """
    run = DemoRun(correlation_id=f"demo-{uuid.uuid4().hex[:12]}")
    bus = MessageBus(max_retries=MAX_RETRIES, retry_delay=RETRY_DELAY)
    bus.register(AuditPlugin(trail))
    scenario = _Scenario(bus, run)
    for agent, handler in (
        (PLANNER, scenario.planner),
        (WORKER_A, scenario.worker_a),
        (WORKER_B, scenario.worker_b),
        (REPORTER, scenario.reporter),
    ):
        bus.subscribe(agent, handler)

    # Queued 30 s ago with a 5 s time to live: it expires undelivered, its handler never runs.
    await scenario.send(
        scenario.message(
            PLANNER,
            WORKER_A,
            MessageType.QUERY,
            {"ask": "is yesterday's forecast still valid?"},
            timestamp=datetime.now(UTC) - timedelta(seconds=30),
            ttl_seconds=5,
        )
    )
    await scenario.send(scenario.message(PLANNER, WORKER_A, MessageType.QUERY, {"ask": "weather forecast for Friday"}))
    await scenario.send(
        scenario.message(
            PLANNER, WORKER_B, MessageType.QUERY, {"ask": "units of SKU-7 in stock"}, priority=Priority.HIGH
        )
    )
    # Acting on worker-b's answer: the reporter keeps failing, so this one FAILS after every retry.
    await scenario.send(
        scenario.message(
            PLANNER,
            REPORTER,
            MessageType.COMMAND,
            {"publish": "daily plan", "based_on": "inventory"},
            priority=Priority.URGENT,
            reply_to=scenario.answers[WORKER_B].message_id,
        )
    )
    await trail.flush()
    return run
