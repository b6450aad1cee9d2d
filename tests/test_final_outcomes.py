"""Lifecycle rules real brokers need: a final status stays, an operation applies once, an early outcome is kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

import audit_plugin_postgres.backend as postgres_backend
from audit_plugin import Message, MessageAuditTrail, MessageStatus
from audit_plugin.exceptions import AuditError, InvalidFieldError
from audit_plugin.model.records import StatusUpdate
from audit_plugin.storage.integrity_schema import EVENTS_TABLE, operations_index
from tests.helpers import BASE_TIME, make_message

DELIVERED, EXPIRED, FAILED, PENDING, SENT = (
    MessageStatus.DELIVERED,
    MessageStatus.EXPIRED,
    MessageStatus.FAILED,
    MessageStatus.PENDING,
    MessageStatus.SENT,
)


@pytest.fixture(autouse=True, params=["one-statement", "copy"])
def postgres_write_path(request: pytest.FixtureRequest, backend_name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """PostgreSQL writes small batches in one statement and large ones with COPY: test both on every batch."""
    if request.param == "copy":
        if backend_name != "postgres":
            pytest.skip("PostgreSQL has two write paths; SQLite one")
        monkeypatch.setattr(postgres_backend, "ONE_STATEMENT_MAX", 0)
    return request.param


async def steps(trail: MessageAuditTrail, message_id: str) -> list[tuple[str, MessageStatus, str | None]]:
    """The lifecycle as (kind, status, operation_id)."""
    return [(step.kind, step.status, step.operation_id) for step in await trail.get_message_history(message_id)]


async def assert_verified(trail: MessageAuditTrail) -> None:
    report = await trail.verify()
    assert report.ok, str(report)


@pytest_asyncio.fixture
async def second_trail(database_url: str, trail: MessageAuditTrail) -> AsyncIterator[MessageAuditTrail]:
    """Another trail on the same database with its own writer: another process's worth."""
    other = MessageAuditTrail(database_url)
    await other.initialize()
    try:
        yield other
    finally:
        await other.close()


# -- final statuses are final ----------------------------------------------------------


async def test_a_late_non_final_update_is_kept_in_the_lifecycle_but_not_applied(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    delivered_at = BASE_TIME + timedelta(seconds=1)
    assert await trail.update_message_status(message.message_id, DELIVERED, delivered_at=delivered_at)
    assert await trail.update_message_status(message.message_id, SENT, error_message="reordered", retry_count=4)
    assert await trail.record_retry(message.message_id, 1, "redelivered after the ack")

    record = await trail.get_message(message.message_id)
    assert record is not None
    assert (record.status, record.delivered_at, record.error_message, record.retry_count) == (
        DELIVERED,
        delivered_at,
        None,
        0,
    )
    assert await steps(trail, message.message_id) == [
        ("record", PENDING, None),
        ("status", DELIVERED, None),
        ("late", SENT, None),
        ("late", PENDING, None),
    ]
    await assert_verified(trail)


async def test_a_different_final_outcome_after_a_final_one_keeps_the_first(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    await trail.update_message_status(message.message_id, DELIVERED, operation_id="ack-1")
    assert await trail.update_message_status(message.message_id, FAILED, error_message="boom", operation_id="nack-2")

    record = await trail.get_message(message.message_id)
    assert record is not None and (record.status, record.error_message) == (DELIVERED, None)
    history = await trail.get_message_history(message.message_id)
    assert [(step.kind, step.status, step.error, step.operation_id) for step in history[1:]] == [
        ("status", DELIVERED, None, "ack-1"),
        ("late", FAILED, "boom", "nack-2"),
    ]
    await assert_verified(trail)


async def test_several_outcomes_in_one_batch_apply_up_to_the_first_final_one(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    futures = [
        await trail.enqueue_status(StatusUpdate.build(message.message_id, status, error_message=error))
        for status, error in ((SENT, None), (FAILED, "first"), (DELIVERED, None), (SENT, "late"))
    ]
    assert await asyncio.gather(*futures) == [True] * 4
    record = await trail.get_message(message.message_id)
    assert record is not None and (record.status, record.error_message) == (FAILED, "first")
    kinds = [kind for kind, _, _ in await steps(trail, message.message_id)]
    assert kinds == ["record", "status", "status", "late", "late"]
    await assert_verified(trail)


# -- an operation applies once ------------------------------------------------------


async def test_a_redelivered_outcome_is_applied_once(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    for _ in range(3):
        assert await trail.update_message_status(message.message_id, DELIVERED, operation_id="ack")
    assert await steps(trail, message.message_id) == [("record", PENDING, None), ("status", DELIVERED, "ack")]
    assert (await trail.verify()).entries == 2


async def test_duplicates_in_one_batch_are_applied_once(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    updates = [StatusUpdate.retry(message.message_id, 1, "timeout", operation_id="retry-1") for _ in range(3)]
    updates += [StatusUpdate.build(message.message_id, DELIVERED, operation_id="ack") for _ in range(3)]
    futures = [await trail.enqueue_status(update) for update in updates]
    assert await asyncio.gather(*futures) == [True] * 6
    assert await steps(trail, message.message_id) == [
        ("record", PENDING, None),
        ("status", PENDING, "retry-1"),
        ("status", DELIVERED, "ack"),
    ]
    await assert_verified(trail)


async def test_retries_are_deduplicated_by_operation_and_real_ones_all_appear(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    for attempt in (1, 1, 2, 2, 3):
        assert await trail.record_retry(message.message_id, attempt, f"nack {attempt}", operation_id=f"nack-{attempt}")
    assert await trail.record_retry(message.message_id, 4, "no identity")
    assert await trail.record_retry(message.message_id, 4, "no identity")  # without an id, every report counts
    history = await trail.get_message_history(message.message_id)
    assert [(step.retry_count, step.error) for step in history[1:]] == [
        (1, "nack 1"),
        (2, "nack 2"),
        (3, "nack 3"),
        (4, "no identity"),
        (4, "no identity"),
    ]
    record = await trail.get_message(message.message_id)
    assert record is not None and (record.status, record.retry_count) == (PENDING, 4)
    assert await trail.record_retry("no-such-message", 1, "lost") is False
    await assert_verified(trail)


async def test_an_operation_on_an_unknown_message_is_not_remembered(trail: MessageAuditTrail) -> None:
    """Reported before the record existed, it was not applied; reported again after, it applies."""
    message = make_message()
    assert await trail.update_message_status(message.message_id, DELIVERED, operation_id="ack") is False
    await trail.log_message(message)
    assert await trail.update_message_status(message.message_id, DELIVERED, operation_id="ack")
    assert await steps(trail, message.message_id) == [("record", PENDING, None), ("status", DELIVERED, "ack")]


# -- the outcome may come before the record ------------------------------------------


async def test_an_outcome_without_any_producer_record_is_stored_with_its_message(trail: MessageAuditTrail) -> None:
    message = make_message("unknown", "billing", payload={"order": 7})
    await trail.record_outcome(message, FAILED, error_message="ValueError: bad order", operation_id="d-1")
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert (record.from_agent, record.payload, record.status, record.error_message) == (
        "unknown",
        {"order": 7},
        FAILED,
        "ValueError: bad order",
    )
    assert await steps(trail, message.message_id) == [("record", PENDING, None), ("status", FAILED, "d-1")]
    await assert_verified(trail)


async def test_the_producer_record_after_the_outcome_changes_nothing(trail: MessageAuditTrail) -> None:
    produced = make_message("producer", "billing")
    consumed = make_message("consumer", "billing", message_id=produced.message_id)
    await trail.record_outcome(consumed, DELIVERED, delivered_at=BASE_TIME, operation_id="ack")
    await trail.log_message(produced)
    record = await trail.get_message(produced.message_id)
    assert record is not None and (record.from_agent, record.status) == ("consumer", DELIVERED)
    assert await steps(trail, produced.message_id) == [("record", PENDING, None), ("status", DELIVERED, "ack")]
    await assert_verified(trail)


async def test_an_outcome_after_the_producer_record_keeps_the_producer_record(trail: MessageAuditTrail) -> None:
    produced = make_message("producer", "billing")
    await trail.log_message(produced, trace_id="a" * 32, span_id="b" * 16)
    consumed = make_message("consumer", "billing", message_id=produced.message_id)
    await trail.record_outcome(consumed, DELIVERED, operation_id="ack", trace_id="c" * 32, span_id="d" * 16)
    await trail.record_outcome(consumed, DELIVERED, operation_id="ack")  # redelivered
    record = await trail.get_message(produced.message_id)
    assert record is not None and (record.from_agent, record.trace_id, record.status) == (
        "producer",
        "a" * 32,
        DELIVERED,
    )
    assert await steps(trail, produced.message_id) == [("record", PENDING, None), ("status", DELIVERED, "ack")]
    await assert_verified(trail)


@pytest.mark.parametrize("outcome_first", [True, False])
async def test_record_and_outcome_in_one_batch(trail: MessageAuditTrail, outcome_first: bool) -> None:
    produced = [make_message("producer", "billing", seconds=n) for n in range(20)]
    consumed = [make_message("consumer", "billing", message_id=m.message_id) for m in produced]
    futures = []
    for producer_copy, consumer_copy in zip(produced, consumed, strict=True):
        outcome = trail.enqueue_outcome(consumer_copy, DELIVERED, operation_id="ack")
        record = trail.enqueue_message(producer_copy)
        pair = (outcome, record) if outcome_first else (record, outcome)
        futures += [await pair[0], await pair[1]]
    await asyncio.gather(*futures)
    for message in produced:
        record = await trail.get_message(message.message_id)
        assert record is not None and record.status is DELIVERED
        assert record.from_agent == ("consumer" if outcome_first else "producer")  # the first copy queued wins
        assert await steps(trail, message.message_id) == [("record", PENDING, None), ("status", DELIVERED, "ack")]
    assert await trail.count_messages() == 20
    await assert_verified(trail)


async def test_two_trails_on_one_database_outcome_first(
    trail: MessageAuditTrail, second_trail: MessageAuditTrail
) -> None:
    """The consumer's process commits its outcome before the producer's process commits its record."""
    produced = [make_message("producer", "billing", seconds=n) for n in range(30)]
    for message in produced:
        copy = make_message("consumer", "billing", message_id=message.message_id)
        await second_trail.record_outcome(copy, DELIVERED, operation_id="ack")
    await asyncio.gather(*(trail.log_message(message) for message in produced))
    await second_trail.record_retry(produced[0].message_id, 1, "late nack", operation_id="nack-1")
    for message in produced:
        record = await trail.get_message(message.message_id)
        assert record is not None and record.status is DELIVERED
    assert await steps(trail, produced[0].message_id) == [
        ("record", PENDING, None),
        ("status", DELIVERED, "ack"),
        ("late", PENDING, "nack-1"),
    ]
    await assert_verified(trail)
    await assert_verified(second_trail)


async def test_concurrent_duplicate_outcomes_from_two_trails_apply_once(
    trail: MessageAuditTrail, second_trail: MessageAuditTrail
) -> None:
    messages = [make_message(seconds=n) for n in range(25)]

    async def report(on: MessageAuditTrail, message: Message) -> None:
        await on.record_outcome(message, DELIVERED, operation_id="ack")

    await asyncio.gather(*(report(on, m) for m in messages for on in (trail, second_trail, trail, second_trail)))
    for message in messages:
        assert await steps(trail, message.message_id) == [("record", PENDING, None), ("status", DELIVERED, "ack")]
    report_ = await trail.verify()
    assert report_.ok and report_.entries == 50


# -- input ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", 7, "x" * 1025, "nul\x00"])
async def test_a_bad_operation_id_is_refused_naming_the_field(trail: MessageAuditTrail, bad: object) -> None:
    message = make_message()
    await trail.log_message(message)
    with pytest.raises(AuditError) as refused:
        await trail.update_message_status(message.message_id, DELIVERED, operation_id=bad)  # type: ignore[arg-type]
    assert isinstance(refused.value, ValueError | TypeError) and refused.value.field == "operation_id"  # type: ignore[attr-defined]
    with pytest.raises(AuditError):
        await trail.record_outcome(message, DELIVERED, operation_id=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidFieldError) as caught:
        await trail.record_retry(message.message_id, 0, "attempt counts from 1")
    assert caught.value.field == "attempt"
    assert await steps(trail, message.message_id) == [("record", PENDING, None)]


# -- databases made before operation ids ---------------------------------------------


async def test_initialize_upgrades_a_store_made_before_operation_ids(database_url: str) -> None:
    """A database whose lifecycle table has no ``operation_id`` (as made before it existed) gets it, and verifies."""
    first = make_message()
    # Made before operation ids, so before PostgreSQL's partitioned layout too (whose trigger reads the column).
    made_before = database_url + "?partitioning=none" if database_url.startswith("postgresql") else database_url
    async with MessageAuditTrail(made_before) as old:
        await old.log_message(first)
        await old.update_message_status(first.message_id, DELIVERED)
        await old.log_message(make_message(seconds=1))
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP INDEX {operations_index.name}"))
            await conn.execute(text(f"ALTER TABLE {EVENTS_TABLE} DROP COLUMN operation_id"))
        async with engine.connect() as conn:
            assert "operation_id" not in await conn.run_sync(_event_columns)

        async with MessageAuditTrail(database_url) as upgraded:
            await assert_verified(upgraded)  # the entries written before hash as they always did
            second = make_message(seconds=2)
            await upgraded.log_message(second)
            for _ in range(2):
                await upgraded.update_message_status(second.message_id, FAILED, operation_id="nack")
            await upgraded.update_message_status(first.message_id, FAILED, operation_id="late")
            assert await steps(upgraded, second.message_id) == [("record", PENDING, None), ("status", FAILED, "nack")]
            assert [kind for kind, _, _ in await steps(upgraded, first.message_id)] == ["record", "status", "late"]
            report = await upgraded.verify()
            assert report.ok and report.entries == 6
        async with MessageAuditTrail(database_url) as again:  # upgrading is idempotent
            assert (await again.verify()).entries == 6

        async with engine.connect() as conn:
            assert "operation_id" in await conn.run_sync(_event_columns)
            indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes(EVENTS_TABLE))
        [index] = [index for index in indexes if index["name"] == operations_index.name]
        assert index["unique"] and index["column_names"] == ["message_id", "operation_id"]
    finally:
        await engine.dispose()


def _event_columns(connection: Any) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns(EVENTS_TABLE)}


async def test_the_chain_covers_operation_ids(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.record_outcome(message, DELIVERED, operation_id="ack")
    await assert_verified(trail)
    async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(text(f"UPDATE {EVENTS_TABLE} SET operation_id = 'forged' WHERE operation_id = 'ack'"))
    report = await trail.verify()
    assert not report.ok and report.broken_sequence == 2
    assert report.reason == "content does not match its digest (lifecycle event altered)"


async def test_an_outcome_without_a_record_on_a_trail_without_hashes(database_url: str) -> None:
    async with MessageAuditTrail(database_url, hash_chain=False) as unhashed:
        message = make_message()
        await unhashed.record_outcome(message, EXPIRED, operation_id="ttl")
        await unhashed.record_outcome(message, EXPIRED, operation_id="ttl")
        assert await steps(unhashed, message.message_id) == [("record", PENDING, None), ("status", EXPIRED, "ttl")]
        assert (await unhashed.verify()).reason == "entry is not hashed (written with hash_chain=False)"
