"""Faults in the real stores, and a full queue: nothing is lost or duplicated without being counted.

PostgreSQL: the writer's server connections are killed with
``pg_terminate_backend`` (only connections to this test's own database) again
and again during a stream. SQLite: another connection holds the write lock
for longer than the busy timeout. Queue full: the drop counter accounts for
every record that is not stored, exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

import audit_plugin.storage.sqlite.backend as sqlite_backend
from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageStatus, MessageType
from audit_plugin.exceptions import AuditTimeoutError, RecordDroppedError
from audit_plugin.model.records import record_row
from audit_plugin.storage.schema import TABLE_NAME, audit_log
from audit_plugin.storage.writer import AuditWriter
from tests.helpers import asyncpg_dsn

SENDERS = 32


@pytest.fixture(autouse=True)
def short_sqlite_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock held by another connection outlasts SQLite's busy timeout quickly (the test stays short)."""
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_MS", 100)


def _message(n: int) -> Message:
    return Message(f"agent-{n % 8}", "sink", MessageType.EVENT, {"n": n, "text": "x" * 100})


async def _stored_ids(trail: MessageAuditTrail) -> list[str]:
    """Every stored message_id, duplicates included (read past the trail, straight from the table)."""
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        return list((await conn.execute(select(audit_log.c.message_id))).scalars())


async def _statuses(trail: MessageAuditTrail) -> dict[str, int]:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        stmt = select(audit_log.c.status, func.count()).group_by(audit_log.c.status)
        return dict((await conn.execute(stmt)).all())


async def _send_all(bus: MessageBus, messages: list[Message]) -> list[MessageStatus]:
    """Send ``messages`` from ``SENDERS`` concurrent senders; every send() must return a receipt."""
    pending = iter(messages)
    outcomes: list[MessageStatus] = []

    async def sender() -> None:
        for message in pending:
            outcomes.append((await bus.send(message)).status)

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return outcomes


def _audited_bus(trail: MessageAuditTrail, **plugin_options: object) -> tuple[MessageBus, AuditPlugin]:
    bus = MessageBus()
    plugin = AuditPlugin(trail, **plugin_options)  # type: ignore[arg-type]
    bus.register(plugin)

    async def sink(message: Message) -> None:
        await asyncio.sleep(0)

    bus.subscribe("sink", sink)
    return bus, plugin


# -- PostgreSQL: connections killed mid-stream -------------------------------------------------


async def _terminate_writer_connections(database_url: str, stop: asyncio.Event, rounds: int, interval: float) -> int:
    """Every ``interval`` s, ``rounds`` times (or until ``stop``), kill every other connection to this test's
    database; return how many were killed."""
    database = make_url(database_url).database
    killer = await asyncpg.connect(asyncpg_dsn(database_url))
    killed = 0
    try:
        for _ in range(rounds):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                break
            killed += await killer.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
    finally:
        await killer.close()
    return killed


@pytest.mark.parametrize("durability", ["commit", "buffered"])
async def test_postgres_connections_killed_mid_stream_lose_and_duplicate_nothing(
    database_url: str, backend_name: str, durability: str
) -> None:
    if backend_name != "postgres":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    async with MessageAuditTrail(database_url, batch_size=200) as trail:
        trail.writer.retry_initial_delay = 0.01  # keep the test short: retry soon after each kill
        trail.writer.retry_max_delay = 0.2
        bus, _plugin = _audited_bus(trail, durability=durability, commit_timeout=None)
        messages = [_message(n) for n in range(4000)]
        stop = asyncio.Event()
        killer = asyncio.create_task(_terminate_writer_connections(database_url, stop, rounds=12, interval=0.05))
        try:
            outcomes = await _send_all(bus, messages)
            await trail.flush()  # still under fire: the writer keeps retrying until everything is in
        finally:
            stop.set()
            killed = await killer
        await trail.flush()
        stored = await _stored_ids(trail)
        statuses = await _statuses(trail)
        stats = trail.writer_stats
    assert killed >= 3, "the stream ended before the faults started; make it longer"
    assert stats.retries >= 1  # the kills hit the writer: it failed, held its batch, and retried
    assert outcomes == [MessageStatus.DELIVERED] * len(messages)
    assert len(stored) == len(set(stored))  # zero duplicates
    assert set(stored) == {m.message_id for m in messages}, stats  # stored == produced, exactly
    assert statuses == {"DELIVERED": len(messages)}  # the status updates survived the kills too
    assert stats.dropped == stats.failed == 0


# -- SQLite: the database locked by another connection ------------------------------------------


@contextlib.asynccontextmanager
async def _store_held(database_url: str) -> AsyncIterator[None]:
    """Hold the audit table's write lock from another connection for the duration of the block."""
    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite":
        holder = sqlite3.connect(parsed.database, isolation_level=None, check_same_thread=False)
        try:
            # In a thread: the writer may be mid-transaction and needs the event loop to finish it.
            await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
            yield
            holder.execute("COMMIT")
        finally:
            holder.close()
        return
    holder = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with holder.transaction():
            await holder.execute(f"LOCK TABLE {TABLE_NAME} IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await holder.close()


async def test_sqlite_locked_longer_than_busy_timeout_loses_nothing(database_url: str, backend_name: str) -> None:
    if backend_name != "sqlite":
        pytest.skip("SQLite locking")
    async with MessageAuditTrail(database_url, batch_size=200) as trail:
        trail.writer.retry_initial_delay = 0.01
        bus, _plugin = _audited_bus(trail, durability="buffered")
        before = [_message(n) for n in range(1000)]
        during = [_message(n) for n in range(1000, 2000)]
        after = [_message(n) for n in range(2000, 3000)]
        await _send_all(bus, before)
        async with _store_held(database_url):
            await _send_all(bus, during)
            await asyncio.sleep(0.5)  # 5x the busy timeout: the writer sees "database is locked"
            assert not trail.writer_stats.store_available
        await _send_all(bus, after)
        await trail.flush()
        stored = await _stored_ids(trail)
        statuses = await _statuses(trail)
        stats = trail.writer_stats
    produced = before + during + after
    assert stats.retries > 0
    assert stats.store_available
    assert len(stored) == len(set(stored)) == len(produced)
    assert set(stored) == {m.message_id for m in produced}
    assert statuses == {"DELIVERED": len(produced)}


# -- commit mode with the store unavailable -----------------------------------------------------


async def test_commit_mode_goes_on_after_commit_timeout_and_writes_the_record_later(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        trail.writer.retry_initial_delay = 0.01
        trail.writer.retry_max_delay = 0.05
        bus, plugin = _audited_bus(trail, durability="commit", commit_timeout=0.2)
        message = _message(1)
        async with _store_held(database_url):
            receipt = await asyncio.wait_for(bus.send(message), 5)
            assert receipt.status is MessageStatus.DELIVERED  # send() went on without the commit
            assert plugin.commit_timeouts == 2  # the PENDING record and the DELIVERED update
            if make_url(database_url).get_backend_name() == "sqlite":  # PostgreSQL's ACCESS EXCLUSIVE blocks readers
                assert _sqlite_stored_ids(database_url) == []  # nothing committed while the store was held
        await trail.flush()
        record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.status is MessageStatus.DELIVERED


def _sqlite_stored_ids(database_url: str) -> list[str]:
    """Read the table from a fresh connection (in WAL, readers are not blocked by the held write lock)."""
    with contextlib.closing(sqlite3.connect(make_url(database_url).database)) as reader:
        return [row[0] for row in reader.execute(f"SELECT message_id FROM {TABLE_NAME}")]


async def test_close_with_timeout_abandons_and_reports_what_the_store_never_took(database_url: str) -> None:
    trail = MessageAuditTrail(database_url)
    await trail.initialize()
    writer = trail.writer
    async with _store_held(database_url):
        waiters = [asyncio.create_task(trail.log_message(_message(n))) for n in range(10)]
        await asyncio.sleep(0.1)
        with pytest.raises(AuditTimeoutError):
            await trail.close(timeout=0.3)
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(outcome, AuditTimeoutError) for outcome in outcomes)
    assert writer.stats.abandoned == 10


# -- queue full --------------------------------------------------------------------------------


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
async def test_full_queue_drops_exactly_what_the_counter_says(database_url: str, overflow: str) -> None:
    async with MessageAuditTrail(database_url, batch_size=50, max_queue=100, overflow=overflow) as trail:  # type: ignore[arg-type]
        produced: list[Message] = []

        async def producer(first: int) -> None:
            for n in range(first, first + 250):
                message = _message(n)
                produced.append(message)
                future = trail.enqueue_message_nowait(message)
                assert future is not None
                if n % 25 == 0:
                    await asyncio.sleep(0)  # let the writer run now and then: drops and commits interleave

        await asyncio.gather(*(producer(k * 1000) for k in range(8)))
        await trail.flush()
        stored = await _stored_ids(trail)
        stats = trail.writer_stats
    assert stats.dropped > 0
    assert len(produced) - len(stored) == stats.dropped
    assert len(stored) == len(set(stored))
    assert set(stored) <= {m.message_id for m in produced}


async def test_drop_newest_keeps_the_first_and_drop_oldest_the_last(database_url: str) -> None:
    for overflow, expected in (("drop_newest", range(0, 10)), ("drop_oldest", range(90, 100))):
        trail = MessageAuditTrail(database_url, max_queue=10, overflow=overflow)  # type: ignore[arg-type]
        async with trail:
            async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
                await conn.execute(audit_log.delete())
            messages = [_message(n) for n in range(100)]
            futures = [trail.enqueue_message_nowait(m) for m in messages]  # no await: the writer cannot run
            await trail.flush()
            assert sorted(await _stored_ids(trail)) == sorted(messages[n].message_id for n in expected)
            assert trail.writer_stats.dropped == 90
            dropped = [f for f in futures if f is not None and f.exception() is not None]
            assert len(dropped) == 90
            assert all(isinstance(f.exception(), RecordDroppedError) for f in dropped)


async def test_block_policy_back_pressures_senders_and_drops_nothing(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="audit_plugin.storage.writer")
    async with MessageAuditTrail(database_url, batch_size=20, max_queue=50, overflow="block") as trail:
        # Handlers that never yield make each send() run to completion without yielding. The bound only stops a
        # wedged run: a commit stalled by a busy machine must not count as a drop (fairness is tested below).
        bus = MessageBus()
        bus.register(AuditPlugin(trail, durability="buffered", commit_timeout=30))

        async def sink(message: Message) -> None:
            return None

        bus.subscribe("sink", sink)
        deepest = 0

        async def watch() -> None:
            nonlocal deepest
            while True:
                deepest = max(deepest, trail.writer_stats.queue_depth)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        messages = [_message(n) for n in range(6000)]
        try:
            await _send_all(bus, messages)
        finally:
            watcher.cancel()
        await trail.flush()
        stored = await _stored_ids(trail)
        stats = trail.writer_stats
    assert stats.dropped == 0
    assert sorted(stored) == sorted(m.message_id for m in messages)
    assert deepest <= 50  # the queue never grew past its bound: senders waited instead
    assert any("audit queue full" in r.getMessage() and "'block'" in r.getMessage() for r in caplog.records)


async def test_space_freed_for_a_waiting_caller_is_not_taken_by_one_arriving_later(tmp_path: Any) -> None:
    """Block is first come, first served: a caller that never yields cannot take the slot a waiter was granted."""
    trail = MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    writer = AuditWriter(trail.backend, max_queue=1, overflow="block")  # not started: the test takes the batch
    queued, waiting, arriving = (_message(n) for n in range(3))
    writer.submit(row=record_row(queued))
    first = asyncio.create_task(writer.put(row=record_row(waiting)))
    await asyncio.sleep(0)
    assert not first.done()  # the queue is full: the first caller waits
    writer._take_batch()
    writer._batch_done()  # the freed slot is granted to the first caller, who has not run yet
    assert writer.is_full()  # so a caller arriving now must wait too, although nothing is queued
    later = asyncio.create_task(writer.put(row=record_row(arriving)))
    await first
    assert [op.row["message_id"] for op in writer._queue] == [waiting.message_id]
    assert not later.done()  # the later caller waits for the next free slot
    writer._take_batch()
    writer._batch_done()
    await later
    assert [op.row["message_id"] for op in writer._queue] == [arriving.message_id]
    await trail.close()


async def test_a_caller_granted_space_is_queued_even_if_a_flush_barrier_filled_the_queue(tmp_path: Any) -> None:
    """A slot granted to a waiting caller stays his: a flush() that queues its barrier first does not take it."""
    trail = MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    writer = AuditWriter(trail.backend, max_queue=1, overflow="block")  # not started: the test takes the batch
    writer.submit(row=record_row(_message(0)))
    waiting = asyncio.create_task(writer.put(row=record_row(_message(1))))
    await asyncio.sleep(0)
    assert not waiting.done()  # the queue is full: the caller waits
    flushing = asyncio.create_task(writer.flush())  # ready to run before the caller is woken
    writer._take_batch()  # what the writer task does: the queue empties into the batch being written...
    writer._batch_done()  # ...whose slot goes to the waiting caller once it is settled
    future = await waiting  # the flush's barrier went in first; this used to raise asyncio.QueueFull
    assert not future.done()
    assert len(writer._queue) == 2  # the barrier and the caller's record
    flushing.cancel()
    await trail.close()
