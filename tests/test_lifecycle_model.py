"""Random interleavings of records, outcomes, status updates and retries, with duplicates, against a simple model.

Each example queues its operations in segments; every segment is one write
batch (nothing waits between the operations of a segment, and the test
waits for the segment's commit before queueing the next). The model applies
the documented rules batch by batch: a batch's first copy of the record is
stored if none is; its updates then apply in order, each operation id once
per message, none to a message not stored, and none after a final status
(those are kept as ``"late"`` steps).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import audit_plugin_postgres.backend as postgres_backend
from audit_plugin import MessageAuditTrail, MessageStatus
from audit_plugin.model.records import StatusUpdate
from tests.helpers import make_message

OPERATION_IDS = st.sampled_from([None, "op-a", "op-b", "op-c"])
STATUSES = st.sampled_from(list(MessageStatus))

Step = tuple[Any, ...]
steps = st.one_of(
    st.tuples(st.just("record")),
    st.tuples(st.just("outcome"), STATUSES, OPERATION_IDS, st.sampled_from([None, "handler error"])),
    st.tuples(st.just("status"), STATUSES, OPERATION_IDS, st.sampled_from([None, "boom"])),
    st.tuples(st.just("retry"), st.integers(1, 3), OPERATION_IDS),
)
segments = st.lists(st.lists(steps, min_size=1, max_size=6), min_size=1, max_size=5)


@pytest.fixture(autouse=True, params=["one-statement", "copy"])
def postgres_write_path(request: pytest.FixtureRequest, backend_name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """PostgreSQL writes small batches in one statement and large ones with COPY: test both on every batch."""
    if request.param == "copy":
        if backend_name != "postgres":
            pytest.skip("PostgreSQL has two write paths; SQLite one")
        monkeypatch.setattr(postgres_backend, "ONE_STATEMENT_MAX", 0)
    return request.param


def update_of(step: Step, message_id: str) -> StatusUpdate | None:
    if step[0] in ("outcome", "status"):
        return StatusUpdate.build(message_id, step[1], error_message=step[3], operation_id=step[2])
    if step[0] == "retry":
        return StatusUpdate.retry(message_id, step[1], f"attempt {step[1]} failed", operation_id=step[2])
    return None


@dataclass
class Model:
    """One message as the rules say the store holds it."""

    stored_by: str | None = None
    status: MessageStatus = MessageStatus.PENDING
    retry_count: int = 0
    error: str | None = None
    operations: set[str] = field(default_factory=set)
    history: list[tuple[str, MessageStatus, int | None, str | None, str | None]] = field(default_factory=list)

    def batch(self, segment: list[Step], updates: list[StatusUpdate | None]) -> list[bool]:
        """Apply one batch; return what each update's caller learns (the record exists)."""
        copies = [step[0] for step in segment if step[0] in ("record", "outcome")]
        if copies and self.stored_by is None:
            self.stored_by = "producer" if copies[0] == "record" else "consumer"
            self.history.append(("record", MessageStatus.PENDING, 0, None, None))
        seen: set[str] = set()
        for update in updates:
            if update is None:
                continue
            if update.operation_id is not None:
                if update.operation_id in seen or update.operation_id in self.operations:
                    continue
                seen.add(update.operation_id)
            if self.stored_by is None:
                continue
            if update.operation_id is not None:
                self.operations.add(update.operation_id)
            entry = (update.status, update.retry_count, update.error_message, update.operation_id)
            if self.status.is_final:
                self.history.append(("late", *entry))
                continue
            self.history.append(("status", *entry))
            self.status = update.status
            self.retry_count = update.retry_count if update.retry_count is not None else self.retry_count
            self.error = update.error_message if update.error_message is not None else self.error
        return [self.stored_by is not None for update in updates if update is not None]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=segments)
async def test_random_interleavings_match_the_model(trail: MessageAuditTrail, plan: list[list[Step]]) -> None:
    message_id = str(uuid.uuid4())
    producer = make_message("producer", "worker", message_id=message_id)
    consumer = make_message("consumer", "worker", message_id=message_id)
    model = Model()
    for segment in plan:
        updates = [update_of(step, message_id) for step in segment]
        futures: list[asyncio.Future[Any]] = []
        told: list[asyncio.Future[Any]] = []
        for step, update in zip(segment, updates, strict=True):
            if step[0] == "record":
                future = trail.enqueue_message_nowait(producer)
            elif step[0] == "outcome":
                assert update is not None
                future = await trail.enqueue_outcome(
                    consumer, update.status, error_message=update.error_message, operation_id=update.operation_id
                )
            else:
                assert update is not None
                future = trail.enqueue_status_nowait(update)
            assert future is not None
            futures.append(future)
            if update is not None:
                told.append(future)
        await trail.flush()
        results = [bool(future.result()) for future in told]
        assert all(future.done() for future in futures)
        assert results == model.batch(segment, updates), segment

    record = await trail.get_message(message_id)
    if model.stored_by is None:
        assert record is None
    else:
        assert record is not None
        assert (record.from_agent, record.status, record.retry_count, record.error_message) == (
            model.stored_by,
            model.status,
            model.retry_count,
            model.error,
        )
    history = await trail.get_message_history(message_id)
    assert [(s.kind, s.status, s.retry_count, s.error, s.operation_id) for s in history] == model.history
    report = await trail.verify()
    assert report.ok, str(report)
