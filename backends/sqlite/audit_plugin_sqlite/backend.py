"""SQLite specifics: aiosqlite driver, WAL journal, idempotent executemany insert.

A batch's rows go in with one ``executemany`` of
``INSERT ... ON CONFLICT (message_id) DO NOTHING`` and its status updates
with one ``UPDATE ... FROM (VALUES ...) RETURNING`` on the driver connection,
inside the SQLAlchemy transaction (the Core statements' per-row parameter
processing cost about as much as SQLite's own work; see ``benchmarks/``).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, cast, event, func
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import StaticPool

from audit_plugin.backend import BucketUnit
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.integrity_schema import EVENTS_TABLE, events
from audit_plugin.ledger import PendingEntry
from audit_plugin.records import StatusUpdate
from audit_plugin.schema import TABLE_NAME, audit_log
from audit_plugin.sql import SQLBackend

_BUCKET_FORMATS: dict[str, str] = {
    "minute": "%Y-%m-%d %H:%M:00",
    "hour": "%Y-%m-%d %H:00:00",
    "day": "%Y-%m-%d 00:00:00",
}
"""strftime patterns truncating the stored naive-UTC timestamp text to a bucket start."""

BUSY_TIMEOUT_MS = 5000
"""How long a connection waits on another writer's lock before "database is locked"."""

COLUMNS: tuple[str, ...] = tuple(column.name for column in audit_log.columns)
_INSERT_IGNORING_DUPLICATES = (
    f"INSERT INTO {TABLE_NAME} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (message_id) DO NOTHING"
)
_DATETIME_INDEXES = (COLUMNS.index("timestamp"), COLUMNS.index("delivered_at"))
_in_column_order = operator.itemgetter(*COLUMNS)
EVENT_COLUMNS: tuple[str, ...] = tuple(column.name for column in events.columns)
_INSERT_EVENTS = (
    f"INSERT INTO {EVENTS_TABLE} ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
_EVENT_DATETIME_INDEXES = (EVENT_COLUMNS.index("at"), EVENT_COLUMNS.index("delivered_at"))
_event_in_column_order = operator.itemgetter(*EVENT_COLUMNS)

UPDATES_PER_STATEMENT = 1000
"""Status updates per ``UPDATE ... FROM (VALUES ...)`` statement (5 parameters each; SQLite allows 32,766)."""


def _update_from_values(count: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * count)
    return (
        f"UPDATE {TABLE_NAME} AS t SET status = u.column2, delivered_at = COALESCE(u.column3, t.delivered_at), "
        "error_message = COALESCE(u.column4, t.error_message), retry_count = COALESCE(u.column5, t.retry_count) "
        f"FROM (VALUES {values}) AS u WHERE t.message_id = u.column1 RETURNING message_id"
    )


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
        super().__init__(_with_async_driver(url), **engine_options)
        event.listen(self.engine.sync_engine, "connect", _configure_connection)
        event.listen(self.engine.sync_engine, "begin", _begin)

    def engine_options(self) -> dict[str, Any]:
        database = make_url(self.url).database
        if not database or database == ":memory:":
            # One shared connection, or every pooled connection would see its own empty database.
            return {"poolclass": StaticPool}
        return {}

    async def insert_rows(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        driver = (await conn.get_raw_connection()).driver_connection
        await driver.executemany(
            _INSERT_IGNORING_DUPLICATES, [_sqlite_values(row, _in_column_order, _DATETIME_INDEXES) for row in rows]
        )

    async def apply_updates(self, conn: AsyncConnection, updates: Sequence[StatusUpdate]) -> set[str]:
        driver = (await conn.get_raw_connection()).driver_connection
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
            found.update(row[0] for row in await driver.execute_fetchall(_update_from_values(len(chunk)), parameters))
        return found

    async def append_lifecycle(self, conn: AsyncConnection, entries: Sequence[PendingEntry]) -> None:
        if not entries:
            return
        rows, _ = self.ledger.link(await self.ledger.head(conn), entries)
        driver = (await conn.get_raw_connection()).driver_connection
        await driver.executemany(
            _INSERT_EVENTS, [_sqlite_values(row, _event_in_column_order, _EVENT_DATETIME_INDEXES) for row in rows]
        )

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


def _sqlite_values(
    row: dict[str, Any], in_column_order: operator.itemgetter[Any], datetime_indexes: tuple[int, ...]
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
