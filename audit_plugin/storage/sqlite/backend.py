"""SQLite specifics: aiosqlite for reads, one writer thread for writes, WAL journal.

Every write batch is one call into a thread of the backend's own that owns
the write connection (stdlib :mod:`sqlite3`): the batch write of
:mod:`audit_plugin.storage.batch_write` runs there from ``BEGIN IMMEDIATE`` to
``COMMIT``, each of its requests answered by a statement or two back to back
(this module is its SQLite dialect). Rows go in as
multi-row ``INSERT ... VALUES (...), (...)`` statements rather than
``executemany``: ``executemany`` takes Python's GIL back for every row, so
while the event loop's thread is busy building the next records it could
only crawl; a multi-row statement binds its parameters once and then runs
with the GIL released, so SQLite's work overlaps the record building
(``benchmarks/`` measures it). Reads go through SQLAlchemy's aiosqlite pool;
WAL lets them run beside the writer.

An in-memory database (``sqlite+aiosqlite:///:memory:``, or no path) is a
temporary file deleted at ``close()``: the reading connections and the
writer's must see the same database, which a private ``:memory:`` database
per connection would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import ColumnElement, Integer, cast, event, func
from sqlalchemy.engine import make_url

from audit_plugin.exceptions import AuditStoreError, InvalidFieldError, driver_message
from audit_plugin.model.records import StatusUpdate
from audit_plugin.model.transitions import FINAL_STATUS_VALUES
from audit_plugin.storage.backend import BucketUnit
from audit_plugin.storage.batch_write import (
    ENTRY_COLUMNS,
    EVENT_FIELDS,
    AppendEntries,
    ApplyUpdates,
    BatchWrite,
    Begin,
    Commit,
    InsertMissing,
    InsertNew,
    ReadHead,
    Request,
    Rollback,
    StoredIds,
    StoredOperations,
    run_sync,
)
from audit_plugin.storage.errors import is_unavailable
from audit_plugin.storage.integrity_schema import CHAINS_TABLE, EVENTS_TABLE
from audit_plugin.storage.schema import TABLE_NAME, audit_log
from audit_plugin.storage.sql import SQLBackend

T = TypeVar("T")

_BUCKET_FORMATS: dict[str, str] = {
    "minute": "%Y-%m-%d %H:%M:00",
    "hour": "%Y-%m-%d %H:00:00",
    "day": "%Y-%m-%d 00:00:00",
}
"""strftime patterns truncating the stored naive-UTC timestamp text to a bucket start."""

BUSY_TIMEOUT_MS = 5000
"""How long a connection waits on another writer's lock before "database is locked"."""

MAX_PARAMETERS = 32_766
"""SQLite's limit on bound parameters per statement (``SQLITE_MAX_VARIABLE_NUMBER`` since 3.32)."""

UPDATES_PER_STATEMENT = 1000
"""Status updates per ``UPDATE ... FROM (VALUES ...)`` statement (5 parameters each)."""

COLUMNS: tuple[str, ...] = tuple(column.name for column in audit_log.columns)
_DATETIME_INDEXES = (COLUMNS.index("timestamp"), COLUMNS.index("delivered_at"))
_in_column_order = operator.itemgetter(*COLUMNS)
_EVENT_DATETIME_INDEXES = (EVENT_FIELDS.index("at"), EVENT_FIELDS.index("delivered_at"))
_event_in_column_order = operator.itemgetter(*EVENT_FIELDS)

_IGNORING_STORED_IDS = " ON CONFLICT (message_id) DO NOTHING"
_RETURNING_INSERTED = " ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
_STORED_IDS = f"SELECT message_id FROM {TABLE_NAME} WHERE message_id IN (SELECT value FROM json_each(?))"
_STORED_OPERATIONS = (
    f"SELECT message_id, operation_id FROM {EVENTS_TABLE} "
    "WHERE operation_id IS NOT NULL AND message_id IN (SELECT value FROM json_each(?))"
)
_NOT_FINAL = " AND t.status NOT IN (" + ", ".join(f"'{value}'" for value in sorted(FINAL_STATUS_VALUES)) + ")"
_CHAIN_HEAD = f"SELECT sequence, entry_hash FROM {EVENTS_TABLE} WHERE chain_id = ? ORDER BY sequence DESC LIMIT 1"
_PRUNE_POINT = f"SELECT pruned_sequence, pruned_hash FROM {CHAINS_TABLE} WHERE chain_id = ?"


def _insert_statement(table: str, columns: Sequence[str], rows: int, suffix: str = "") -> str:
    placeholders = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([placeholders] * rows)}{suffix}"


def _update_from_values(count: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * count)
    return (
        f"UPDATE {TABLE_NAME} AS t SET status = u.column2, delivered_at = COALESCE(u.column3, t.delivered_at), "
        "error_message = COALESCE(u.column4, t.error_message), retry_count = COALESCE(u.column5, t.retry_count) "
        f"FROM (VALUES {values}) AS u WHERE t.message_id = u.column1{_NOT_FINAL} RETURNING message_id"
    )


def _statement_sizes(count: int, columns: int) -> Iterator[tuple[int, int]]:
    """``(start, size)`` pieces of ``count`` rows, each as large as SQLite's parameter limit allows.

    Few statements per batch matter more than reusing prepared ones: after
    each statement the writer thread must take the GIL back from the event
    loop's thread. Batches of the same size (the common case under load:
    ``batch_size``) still reuse their cached statement.
    """
    most = MAX_PARAMETERS // columns
    for start in range(0, count, most):
        yield start, min(most, count - start)


def _with_async_driver(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if parsed.drivername != "sqlite+aiosqlite":
        raise InvalidFieldError(
            "database_url", f"SQLite driver {parsed.drivername!r} is not supported; use sqlite+aiosqlite:///path.db"
        )
    return url


class SQLiteBackend(SQLBackend):
    """An audit store in one SQLite file (WAL, ``synchronous=NORMAL``)."""

    name = "sqlite"

    def __init__(self, url: str, **engine_options: Any) -> None:
        url = _with_async_driver(url)
        self._temporary: str | None = None
        database = make_url(url).database
        if not database or database == ":memory:":
            handle, self._temporary = tempfile.mkstemp(prefix="audit-", suffix=".db")
            os.close(handle)
            url = make_url(url).set(database=self._temporary).render_as_string(hide_password=False)
        super().__init__(url, **engine_options)
        self.path = make_url(url).database
        event.listen(self.engine.sync_engine, "connect", _configure_connection)
        event.listen(self.engine.sync_engine, "begin", _begin)
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sqlite-writer")
        self._write_db: sqlite3.Connection | None = None
        """The writer thread's connection (used only on that thread)."""

    async def initialize(self) -> None:
        """Open the file on the writer thread first, then create what is missing.

        A file that cannot be opened (no such directory, no permission) fails
        here, in plain ``sqlite3``, before aiosqlite is asked to connect: a
        failed aiosqlite connect leaves its worker thread to report to an
        event loop that may be closed by then ("Event loop is closed").
        """
        try:
            await self.in_writer_thread(lambda db: None)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot open the audit store at {self!r}: {driver_message(exc)}") from exc
        await super().initialize()

    # -- the writer thread ---------------------------------------------------------------

    async def in_writer_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the writer thread with its connection (opened on first use).

        If ``work`` raises, a transaction it left open is rolled back; a
        connection that cannot even do that is closed and the next call
        opens a new one.
        """
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, self._run_on_writer, work)

    def _run_on_writer(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._write_db is None:
            self._write_db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            _configure_connection(self._write_db, None)
        db = self._write_db
        try:
            return work(db)
        except BaseException:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                self._write_db = None
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            raise

    # -- the batch write's dialect (see audit_plugin.storage.batch_write) ---------------------------

    one_statement_max = 0
    """Never: SQLite has no data-modifying CTEs; the records and the updates are two statements."""

    async def write(self, batch: BatchWrite) -> set[str]:
        # The batch was prepared on the event loop's thread (folding, digests, every row as SQLite
        # parameters), beside the writer thread's SQLite work; its transaction is one hand-off.
        return await self.in_writer_thread(lambda db: run_sync(batch, functools.partial(_answer, db)))

    def record_values(self, row: Mapping[str, Any]) -> list[Any]:
        return _sqlite_values(row, _in_column_order, _DATETIME_INDEXES)

    def event_values(self, event: Mapping[str, Any]) -> list[Any]:
        return _sqlite_values(event, _event_in_column_order, _EVENT_DATETIME_INDEXES)

    def is_transient(self, exc: BaseException) -> bool:
        # "database is locked", disk full, I/O errors are sqlite3.OperationalError; constraint failures are not.
        return is_unavailable(exc)

    async def close(self) -> None:
        try:
            await super().close()
            if self._write_db is not None:
                await self.in_writer_thread(lambda db: db.close())
                self._write_db = None
        finally:
            self._writer_thread.shutdown(wait=False)
            if self._temporary is not None:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self._temporary + suffix)

    def seconds_between(self, start: Any, end: Any) -> ColumnElement[float]:
        # SQLite's date functions keep milliseconds only; timestamps are stored as
        # "YYYY-MM-DD HH:MM:SS.ffffff", so whole seconds and microseconds are taken apart.
        whole = func.round(
            (func.julianday(func.substr(end, 1, 19)) - func.julianday(func.substr(start, 1, 19))) * 86400
        )
        micros = cast(func.substr(end, 21, 6), Integer) - cast(func.substr(start, 21, 6), Integer)
        return whole + micros / 1_000_000.0

    def time_bucket(self, column: Any, unit: BucketUnit) -> ColumnElement[Any]:
        return func.strftime(_BUCKET_FORMATS[unit], column)

    # SQLite's LIKE ignores ASCII case; GLOB matches case by case, as PostgreSQL's LIKE does (and a
    # prefix GLOB can use the id's index).
    def id_starts(self, column: ColumnElement[str], start: str) -> ColumnElement[bool]:
        return column.op("GLOB")(_glob_literal(start) + "*")

    def id_ends(self, column: ColumnElement[str], end: str) -> ColumnElement[bool]:
        return column.op("GLOB")("*" + _glob_literal(end))


def _glob_literal(text: str) -> str:
    """``text`` as a GLOB pattern matching only itself: ``*``, ``?`` and ``[`` each in brackets."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in text)


def _insert(
    db: sqlite3.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], suffix: str = ""
) -> None:
    """Insert ``rows`` (values in ``columns`` order) with multi-row statements."""
    for start, size in _statement_sizes(len(rows), len(columns)):
        parameters = [value for row in rows[start : start + size] for value in row]
        db.execute(_insert_statement(table, columns, size, suffix), parameters)


def _insert_returning(db: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> set[str]:
    """Insert those of ``rows`` whose message is not stored; return their ids."""
    inserted: set[str] = set()
    for start, size in _statement_sizes(len(rows), len(COLUMNS)):
        parameters = [value for row in rows[start : start + size] for value in row]
        statement = _insert_statement(TABLE_NAME, COLUMNS, size, _RETURNING_INSERTED)
        inserted.update(row[0] for row in db.execute(statement, parameters))
    return inserted


def _answer(db: sqlite3.Connection, request: Request) -> Any:
    """Answer one request of the batch write (see :mod:`audit_plugin.storage.batch_write`) on the writer thread."""
    match request:
        case Begin():
            db.execute("BEGIN IMMEDIATE")
        case Commit():
            db.execute("COMMIT")
        case Rollback():
            db.execute("ROLLBACK")
        case InsertNew(records):
            before = db.total_changes
            _insert(db, TABLE_NAME, COLUMNS, records, _IGNORING_STORED_IDS)
            return db.total_changes - before == len(records)
        case InsertMissing(records):
            return _insert_returning(db, records)
        case ApplyUpdates(updates):
            return _apply_updates(db, updates)
        case StoredIds(ids):
            return {row[0] for row in db.execute(_STORED_IDS, (orjson.dumps(ids),))}
        case StoredOperations(ids):
            return set(db.execute(_STORED_OPERATIONS, (orjson.dumps(ids),)).fetchall())
        case ReadHead(chain_id):
            last = db.execute(_CHAIN_HEAD, (chain_id,)).fetchone()
            return last if last is not None else db.execute(_PRUNE_POINT, (chain_id,)).fetchone()
        case AppendEntries(rows):
            try:
                _insert(db, EVENTS_TABLE, ENTRY_COLUMNS, rows)
            except sqlite3.IntegrityError:
                return False
            return True
    return None


def _apply_updates(db: sqlite3.Connection, updates: Sequence[StatusUpdate]) -> set[str]:
    """Apply ``updates`` (at most one per message) to stored rows that are not final; return their ids."""
    found: set[str] = set()
    for start in range(0, len(updates), UPDATES_PER_STATEMENT):
        chunk = updates[start : start + UPDATES_PER_STATEMENT]
        parameters = [
            value
            for u in chunk
            for value in (
                u.message_id,
                u.status.value,
                _utc_text(u.delivered_at) if u.delivered_at is not None else None,
                u.error_message,
                u.retry_count,
            )
        ]
        found.update(row[0] for row in db.execute(_update_from_values(len(chunk)), parameters))
    return found


def _sqlite_values(
    row: Mapping[str, Any], in_column_order: operator.itemgetter[Any], datetime_indexes: tuple[int, ...]
) -> list[Any]:
    """The row as SQLite parameters, datetimes in the text form :class:`UTCDateTime` stores."""
    values = list(in_column_order(row))
    for index in datetime_indexes:
        moment = values[index]
        if moment is not None:
            values[index] = _utc_text(moment)
    return values


def _utc_text(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}"
    )


def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _begin), instead of the driver's deferred implicit one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _begin(conn: Any) -> None:
    """Start transactions explicitly; writers take the write lock at once (``BEGIN IMMEDIATE``).

    A writer must hold the lock before it reads the chain's head, or two
    writers could both extend the same head (a fork). Readers use a plain
    deferred ``BEGIN`` and never block writers (WAL).
    """
    options = conn.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT":
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("audit_writer") else "BEGIN")
