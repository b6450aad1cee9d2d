"""PostgreSQL statistics rollups: over any range they equal a scan of the records, whatever wrote or removed them."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
import uuid_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from audit_plugin import MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.model.records import StatusUpdate
from audit_plugin.storage.schema import TABLE_NAME
from audit_plugin.storage.sql import SQLBackend
from audit_plugin_postgres import PostgresBackend, partitions, rollups
from tests.helpers import BASE_TIME, make_message

pytestmark = [
    pytest.mark.skipif(not os.environ.get("AUDIT_TEST_POSTGRES_URL"), reason="AUDIT_TEST_POSTGRES_URL is not set"),
    pytest.mark.parametrize("backend_name", ["postgres"]),
]

HOUR = timedelta(hours=1)
START = BASE_TIME - 2 * HOUR
HOURS = 6
AGENTS = [f"agent-{n}" for n in range(5)]

moments = st.one_of(
    st.none(),
    st.builds(lambda hours: START + hours * HOUR, st.integers(min_value=-1, max_value=HOURS + 1)),
    st.builds(
        lambda micros: START + timedelta(microseconds=micros),
        st.integers(min_value=-(10**9), max_value=HOURS * 3_600_000_000 + 10**9),
    ),
    st.builds(lambda hours: START + hours * HOUR - timedelta(microseconds=1), st.integers(0, HOURS)),
)
windows = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def random_moment(rng: random.Random) -> datetime:
    """Mostly anywhere in the hours; sometimes on an hour's first or last microsecond."""
    hour = START + rng.randrange(HOURS) * HOUR
    edge = rng.random()
    if edge < 0.1:
        return hour
    if edge < 0.2:
        return hour + HOUR - timedelta(microseconds=1)
    return hour + timedelta(microseconds=rng.randrange(3_600_000_000))


async def assert_rollups_equal_the_scan(trail: MessageAuditTrail, start: datetime | None, end: datetime | None) -> None:
    backend = trail.backend
    scanned = await SQLBackend.statistics(backend, start, end)  # type: ignore[arg-type]
    assert await trail.get_statistics(start, end) == scanned


@pytest_asyncio.fixture
async def written(database_url: str) -> AsyncIterator[MessageAuditTrail]:
    """Records over six hours written every way the store is written: one at a time, in bulk, updated, deleted."""
    rng = random.Random(13)
    async with MessageAuditTrail(database_url) as trail:
        messages = [
            make_message(
                rng.choice(AGENTS),
                rng.choice(AGENTS),
                rng.choice(list(MessageType)),
                at=random_moment(rng),
                correlation_id=f"conv-{n % 7}",
            )
            for n in range(400)
        ]
        for message in messages[:100]:  # small batches: one statement inserting and updating
            await trail.log_message(message)
        for message in messages[100:]:  # large batches: COPY, outcomes folded into the rows
            await trail.enqueue_message(message)
        for message in messages[::2]:
            status = rng.choice([MessageStatus.DELIVERED, MessageStatus.DELIVERED, MessageStatus.FAILED])
            delivered_at = message.timestamp + timedelta(microseconds=rng.randrange(5_000_000))
            update = StatusUpdate(
                message.message_id, status, delivered_at if status is MessageStatus.DELIVERED else None
            )
            await trail.enqueue_status(update)
        await trail.flush()
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(text(f"UPDATE {TABLE_NAME} SET status = 'EXPIRED' WHERE correlation_id = 'conv-3'"))
            await conn.execute(text(f"DELETE FROM {TABLE_NAME} WHERE correlation_id = 'conv-5'"))
        yield trail


@given(start=moments, end=moments)
@windows
async def test_statistics_over_any_window_equal_the_scan(
    written: MessageAuditTrail, start: datetime | None, end: datetime | None
) -> None:
    await assert_rollups_equal_the_scan(written, start, end)


async def test_the_whole_range_counts_every_record(written: MessageAuditTrail) -> None:
    statistics = await written.get_statistics()
    assert statistics.total_messages == await written.count_messages()
    assert statistics.messages_by_status.get("EXPIRED")
    assert statistics.avg_delivery_time > 0


async def test_retention_keeps_the_rollups_exact(written: MessageAuditTrail) -> None:
    await written.backend.delete_older_than(START + 2 * HOUR + timedelta(minutes=17))
    for start, end in [(None, None), (START, None), (None, START + 3 * HOUR), (START + HOUR, START + 4 * HOUR)]:
        await assert_rollups_equal_the_scan(written, start, end)


async def test_initialize_builds_the_rollups_of_an_existing_store_once(written: MessageAuditTrail) -> None:
    async with written.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(text(f"DROP TABLE {rollups.ROLLUP_TABLE}"))
    for _ in range(2):
        async with MessageAuditTrail(written.backend.url) as again:  # type: ignore[attr-defined]
            await assert_rollups_equal_the_scan(again, None, None)
            await assert_rollups_equal_the_scan(again, START + timedelta(minutes=30), START + 4 * HOUR)


@pytest.mark.parametrize("cut_hour", [2, 3])
@pytest.mark.parametrize("minutes", [0, 20])
async def test_retention_dropping_partitions_keeps_the_rollups_exact(
    database_url: str, cut_hour: int, minutes: int
) -> None:
    """Hourly partitions dropped by retention fire no trigger: the backend forgets their hours in the same run."""
    async with MessageAuditTrail(database_url + "?partitioning=hour") as trail:
        backend = trail.backend
        assert isinstance(backend, PostgresBackend) and backend.partitioned
        starts = [START + hour * HOUR for hour in range(HOURS)]
        async with backend.engine.begin() as conn:
            await partitions.create_intervals(conn, backend.layout, starts)  # type: ignore[arg-type]
        rng = random.Random(cut_hour * 100 + minutes)
        messages = []
        for n in range(300):
            at = random_moment(rng)
            nanos = int(at.timestamp() * 1_000_000_000) + n
            made_then = str(uuid_utils.uuid7(nanoseconds=nanos))  # an id of its time: its hour's partition
            messages.append(make_message(rng.choice(AGENTS), rng.choice(AGENTS), at=at, message_id=made_then))
        for message in messages:
            await trail.enqueue_message(message)
        for message in messages[::3]:
            delivered_at = message.timestamp + timedelta(microseconds=rng.randrange(5_000_000))
            await trail.enqueue_status(StatusUpdate(message.message_id, MessageStatus.DELIVERED, delivered_at))
        await trail.flush()
        await assert_rollups_equal_the_scan(trail, None, None)
        cut = START + cut_hour * HOUR + timedelta(minutes=minutes)
        before = await trail.count_messages()
        deleted = await backend.delete_older_than(cut)
        assert deleted == sum(1 for m in messages if m.timestamp < cut) > 0
        assert await trail.count_messages() == before - deleted
        for start, end in [(None, None), (START, START + 5 * HOUR), (cut, None), (cut - HOUR, cut + HOUR)]:
            await assert_rollups_equal_the_scan(trail, start, end)
        assert (await trail.verify()).ok


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)),
        (None, datetime.max.replace(tzinfo=UTC)),
        (datetime.max.replace(tzinfo=UTC), None),
        (START + 3 * HOUR, START + HOUR),
    ],
)
async def test_ranges_at_the_ends_of_time_or_reversed_equal_the_scan(
    written: MessageAuditTrail, start: datetime | None, end: datetime | None
) -> None:
    await assert_rollups_equal_the_scan(written, start, end)
