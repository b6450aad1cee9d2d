"""The backends' batch writes: idempotent by message_id on every path, status updates in bulk."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

import audit_plugin_postgres.backend as postgres_backend
from audit_plugin import Message, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.model.records import StatusUpdate, record_row
from audit_plugin.storage.schema import audit_log


@pytest.fixture(autouse=True, params=["one-statement", "copy"])
def postgres_write_path(request: pytest.FixtureRequest, backend_name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """PostgreSQL writes small batches in one statement and large ones with COPY: test both on every batch."""
    if request.param == "copy":
        if backend_name != "postgres":
            pytest.skip("PostgreSQL has two write paths; SQLite one")
        monkeypatch.setattr(postgres_backend, "ONE_STATEMENT_MAX", 0)
    return request.param


def _rows(count: int, prefix: str = "m") -> list[dict]:
    return [
        record_row(Message("alice", "bob", MessageType.EVENT, {"n": n}, message_id=f"{prefix}-{n}"))
        for n in range(count)
    ]


async def _stored(trail: MessageAuditTrail) -> dict[str, int]:
    """message_id -> number of rows holding it."""
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        stmt = select(audit_log.c.message_id, func.count()).group_by(audit_log.c.message_id)
        return {message_id: n for message_id, n in (await conn.execute(stmt)).all()}


async def test_duplicates_inside_one_batch_are_stored_once_keeping_the_first(trail: MessageAuditTrail) -> None:
    first = record_row(Message("alice", "bob", MessageType.EVENT, {"v": "first"}, message_id="dup"))
    second = record_row(Message("carol", "dave", MessageType.EVENT, {"v": "second"}, message_id="dup"))
    await trail.backend.write_batch([first, *_rows(3), second], [])
    assert await _stored(trail) == {"dup": 1, "m-0": 1, "m-1": 1, "m-2": 1}
    record = await trail.get_message("dup")
    assert record is not None
    assert (record.from_agent, record.payload) == ("alice", {"v": "first"})


async def test_a_retried_batch_after_a_lost_commit_creates_no_duplicates(trail: MessageAuditTrail) -> None:
    """The second write holds rows already stored (as when a commit acknowledgement is lost)."""
    committed = _rows(50)
    await trail.backend.write_batch(committed, [])
    changed = {**committed[0], "from_agent": "mallory"}
    await trail.backend.write_batch([changed, *committed[1:], *_rows(20, prefix="new")], [])
    stored = await _stored(trail)
    assert len(stored) == 70
    assert set(stored.values()) == {1}
    record = await trail.get_message("m-0")
    assert record is not None and record.from_agent == "alice"  # the stored row wins


async def test_status_updates_apply_in_order_and_report_unknown_ids(trail: MessageAuditTrail) -> None:
    await trail.backend.write_batch(_rows(3), [])
    delivered_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    updates = [
        StatusUpdate("m-0", MessageStatus.SENT, retry_count=1),
        StatusUpdate("m-0", MessageStatus.DELIVERED, delivered_at=delivered_at),
        StatusUpdate("m-1", MessageStatus.FAILED, error_message="boom", retry_count=2),
        StatusUpdate("nope", MessageStatus.DELIVERED),
    ]
    found = await trail.backend.write_batch([], updates)
    assert found == {"m-0", "m-1"}
    m0, m1, m2 = [await trail.get_message(f"m-{n}") for n in range(3)]
    assert m0 is not None and (m0.status, m0.delivered_at, m0.retry_count) == (
        MessageStatus.DELIVERED,
        delivered_at,
        1,
    )
    assert m1 is not None and (m1.status, m1.error_message, m1.retry_count) == (MessageStatus.FAILED, "boom", 2)
    assert m2 is not None and m2.status is MessageStatus.PENDING
    assert await trail.get_message("nope") is None


async def test_insert_and_update_of_the_same_message_in_one_batch(trail: MessageAuditTrail) -> None:
    [row] = _rows(1)
    found = await trail.backend.write_batch([row], [StatusUpdate("m-0", MessageStatus.DELIVERED)])
    assert found == {"m-0"}
    record = await trail.get_message("m-0")
    assert record is not None and record.status is MessageStatus.DELIVERED


async def test_many_concurrent_callers_share_few_commits(trail: MessageAuditTrail) -> None:
    messages = [Message("alice", "bob", MessageType.EVENT, {"n": n}) for n in range(500)]
    await asyncio.gather(*(trail.log_message(m) for m in messages))
    stats = trail.writer_stats
    assert stats.written == 500
    assert stats.batches < 50  # group commit: callers waiting together share transactions
    assert len(await _stored(trail)) == 500


async def test_an_update_folded_into_a_row_already_stored_still_reaches_the_stored_row(
    trail: MessageAuditTrail,
) -> None:
    """A status update travelling with its own (duplicate) insert is applied even though the insert is skipped."""
    [stored] = _rows(1)
    await trail.backend.write_batch([stored], [])
    again = {**stored, "from_agent": "mallory"}
    fresh = _rows(2, prefix="fresh")
    updates = [StatusUpdate("m-0", MessageStatus.DELIVERED), StatusUpdate("fresh-1", MessageStatus.FAILED)]
    found = await trail.backend.write_batch([again, *fresh], updates)
    assert found == {"m-0", "fresh-1"}
    m0, fresh0, fresh1 = [await trail.get_message(i) for i in ("m-0", "fresh-0", "fresh-1")]
    assert m0 is not None and (m0.from_agent, m0.status) == ("alice", MessageStatus.DELIVERED)
    assert fresh0 is not None and fresh0.status is MessageStatus.PENDING
    assert fresh1 is not None and fresh1.status is MessageStatus.FAILED


async def test_sqlite_writes_in_wal_with_synchronous_normal(trail: MessageAuditTrail, backend_name: str) -> None:
    if backend_name != "sqlite":
        pytest.skip("SQLite journal settings")
    await trail.log_message(Message("alice", "bob", MessageType.EVENT, {}))

    def settings(db: sqlite3.Connection) -> tuple[str, int]:
        return db.execute("PRAGMA journal_mode").fetchone()[0], db.execute("PRAGMA synchronous").fetchone()[0]

    assert await trail.backend.in_writer_thread(settings) == ("wal", 1)  # type: ignore[attr-defined]  # 1 = NORMAL


async def test_sqlite_in_memory_store_is_a_temporary_file_removed_at_close(backend_name: str) -> None:
    if backend_name != "sqlite":
        pytest.skip("SQLite's in-memory databases")
    trail = MessageAuditTrail("sqlite+aiosqlite:///:memory:")
    await trail.initialize()
    path = trail.backend.path  # type: ignore[attr-defined]
    await trail.log_message(Message("alice", "bob", MessageType.EVENT, {"n": 1}))
    assert [record.payload for record in await trail.query_messages()] == [{"n": 1}]  # reads see the writer's rows
    assert path in _existing(path)
    await trail.close()
    assert _existing(path) == []


def _existing(database: str) -> list[str]:
    """The database file and its WAL companions that exist."""
    return [name for name in (database, f"{database}-wal", f"{database}-shm") if os.path.exists(name)]
