"""PostgreSQL statistics rollups: over any range they equal a scan of the records, whatever wrote or removed them."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from audit_plugin import MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.records import StatusUpdate
from audit_plugin.schema import TABLE_NAME
from audit_plugin.sql import SQLBackend
from audit_plugin_postgres import rollups
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


@pytest.mark.parametrize("cut", [START + 2 * HOUR, START + 3 * HOUR + timedelta(minutes=20)])
async def test_a_partitioned_table_keeps_its_rollups_and_forgets_dropped_partitions(
    database_url: str, cut: datetime
) -> None:
    """Triggers on a partitioned parent see every partition's rows; a dropped partition is forgotten on request."""
    async with MessageAuditTrail(database_url) as trail, trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(text(f"ALTER TABLE {TABLE_NAME} RENAME TO plain"))
        await conn.execute(
            text(f'CREATE TABLE {TABLE_NAME} (LIKE plain INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp")')
        )
        for hour in range(-1, HOURS + 1):
            low, high = START + hour * HOUR, START + (hour + 1) * HOUR
            await conn.execute(
                text(
                    f"CREATE TABLE part_{hour + 1} PARTITION OF {TABLE_NAME} "
                    f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
                )
            )
        await conn.execute(text("DROP TABLE plain"))
    async with MessageAuditTrail(database_url) as trail:
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                text(
                    f"""INSERT INTO {TABLE_NAME} (message_id, from_agent, to_agent, message_type, priority, status,
                        payload_json, "timestamp", delivered_at, retry_count)
                    SELECT 'm' || n, 'agent-' || n % 3, 'agent-' || n % 4, 'QUERY', 'NORMAL',
                           CASE WHEN n % 5 = 0 THEN 'FAILED' ELSE 'DELIVERED' END, '{{}}',
                           CAST(:start AS timestamptz) + n * interval '17 seconds',
                           CAST(:start AS timestamptz) + n * interval '17 seconds' + n * interval '1 ms',
                           0
                    FROM generate_series(0, 1200) AS n"""
                ),
                {"start": START},
            )
            await conn.execute(text(f"UPDATE {TABLE_NAME} SET status = 'EXPIRED' WHERE message_id LIKE 'm1%'"))
            await conn.execute(text(f"DELETE FROM {TABLE_NAME} WHERE message_id LIKE 'm2%'"))
        await assert_rollups_equal_the_scan(trail, None, None)
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            for partition in range(3):  # the hours before START + 2h
                await conn.execute(text(f"DROP TABLE part_{partition}"))
            await conn.execute(text("SET LOCAL session_replication_role = replica"))  # no triggers, like a drop
            await conn.execute(text(f'DELETE FROM {TABLE_NAME} WHERE "timestamp" < :cut'), {"cut": cut})
            await conn.execute(text("SET LOCAL session_replication_role = origin"))
            await rollups.forget_rollups_before(conn, cut)
        assert (await trail.get_statistics()).total_messages == await trail.count_messages()
        for start, end in [(None, None), (START, START + 5 * HOUR), (cut, None)]:
            await assert_rollups_equal_the_scan(trail, start, end)


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
