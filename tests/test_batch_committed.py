"""The ``audit_batch_committed`` hook: every committed record and lifecycle entry, once, as stored."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import select

from audit_plugin import Message, MessageAuditTrail, MessageStatus, MessageType, hookimpl
from audit_plugin.storage.committed import CommittedBatch
from audit_plugin.storage.integrity_schema import events


class Collector:
    """Keeps every committed batch it is told of."""

    def __init__(self) -> None:
        self.batches: list[CommittedBatch] = []

    @hookimpl
    def audit_batch_committed(self, batch: CommittedBatch) -> None:
        self.batches.append(batch)

    def entries(self) -> list[Any]:
        return [entry for batch in self.batches for entry in batch.entries]

    def records(self) -> list[Any]:
        return [record for batch in self.batches for record in batch.records]


async def stored_entries(trail: MessageAuditTrail) -> list[tuple[Any, ...]]:
    e = events.c
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(select(e.sequence, e.kind, e.message_id, e.status, e.entry_hash).order_by(e.sequence))
        return [tuple(row) for row in rows]


async def test_records_and_entries_are_what_was_stored(trail: MessageAuditTrail) -> None:
    collector = Collector()
    trail.plugin_manager.register(collector)
    first = Message("planner", "worker", MessageType.QUERY, payload={"q": 1})
    second = Message("worker", "planner", MessageType.RESPONSE, payload={"a": 2}, reply_to=first.message_id)
    await trail.log_message(first)
    await trail.log_message(second)
    await trail.update_message_status(first.message_id, MessageStatus.DELIVERED)
    await trail.log_message(first)  # already stored: no new record, no new entry

    assert [record.message_id for record in collector.records()] == [first.message_id, second.message_id]
    assert collector.records()[1].payload == {"a": 2}
    seen = [(e.sequence, e.kind, e.message_id, e.status, e.entry_hash) for e in collector.entries()]
    assert seen == await stored_entries(trail)
    assert [e.kind for e in collector.entries()] == ["record", "record", "status"]
    assert sum(batch.operations for batch in collector.batches) == 4
    assert all(batch.trail is trail and batch.seconds >= 0 for batch in collector.batches)


async def test_a_late_report_is_an_entry_but_changes_no_record(trail: MessageAuditTrail) -> None:
    collector = Collector()
    trail.plugin_manager.register(collector)
    message = Message("a", "b", MessageType.EVENT)
    await trail.log_message(message)
    await trail.update_message_status(message.message_id, MessageStatus.DELIVERED)
    await trail.update_message_status(message.message_id, MessageStatus.FAILED, error_message="too late")
    assert [e.kind for e in collector.entries()] == ["record", "status", "late"]
    assert collector.entries()[-1].error == "too late"


async def test_outcome_before_its_record_gives_one_record(trail: MessageAuditTrail) -> None:
    collector = Collector()
    trail.plugin_manager.register(collector)
    message = Message("a", "b", MessageType.EVENT)
    await trail.record_outcome(message, MessageStatus.DELIVERED, operation_id="x:outcome")
    await trail.record_outcome(message, MessageStatus.DELIVERED, operation_id="x:outcome")  # redelivered: a no-op
    await trail.log_message(message)  # the producer's record, after the consumer's copy
    assert [record.message_id for record in collector.records()] == [message.message_id]
    assert [e.kind for e in collector.entries()] == ["record", "status"]


async def test_a_failing_implementation_does_not_stop_the_writer(
    trail: MessageAuditTrail, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @hookimpl
        def audit_batch_committed(self, batch: CommittedBatch) -> None:
            raise RuntimeError("exporter bug")

    trail.plugin_manager.register(Broken())
    with caplog.at_level(logging.ERROR):
        message = Message("a", "b", MessageType.EVENT)
        assert await trail.log_message(message) == message.message_id
    assert await trail.get_message(message.message_id) is not None
    assert "audit_batch_committed implementation failed" in caplog.text
    assert "exporter bug" in caplog.text
