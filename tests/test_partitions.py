"""The partitioned PostgreSQL layout: partitions ahead, retention by drop, exactly-once, pruning, migration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import uuid_utils
from sqlalchemy import select, text

from audit_plugin import AuditQuery, Message, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.model.records import record_row
from audit_plugin.storage.schema import audit_log

pytest.importorskip("audit_plugin_postgres")

from audit_plugin_postgres import PostgresBackend, fragments, partitions
from audit_plugin_postgres.migrate import migrate_to_partitions
from audit_plugin_postgres.testing import throwaway_database
from tests.helpers import asyncpg_dsn

NOW = datetime.now(UTC)


@pytest.fixture
async def url(postgres_url: str) -> AsyncIterator[str]:
    async with throwaway_database() as made:
        yield made


async def _tables(url: str, like: str) -> list[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT relname FROM pg_class WHERE relname LIKE $1 AND relkind IN ('r', 'p')", like)
        return sorted(row[0] for row in rows)
    finally:
        await conn.close()


async def _partitions(url: str) -> list[str]:
    """The partitions attached to the store's partitioned tables."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r' AND relname LIKE 'message_audit_%'"
        )
        return sorted(row[0] for row in rows)
    finally:
        await conn.close()


def _message(at: datetime, n: int = 0, *, message_id: str | None = None) -> Message:
    """A message made at ``at``: its default id is a UUIDv7 of that time."""
    nanos = int(at.timestamp() * 1_000_000_000) + n
    return Message(
        message_id=message_id or str(uuid_utils.uuid7(nanoseconds=nanos)),
        from_agent="a",
        to_agent="b",
        message_type=MessageType.EVENT,
        payload={"n": n},
        timestamp=at,
    )


async def test_new_database_has_daily_partitions_ahead_and_defaults(url: str) -> None:
    async with MessageAuditTrail(url) as trail:
        layout = trail.backend.layout
    assert layout == partitions.Layout("day")
    days = [partitions.interval_start(NOW, "day") + timedelta(days=n) for n in range(partitions.INTERVALS_AHEAD + 1)]
    expected = [f"message_audit_log_p{day:%Y%m%d}" for day in days]
    assert await _tables(url, "message_audit_log_%") == sorted([*expected, "message_audit_log_default"])
    assert len(await _tables(url, "message_audit_operations_p%")) == len(days)
    assert len(await _tables(url, "message_audit_events_s%")) == partitions.SPANS_AHEAD


async def test_url_parameter_picks_the_interval_and_is_not_passed_to_the_driver(url: str) -> None:
    backend = PostgresBackend(url + "?partitioning=hour&events_per_partition=10")
    assert "partitioning" not in backend.url and "events_per_partition" not in backend.url
    await backend.initialize()
    await backend.close()
    hour = partitions.interval_start(datetime.now(UTC), "hour")  # initialize made this hour's, or the one before
    assert f"message_audit_log_p{hour:%Y%m%d%H}" in await _tables(url, "message_audit_log_p%")
    assert "message_audit_events_s11" in await _tables(url, "message_audit_events_s%")


def test_a_bad_interval_is_a_typed_error_naming_the_field() -> None:
    with pytest.raises(InvalidFieldError) as error:
        PostgresBackend("postgresql+asyncpg://u@h/db?partitioning=fortnight")
    assert error.value.field == "partitioning"
    with pytest.raises(InvalidFieldError) as error:
        PostgresBackend("postgresql+asyncpg://u@h/db", events_per_partition=0)
    assert error.value.field == "events_per_partition"


async def test_old_future_and_foreign_ids_are_accepted(url: str) -> None:
    old, future = _message(NOW - timedelta(days=400)), _message(NOW + timedelta(days=400))
    custom = _message(NOW, message_id="order-42")
    async with MessageAuditTrail(url) as trail:
        for message in (old, future, custom):
            await trail.log_message(message)
        assert await trail.update_message_status("order-42", MessageStatus.DELIVERED)
        stored = {record.message_id for record in await trail.query_messages(AuditQuery(limit=10))}
        assert stored == {old.message_id, future.message_id, "order-42"}
        assert (await trail.verify()).ok


async def _write_days(trail: MessageAuditTrail, days: int, per_day: int) -> list[Message]:
    """``per_day`` messages on each of the ``days`` days before today, in partitions made for them.

    Their lifecycle entries are stamped with the messages' times (no status
    change is reported later), so the chain's prefix goes with them.
    """
    backend = trail.backend
    assert isinstance(backend, PostgresBackend) and backend.layout is not None
    starts = [partitions.interval_start(NOW - timedelta(days=d), "day") for d in range(days, 0, -1)]
    async with backend.engine.begin() as conn:
        await partitions.create_intervals(conn, backend.layout, starts)
    written = []
    for start in starts:
        for n in range(per_day):
            written.append(_message(start + timedelta(hours=12), n))
            await trail.log_message(written[-1])
        async with backend.engine.begin() as conn:  # what the backend's maintenance does every minute
            await partitions.ensure_ahead(conn, backend.layout)
    return written


async def test_retention_drops_whole_partitions_and_the_chain_verifies(url: str) -> None:
    async with MessageAuditTrail(url + "?events_per_partition=3") as trail:
        written = await _write_days(trail, days=3, per_day=3)
        for message in written[6:]:
            await trail.update_message_status(message.message_id, MessageStatus.DELIVERED, operation_id="done")
        today = _message(NOW)
        await trail.log_message(today)
        cutoff = partitions.interval_start(NOW - timedelta(days=1), "day")  # drops the first two days
        before = await _partitions(url)
        assert await trail.backend.delete_older_than(cutoff) == 6
        detached = sorted(set(before) - set(await _partitions(url)))  # out of every read at once
        await trail.backend.wait_for_drops()
        dropped = sorted(set(before) - set(await _tables(url, "message_audit_%")))
        assert dropped == detached
        day1, day2 = (f"{(cutoff - timedelta(days=n)):%Y%m%d}" for n in (2, 1))
        for day in (day1, day2):
            assert f"message_audit_log_p{day}" in dropped and f"message_audit_operations_p{day}" in dropped
        assert any(name.startswith("message_audit_events_s") for name in dropped)
        kept = {record.message_id for record in await trail.query_messages(AuditQuery(limit=100))}
        assert kept == {m.message_id for m in written[6:]} | {today.message_id}
        report = await trail.verify()
        assert report.ok, report
        assert report.first_sequence > 1


async def test_retention_in_chunks_drops_a_partition_per_chunk_then_deletes_in_chunks(url: str) -> None:
    async with MessageAuditTrail(url) as trail:
        written = await _write_days(trail, days=2, per_day=3)
        stamped_old = _message(NOW - timedelta(days=5))
        stamped_old.message_id = str(uuid_utils.uuid7())  # made now, stamped five days ago
        await trail.log_message(stamped_old)
        cutoff = partitions.interval_start(NOW, "day")
        chunks = [n async for n in trail.backend.delete_older_than_in_chunks(cutoff, 2)]
        assert chunks == [3, 3, 1]
        assert await trail.query_messages() == []
        report = await trail.verify()
        assert report.ok and report.first_sequence == len(written) + 2, report


async def test_closing_the_trail_waits_for_the_detached_partitions_to_be_dropped(url: str) -> None:
    days = [f"{partitions.interval_start(NOW - timedelta(days=n), 'day'):%Y%m%d}" for n in (2, 1)]
    old_days = {f"message_audit_{table}_p{day}" for table in ("log", "operations") for day in days}
    leftover = "message_audit_log_p19990101"  # as a crash leaves a detached partition
    reader = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with MessageAuditTrail(url) as trail:
            await _write_days(trail, days=2, per_day=2)
            assert old_days <= set(await _partitions(url))
            await reader.execute(f"CREATE TABLE {leftover} (n int)")
            await reader.execute("BEGIN")
            await reader.execute(f"LOCK TABLE {leftover} IN ACCESS SHARE MODE")  # holds the drop up
            assert await trail.backend.delete_older_than(partitions.interval_start(NOW, "day")) == 4
            asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(reader.execute("COMMIT")))
        assert old_days.isdisjoint(await _tables(url, "message_audit_%"))
        assert leftover not in await _tables(url, "message_audit_%")
    finally:
        await reader.close()


async def test_retention_keeps_a_partition_holding_a_newer_record(url: str) -> None:
    async with MessageAuditTrail(url) as trail:
        written = await _write_days(trail, days=2, per_day=2)
        straggler = _message(NOW - timedelta(days=2), 99)
        straggler.timestamp = NOW  # an id from two days ago, stamped now
        await trail.log_message(straggler)
        cutoff = partitions.interval_start(NOW, "day")
        assert await trail.backend.delete_older_than(cutoff) == len(written)
        assert [r.message_id for r in await trail.query_messages()] == [straggler.message_id]
        assert (await trail.verify()).ok


async def test_a_message_is_stored_once_whatever_timestamp_a_copy_carries(url: str) -> None:
    message = _message(NOW)
    async with MessageAuditTrail(url) as trail:
        await trail.log_message(message)
        copy = _message(NOW + timedelta(seconds=5), message_id=message.message_id)  # the consume side's copy
        await trail.record_outcome(copy, MessageStatus.DELIVERED, operation_id="consumer")
        await trail.log_message(message)  # a retried record
        records = await trail.query_messages()
        assert [(r.message_id, r.timestamp, r.status) for r in records] == [
            (message.message_id, message.timestamp, MessageStatus.DELIVERED)
        ]


async def test_a_retried_large_batch_is_stored_once(url: str) -> None:
    messages = [_message(NOW, n) for n in range(600)]
    async with MessageAuditTrail(url) as trail:
        rows = [record_row(m) for m in messages]
        await trail.backend.write_batch(rows, [])
        await trail.backend.write_batch(rows, [])  # the commit acknowledgement was lost
        assert await trail.backend.count(AuditQuery()) == len(messages)
        report = await trail.verify()
        assert report.ok and report.entries == len(messages)


async def test_an_operation_applies_once(url: str) -> None:
    message = _message(NOW)
    async with MessageAuditTrail(url) as trail:
        await trail.log_message(message)
        for _ in range(3):
            await trail.update_message_status(message.message_id, MessageStatus.DELIVERED, operation_id="op-1")
        lifecycle = await trail.get_message_history(message.message_id)
        assert [event.kind for event in lifecycle] == ["record", "status"]
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM message_audit_operations") == 1
    finally:
        await conn.close()


async def test_lookup_and_update_by_id_touch_one_partition(url: str) -> None:
    message = _message(NOW)
    async with MessageAuditTrail(url) as trail:
        await trail.log_message(message)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        lookup = "EXPLAIN SELECT * FROM message_audit_log WHERE message_id = $1"
        plan = "\n".join(row[0] for row in await conn.fetch(lookup, message.message_id))
        assert plan.count("on message_audit_log_p") == 1, plan
        assert f"message_audit_log_p{NOW:%Y%m%d}" in plan
        update = await conn.fetch(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) UPDATE message_audit_log AS t SET retry_count = 1 "
            "FROM unnest($1::text[]) AS u(message_id) WHERE t.message_id = u.message_id",
            [message.message_id],
        )
        scans = [row[0] for row in update if "Index Scan" in row[0] or "Seq Scan" in row[0]]
        executed = [scan for scan in scans if "never executed" not in scan]
        assert len(scans) > 1 and len(executed) == 1, scans
    finally:
        await conn.close()


async def test_an_unpartitioned_database_keeps_working_and_migrates(url: str) -> None:
    written = [_message(NOW - timedelta(days=d), d) for d in range(5)]
    async with MessageAuditTrail(url + "?partitioning=none") as trail:
        for message in written:
            await trail.log_message(message)
        await trail.update_message_status(written[0].message_id, MessageStatus.FAILED, operation_id="op")
        await trail.backend.delete_older_than(NOW - timedelta(days=3, hours=12))
        before = await trail.query_messages(AuditQuery(limit=100))
    async with MessageAuditTrail(url) as trail:  # the default asks for partitions; the database has none
        assert trail.backend.layout == partitions.Layout("none")
        assert [r.message_id for r in await trail.query_messages(AuditQuery(limit=100))] == [
            r.message_id for r in before
        ]
    assert await migrate_to_partitions(url) is True
    assert await migrate_to_partitions(url) is False
    async with MessageAuditTrail(url) as trail:
        assert trail.backend.layout == partitions.Layout("day")
        assert await trail.query_messages(AuditQuery(limit=100)) == before
        report = await trail.verify()
        assert report.ok, report
        await trail.update_message_status(written[0].message_id, MessageStatus.FAILED, operation_id="op")
        lifecycle = await trail.get_message_history(written[0].message_id)
        assert [event.kind for event in lifecycle] == ["record", "status"]
    assert f"message_audit_log_p{written[3].timestamp:%Y%m%d}" in await _tables(url, "message_audit_log_p%")


async def test_reads_are_planned_once_and_short_ids_are_read_from_an_index(url: str) -> None:
    """Reads an index serves in order are planned once (generic plans) on connections opened so, and the short-id
    lookups' use indexes."""
    written = [_message(NOW - timedelta(days=d), d) for d in range(3)]
    async with MessageAuditTrail(url) as trail:
        for message in written:
            await trail.log_message(message)
        for query, planned in [
            (AuditQuery(from_agent="a", to_agent="b"), "force_generic_plan"),  # an index serves it in order
            (AuditQuery(status=MessageStatus.FAILED), "auto"),  # how rare the status is decides the plan
        ]:
            async with trail.backend.reading(query) as conn:  # set as the connection opened: no statement of its own
                assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar() == planned
        target = written[1].message_id
        assert (await trail.find_ids(target[-8:])).message_ids == [target]
        assert (await trail.find_ids(target[:-1])).message_ids == [target]
        dialect = trail.backend.engine.dialect
    lookups = {
        "the end of a message id": fragments.ending_with(audit_log.c.message_id, target[-8:]),
        "the start of a message id": fragments.starting_with(audit_log.c.message_id, target[:13]),
        "the start of a correlation id": fragments.starting_with(audit_log.c.correlation_id, "conv-1"),
    }
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        for name, condition in lookups.items():
            compiled = select(audit_log.c.message_id).where(condition).compile(dialect=dialect)
            values = [compiled.params[key] for key in compiled.positiontup]
            await conn.execute(f"PREPARE lookup AS {compiled}")
            arguments = ", ".join("'" + value.replace("'", "''") + "'" for value in values)  # fragments: text
            plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN EXECUTE lookup({arguments})"))
            await conn.execute("DEALLOCATE lookup")
            assert "Seq Scan" not in plan and "Index Cond" in plan, (name, plan)  # the range bounds an index scan
    finally:
        await conn.close()
