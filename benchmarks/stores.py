"""Writing the same messages three ways: the trail's writer, the raw driver (the store's own limit), the seed's way.

* ``writer``: ``MessageAuditTrail`` fed as fast as one producer can (records
  built and validated, queued, written by the group-commit writer), timed
  until ``flush()`` returns (everything committed).
* ``api``: the public API in commit semantics: ``API_CALLERS`` concurrent
  callers, each awaiting ``trail.log_message(m)`` for one message after
  another (every call returns once its record is committed).
* ``raw``: the database's own limit for the same messages: asyncpg
  ``copy_records_to_table`` / stdlib ``sqlite3`` ``executemany`` (WAL,
  ``synchronous=NORMAL``), ``batch_size`` messages per transaction, rows
  made with the bare minimum (a tuple and ``json.dumps``), no validation.
  ``raw_same_rows`` writes what the trail stores for each message: its record
  and its lifecycle entry (a ``message_audit_events`` row whose hash columns
  hold fixed 64-character strings: the database's work, not the hashing);
  ``raw`` writes the records alone. ``raw_same_rows_64`` writes the same rows
  ``API_CALLERS`` messages per transaction: all that commit semantics allow
  with that many callers, the baseline of ``api``.
* ``seed``: the original story's way, an SQLAlchemy ORM ``AsyncSession``
  with one ``add()`` and one ``commit()`` per message.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from audit_plugin import Message, MessageAuditLog, MessageAuditTrail
from audit_plugin.integrity import chain
from audit_plugin.storage.integrity_schema import EVENTS_TABLE, events
from audit_plugin.storage.schema import TABLE_NAME, audit_log, metadata
from benchmarks.common import TRAIL_OPTIONS, Store

COLUMNS = [column.name for column in audit_log.columns]
EVENT_COLUMNS = [column.name for column in events.columns]
BATCH_SIZE = 1000
API_CALLERS = 64


async def prepare(store: Store) -> None:
    """Create the schema (the trail's own DDL: same table and indexes for every path) on an empty table."""
    trail = MessageAuditTrail(store.url)
    await trail.initialize()
    async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        for table in reversed(metadata.sorted_tables):  # the records, their lifecycle and the chain head
            await conn.execute(table.delete())
    await trail.close()


async def count_rows(store: Store) -> int:
    trail = MessageAuditTrail(store.url)
    await trail.initialize()
    try:
        async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
            return int((await conn.execute(text(f"SELECT count(*) FROM {TABLE_NAME}"))).scalar_one())
    finally:
        await trail.close()


async def write_with_writer(store: Store, messages: list[Message]) -> None:
    trail = MessageAuditTrail(store.url, batch_size=BATCH_SIZE, **TRAIL_OPTIONS)  # type: ignore[arg-type]
    await trail.initialize()
    try:
        for start in range(0, len(messages), BATCH_SIZE):
            for message in messages[start : start + BATCH_SIZE]:
                if trail.enqueue_message_nowait(message) is None:
                    await trail.enqueue_message(message)
            await asyncio.sleep(0)  # let the writer commit while the producer goes on
        await trail.flush()
    finally:
        await trail.close()


async def write_with_api(store: Store, messages: list[Message]) -> None:
    trail = MessageAuditTrail(store.url, **TRAIL_OPTIONS)  # type: ignore[arg-type]
    await trail.initialize()
    pending = iter(messages)

    async def caller() -> None:
        for message in pending:
            await trail.log_message(message)

    try:
        await asyncio.gather(*(caller() for _ in range(API_CALLERS)))
    finally:
        await trail.close()


def _raw_row(message: Message, timestamp: Any) -> tuple[Any, ...]:
    return (
        message.message_id,
        message.from_agent,
        message.to_agent,
        message.message_type.value,
        message.priority.value,
        "PENDING",
        message.correlation_id,
        message.reply_to,
        json.dumps(message.payload),
        timestamp,
        None,
        message.ttl_seconds,
        0,
        None,
        None,
        None,
    )


_HASH = "0123456789abcdef" * 4


def _raw_entry(sequence: int, message: Message, timestamp: Any) -> tuple[Any, ...]:
    """A lifecycle entry for ``message`` (columns as ``EVENT_COLUMNS``; fixed strings in the hash columns)."""
    no_error = no_delivery = no_operation = None
    return (
        "default",
        sequence,
        "record",
        message.message_id,
        "PENDING",
        timestamp,
        0,
        no_error,
        no_delivery,
        no_operation,
        _HASH,  # record_digest
        chain.HASH_VERSION,
        _HASH,
        _HASH,
        _HASH,
    )


async def write_raw(
    store: Store, messages: list[Message], *, lifecycle: bool = False, batch_size: int = BATCH_SIZE
) -> None:
    if store.kind == "sqlite":
        _write_raw_sqlite(store, messages, lifecycle=lifecycle, batch_size=batch_size)
        return
    conn = await asyncpg.connect(store.dsn)
    try:
        for start in range(0, len(messages), batch_size):
            chunk = messages[start : start + batch_size]
            async with conn.transaction():
                records = [_raw_row(m, m.timestamp) for m in chunk]
                await conn.copy_records_to_table(TABLE_NAME, records=records, columns=COLUMNS)
                if lifecycle:
                    entries = [_raw_entry(start + n + 1, m, m.timestamp) for n, m in enumerate(chunk)]
                    await conn.copy_records_to_table(EVENTS_TABLE, records=entries, columns=EVENT_COLUMNS)
    finally:
        await conn.close()


def _write_raw_sqlite(store: Store, messages: list[Message], *, lifecycle: bool, batch_size: int) -> None:
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        insert = f"INSERT INTO {TABLE_NAME} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        insert_entry = (
            f"INSERT INTO {EVENTS_TABLE} ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
        )
        for start in range(0, len(messages), batch_size):
            chunk = messages[start : start + batch_size]
            times = [m.timestamp.replace(tzinfo=None).isoformat(sep=" ") for m in chunk]
            conn.execute("BEGIN")
            conn.executemany(insert, [_raw_row(m, t) for m, t in zip(chunk, times, strict=True)])
            if lifecycle:
                entries = [_raw_entry(start + n + 1, m, t) for n, (m, t) in enumerate(zip(chunk, times, strict=True))]
                conn.executemany(insert_entry, entries)
            conn.execute("COMMIT")
    finally:
        conn.close()


async def write_raw_same_rows(store: Store, messages: list[Message]) -> None:
    await write_raw(store, messages, lifecycle=True)


async def write_raw_same_rows_64(store: Store, messages: list[Message]) -> None:
    await write_raw(store, messages, lifecycle=True, batch_size=API_CALLERS)


async def write_seed_way(store: Store, messages: list[Message]) -> None:
    engine = create_async_engine(store.url)
    try:
        async with AsyncSession(engine) as session:
            for m in messages:
                session.add(
                    MessageAuditLog(
                        message_id=m.message_id,
                        from_agent=m.from_agent,
                        to_agent=m.to_agent,
                        message_type=m.message_type.value,
                        priority=m.priority.value,
                        status="PENDING",
                        correlation_id=m.correlation_id,
                        reply_to=m.reply_to,
                        payload_json=m.payload,
                        timestamp=m.timestamp,
                        ttl_seconds=m.ttl_seconds,
                        retry_count=0,
                    )
                )
                await session.commit()
    finally:
        await engine.dispose()


PATHS = {
    "writer": write_with_writer,
    "raw": write_raw,
    "raw_same_rows": write_raw_same_rows,
    "api": write_with_api,
    "raw_same_rows_64": write_raw_same_rows_64,
    "seed": write_seed_way,
}
