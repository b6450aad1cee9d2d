"""The batch write's requests, answered by each SQL backend (a dialect) on its real database.

:mod:`audit_plugin.storage.batch_write` holds the algorithm once; these tests hand a
batch to a backend's ``write`` and look at the requests it made: the common
case is four, a conflict is rolled back and written carefully, and errors
leave the driver mapped to the documented hierarchy. They run on any
backend built on :class:`~audit_plugin.storage.sql.SQLBackend`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Generator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from audit_plugin import MessageAuditTrail
from audit_plugin.exceptions import AuditStoreError, QueueFullError, StoreUnavailableError
from audit_plugin.model.records import record_row
from audit_plugin.storage.batch_write import (
    AppendEntries,
    BatchWrite,
    Begin,
    Commit,
    InsertAndUpdate,
    InsertNew,
    ReadHead,
    Request,
    Rollback,
    StoredIds,
    mapped_error,
)
from audit_plugin.storage.schema import audit_log
from audit_plugin.storage.sql import SQLBackend
from audit_plugin.storage.writer import AuditWriter, is_transient
from tests.helpers import make_message

COPY_SIZED = 300
"""Records in a batch larger than PostgreSQL's one-statement limit (so it takes the ``COPY`` path there too)."""


class RecordedWrite(BatchWrite):
    """A batch write that notes the type of each request it makes (the answers are the backend's own)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: list[type[Request]] = []

    def steps(self) -> Generator[Request, Any, set[str]]:
        steps = super().steps()
        reply: Any = None
        while True:
            try:
                request = steps.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            self.asked.append(type(request))
            reply = yield request


async def write_recording(trail: MessageAuditTrail, rows: list[dict[str, Any]]) -> list[type[Request]]:
    """Write ``rows`` as one batch with the trail's backend answering; return the requests made, in order."""
    backend = trail.backend
    if not isinstance(backend, SQLBackend):
        pytest.skip(f"{backend.name!r} is not a dialect of the batch write")
    batch = RecordedWrite(trail.ledger, backend, [trail.ledger.ledgered(row) for row in rows], [])
    await backend.write(batch)
    return batch.asked


def rows(count: int, prefix: str) -> list[dict[str, Any]]:
    return [record_row(make_message(message_id=f"{prefix}-{n}")) for n in range(count)]


async def stored_rows(trail: MessageAuditTrail) -> int:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(await conn.scalar(select(func.count()).select_from(audit_log)) or 0)


async def test_a_batch_of_new_records_takes_four_requests_once_the_head_is_kept(trail: MessageAuditTrail) -> None:
    first = await write_recording(trail, rows(3, "a"))
    assert ReadHead in first  # nothing kept yet: the head is read under the lock
    asked = await write_recording(trail, rows(3, "b"))
    assert asked in ([Begin, InsertNew, AppendEntries, Commit], [Begin, InsertAndUpdate, AppendEntries, Commit])
    assert (await trail.verify()).ok


async def test_a_batch_stored_already_is_rolled_back_and_written_carefully_once(trail: MessageAuditTrail) -> None:
    batch = rows(COPY_SIZED, "again")
    await write_recording(trail, batch)
    asked = await write_recording(trail, batch)  # a retry after a lost commit acknowledgement
    assert asked[:3] == [Begin, InsertNew, Rollback]
    assert asked[3:5] == [Begin, StoredIds] and asked[-1] is Commit
    assert AppendEntries not in asked  # nothing new: no entry
    assert await stored_rows(trail) == COPY_SIZED
    assert (await trail.verify()).ok


async def test_a_head_moved_by_another_writer_is_read_again_under_the_lock(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as mine, MessageAuditTrail(database_url) as other:
        await write_recording(mine, rows(2, "mine"))  # mine keeps the head it committed
        await write_recording(other, rows(2, "other"))  # ... which the other writer moves
        asked = await write_recording(mine, rows(2, "late"))
        assert asked.count(AppendEntries) == 2 and Rollback in asked
        assert asked.index(ReadHead) > asked.index(Rollback)
        assert asked[-1] is Commit
        report = await mine.verify()
        assert report.ok and report.entries == 6


async def test_the_dialect_classifies_and_the_driver_maps_real_errors(trail: MessageAuditTrail, tmp_path: Path) -> None:
    backend: Any = trail.backend
    refused: BaseException
    unavailable: BaseException
    if backend.name == "sqlite":
        holder, waiter = (sqlite3.connect(tmp_path / "locked.db", timeout=0, isolation_level=None) for _ in range(2))
        holder.execute("CREATE TABLE t (k PRIMARY KEY)")
        holder.execute("INSERT INTO t VALUES (1)")
        try:
            holder.execute("INSERT INTO t VALUES (1)")
        except sqlite3.IntegrityError as exc:
            refused = exc
        holder.execute("BEGIN IMMEDIATE")
        try:
            waiter.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # "database is locked"
            unavailable = exc
        holder.close()
        waiter.close()
    elif backend.name == "postgresql":
        server = trail.database_url.replace("postgresql+asyncpg://", "postgresql://")
        victim, killer = await asyncpg.connect(server), await asyncpg.connect(server)
        try:
            try:
                await victim.execute("SELECT 1 / 0")
            except asyncpg.PostgresError as exc:
                refused = exc
            await killer.execute(f"SELECT pg_terminate_backend({victim.get_server_pid()})")
            try:
                await victim.execute("SELECT 1")
            except Exception as exc:  # the server closed it under us
                unavailable = exc
        finally:
            await killer.close()
            victim.terminate()
    else:
        pytest.skip(f"no error of the {backend.name!r} dialect to make here")
    assert not backend.is_transient(refused)
    assert backend.is_transient(unavailable)
    mapped_refused, mapped_unavailable = mapped_error(refused, backend), mapped_error(unavailable, backend)
    assert type(mapped_refused) is AuditStoreError and not is_transient(mapped_refused)
    assert isinstance(mapped_unavailable, StoreUnavailableError) and is_transient(mapped_unavailable)
    assert isinstance(mapped_unavailable, ConnectionError)  # the built-in, for code catching that
    assert "SELECT" not in str(mapped_refused) and "INSERT" not in str(mapped_refused)  # the driver's line only


async def test_a_full_queue_that_cannot_wait_is_a_queue_full_error(trail: MessageAuditTrail) -> None:
    writer = AuditWriter(trail.backend, max_queue=1)  # not started: nothing drains
    writer.submit(row=record_row(make_message()))
    with pytest.raises(QueueFullError) as full:
        writer.submit(row=record_row(make_message()))
    assert isinstance(full.value, asyncio.QueueFull)  # code catching the asyncio error keeps working
