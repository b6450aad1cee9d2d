"""PostgreSQL specifics: asyncpg driver, json payloads (the text kept verbatim), COPY bulk writes.

Batches go straight through the asyncpg connection under the SQLAlchemy
pool (see ``benchmarks/`` for the measurements behind the choice). The batch
write itself (optimistic write, conflicts, the careful write, the chain head)
is :mod:`audit_plugin.storage.batch_write`'s; this module is its PostgreSQL dialect,
answering each request with the statements below. A batch is one
transaction holding the chain's advisory lock, and in the common case four
statements (``BEGIN`` and the lock, the records, the lifecycle entries,
``COMMIT``):

* small batches (the common case under ``"commit"`` durability, where each
  batch is what arrived during the previous commit): one statement,
  ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING RETURNING`` and
  the status ``UPDATE`` as data-modifying CTEs; the ids it returns say which
  records were new;
* large batches, inserts: binary ``COPY`` into the table, assuming no record
  is stored yet; a batch retried after its commit acknowledgement was lost
  meets a unique violation, rolls back, and is written again with the stored
  ids filtered out first, so each ``message_id`` is stored once;
* large batches, status updates: folded into the inserted row when the
  message is in the same batch (see :class:`~audit_plugin.storage.batch_write.FoldedBatch`),
  otherwise one ``UPDATE ... FROM unnest(...)`` per batch;
* lifecycle entries: ``COPY``, linked after the chain head this writer
  committed last; if another writer (or a retention run) moved the head, the
  sequence number is taken, and the batch is written again after reading
  the head under the lock.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import operator
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, Float, cast, func, select, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import await_only

from audit_plugin.exceptions import InvalidFieldError, StoreUnavailableError, driver_message
from audit_plugin.model.records import AuditStatistics, StatusUpdate
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
    InsertAndUpdate,
    InsertMissing,
    InsertNew,
    ReadHead,
    Request,
    Rollback,
    StoredIds,
    StoredOperations,
    run_async,
)
from audit_plugin.storage.errors import is_unavailable
from audit_plugin.storage.integrity_schema import CHAINS_TABLE, EVENTS_TABLE
from audit_plugin.storage.schema import TABLE_NAME, audit_log
from audit_plugin.storage.sql import delivered_in_window
from audit_plugin_postgres import fragments, rollups, tls
from audit_plugin_postgres.partitioned import PartitionedStore

COLUMNS: tuple[str, ...] = tuple(column.name for column in audit_log.columns)
_as_record = operator.itemgetter(*COLUMNS)
"""A row dict as a tuple in column order (in C: this runs once per stored message)."""
_NOT_FINAL = "t.status NOT IN (" + ", ".join(f"'{value}'" for value in sorted(FINAL_STATUS_VALUES)) + ")"
"""Updates apply to rows whose status is not final (see :mod:`audit_plugin.model.transitions`)."""
_UPDATE_FROM_ARRAYS = f"""
UPDATE {TABLE_NAME} AS t SET
    status = u.status,
    delivered_at = COALESCE(u.delivered_at, t.delivered_at),
    error_message = COALESCE(u.error_message, t.error_message),
    retry_count = COALESCE(u.retry_count, t.retry_count)
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int4[])
    AS u(message_id, status, delivered_at, error_message, retry_count)
WHERE t.message_id = u.message_id AND {_NOT_FINAL}
RETURNING t.message_id
"""

_SQL_TYPES = {"payload_json": "json", "timestamp": "timestamptz", "delivered_at": "timestamptz"}
_SQL_TYPES |= {"ttl_seconds": "int4", "retry_count": "int4"}
_UNNEST_ROWS = ", ".join(f"${n}::{_SQL_TYPES.get(name, 'text')}[]" for n, name in enumerate(COLUMNS, start=1))
_U = len(COLUMNS)
_INSERT_AND_UPDATE = f"""
WITH inserted AS (
    INSERT INTO {TABLE_NAME} ({", ".join(COLUMNS)}) SELECT * FROM unnest({_UNNEST_ROWS})
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
), updated AS (
    UPDATE {TABLE_NAME} AS t SET
        status = u.status,
        delivered_at = COALESCE(u.delivered_at, t.delivered_at),
        error_message = COALESCE(u.error_message, t.error_message),
        retry_count = COALESCE(u.retry_count, t.retry_count)
    FROM unnest(${_U + 1}::text[], ${_U + 2}::text[], ${_U + 3}::timestamptz[], ${_U + 4}::text[], ${_U + 5}::int4[])
        AS u(message_id, status, delivered_at, error_message, retry_count)
    WHERE t.message_id = u.message_id AND {_NOT_FINAL}
    RETURNING t.message_id
)
SELECT true AS inserted, message_id FROM inserted UNION ALL SELECT false, message_id FROM updated
"""
_INSERT_RETURNING = f"""
INSERT INTO {TABLE_NAME} ({", ".join(COLUMNS)}) SELECT * FROM unnest({_UNNEST_ROWS})
ON CONFLICT (message_id) DO NOTHING
RETURNING message_id
"""

ONE_STATEMENT_MAX = 256
"""Batches up to this many operations go in one ``INSERT ... unnest`` + ``UPDATE`` statement (one round
trip); larger ones by ``COPY`` in a transaction (more round trips, less work per row)."""

WRITER_SESSION = "SET plan_cache_mode = force_custom_plan"
"""Set on the writer's connection: plan each batch statement for the batch and table it meets.

The batch statements are prepared and run thousands of times on one
connection. With the default plan cache mode PostgreSQL switches, after five
runs, to a generic plan costed for the table as it was then; planned while
the table is young, that plan hash-joins the batch against a full scan of
``message_audit_log``, and it stays cached while the table grows (until an
``ANALYZE`` happens to invalidate it), so each batch costs more than the one
before. A custom plan sees the batch's array sizes and the table's current
size and finds the rows through the primary key whatever the table's
statistics say; planning these statements is cheap next to running them.
"""

CONNECTION_ERRORS = (
    asyncpg.InterfaceError,  # e.g. ConnectionDoesNotExistError: the socket closed under us
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, crash, cannot connect now
    asyncpg.exceptions.InternalClientError,  # protocol state broken by an operation cut off mid-way
    OSError,
)
"""asyncpg errors meaning the connection is gone or the server is going away: retry on a new connection."""

TRANSIENT_SQLSTATE_PREFIXES = ("08", "40001", "40P01", "53", "55P03", "57")
"""SQLSTATEs worth retrying: connection exceptions, serialization failure, deadlock,
insufficient resources (disk full, out of memory, too many connections), lock not
available, operator intervention (server shutting down or starting up, query cancelled)."""


AUTHENTICATION_SQLSTATE_PREFIX = "28"
"""SQLSTATE class 28, invalid authorization specification: wrong password, no ``pg_hba.conf`` entry."""


def connection_refusal(exc: BaseException) -> str | None:
    """Why PostgreSQL refused the connection (credentials, TLS), from the driver's error; ``None`` for others.

    The reason is the driver's own first line (it names the user, never the
    password), or a sentence for a TLS failure.
    """
    cause: BaseException | None = exc
    while cause is not None:
        original = getattr(cause, "orig", None) or cause
        sqlstate = getattr(original, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(AUTHENTICATION_SQLSTATE_PREFIX):
            return driver_message(original) or "authentication failed"
        if isinstance(original, ssl.SSLCertVerificationError):
            return f"TLS certificate check failed: {original.verify_message or 'not trusted'}"
        if isinstance(original, ssl.SSLError):
            return f"TLS failed: {original.reason or type(original).__name__}"
        if isinstance(original, ConnectionError) and "rejected SSL upgrade" in str(original):
            return "the server does not accept TLS (sslmode requires it)"
        cause = cause.__cause__ if cause.__cause__ is not cause else None
    return None


def _with_async_driver(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if parsed.drivername != "postgresql+asyncpg":
        raise InvalidFieldError(
            "database_url",
            f"PostgreSQL driver {parsed.drivername!r} is not supported; use postgresql+asyncpg://user@host/db",
        )
    return url


def _ping(connection: asyncpg.Connection) -> bool:
    """The pool's liveness check: one round trip, ``SELECT 1`` by the simple query protocol (safe behind a
    transaction-mode PgBouncer). The driver's own opens and rolls back a transaction around it: three round trips
    before every read. A connection that fails it (closed, cut off, refused) is replaced."""
    try:
        await_only(connection.execute("SELECT 1"))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError):
        return False
    return True


def _ping_in_one_round_trip(dialect: Dialect) -> None:
    """Replace the driver's ping with :func:`_ping` for ``dialect`` (one engine's own) alone."""
    dialect.do_ping = lambda dbapi_connection: _ping(dialect.get_driver_connection(dbapi_connection))  # type: ignore[method-assign]


class PostgresBackend(PartitionedStore):
    """An audit store in a PostgreSQL database (payload as ``json``: the text kept verbatim).

    Options (keywords, or query parameters of ``url``) choose the layout of
    a new database: see :class:`~audit_plugin_postgres.partitioned.PartitionedStore`.
    """

    name = "postgresql"

    def __init__(self, url: str, **engine_options: Any) -> None:
        url, ssl_argument = tls.split_ssl(_with_async_driver(url))  # sslmode=, sslrootcert=...: see tls
        if ssl_argument is not None:
            engine_options["connect_args"] = {**engine_options.get("connect_args", {}), "ssl": ssl_argument}
        super().__init__(url, **engine_options)
        for engine in (self.engine, self.planned_once_engine):
            _ping_in_one_round_trip(engine.dialect)
        self._write_connection: AsyncConnection | None = None

    def connection_refusal(self, exc: BaseException) -> str | None:
        return connection_refusal(exc)

    def engine_options(self) -> dict[str, Any]:
        # Connections die when the server restarts; check each one out alive.
        return {"pool_pre_ping": True}

    def seconds_between(self, start: Any, end: Any) -> ColumnElement[float]:
        return func.extract("epoch", end - start)

    def time_bucket(self, column: Any, unit: BucketUnit) -> ColumnElement[Any]:
        return func.date_trunc(unit, column, "UTC")

    async def delivery_percentiles(
        self, start_time: datetime | None, end_time: datetime | None, percentiles: Sequence[float]
    ) -> dict[float, float | None]:
        # One pass with the native nearest-rank aggregate instead of a sort per percentile.
        latency = cast(self.seconds_between(audit_log.c.timestamp, audit_log.c.delivered_at), Float)
        columns = [func.percentile_disc(p / 100).within_group(latency) for p in percentiles]
        async with self.engine.connect() as conn:
            narrowing = await self.narrow_to_time(conn, start_time, end_time)
            delivered = [*delivered_in_window(start_time, end_time), *narrowing.window]
            row = (await conn.execute(select(*columns).where(*delivered))).one()
        return {p: None if value is None else float(value) for p, value in zip(percentiles, row, strict=True)}

    async def initialize(self) -> None:
        await super().initialize()
        async with self.write_transaction() as conn:
            await rollups.install_rollups(conn)
            await fragments.create_reversed_id_index(conn)

    def id_starts(self, column: ColumnElement[str], start: str) -> ColumnElement[bool]:
        return fragments.starting_with(column, start)

    def id_ends(self, column: ColumnElement[str], end: str) -> ColumnElement[bool]:
        return fragments.ending_with(column, end)

    async def after_partitions_dropped(self, conn: AsyncConnection, before: datetime) -> None:
        # Dropped partitions fire no trigger: their hours leave the rollups here, in the same transaction.
        await rollups.forget_rollups_before(conn, before)

    async def statistics(self, start_time: datetime | None, end_time: datetime | None) -> AuditStatistics:
        # Whole hours from the rollups the triggers keep; only the partial hours at the edges read records.
        async with self.engine.connect() as conn:
            return await rollups.statistics(conn, start_time, end_time)

    async def lock_chain(self, conn: AsyncConnection, chain_id: str) -> None:
        """Serialise writers of one chain with a transaction-scoped advisory lock."""
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": chain_lock_key(chain_id)})

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """The connection the writer uses, kept between batches (one writer task per trail).

        Keeping it saves a pool checkout, a liveness ping and a reset per
        batch; a new one gets :data:`WRITER_SESSION` first. If a batch fails
        the connection is discarded, not returned to the pool: one cut off
        mid-operation may be left in a state no later statement can use, so
        the retry starts on a fresh one.
        """
        try:
            if self._write_connection is None:
                try:
                    self._write_connection = await self.engine.connect()
                    driver = (await self._write_connection.get_raw_connection()).driver_connection
                    await driver.execute(WRITER_SESSION)
                except Exception as exc:  # failing to connect is never the batch's fault: the store is unavailable
                    reason = driver_message(exc) or type(exc).__name__
                    raise StoreUnavailableError(f"cannot connect to PostgreSQL: {reason}") from exc
            yield self._write_connection
        except BaseException:
            connection, self._write_connection = self._write_connection, None
            if connection is None:
                raise
            with contextlib.suppress(Exception):
                await connection.invalidate()
            with contextlib.suppress(Exception):
                await connection.close()
            raise

    async def close(self) -> None:
        if self._write_connection is not None:
            connection, self._write_connection = self._write_connection, None
            with contextlib.suppress(Exception):
                await connection.close()
        await super().close()

    # -- the batch write's dialect (see audit_plugin.storage.batch_write) ---------------------------

    @property
    def one_statement_max(self) -> int:
        return ONE_STATEMENT_MAX

    async def write(self, batch: BatchWrite) -> set[str]:
        async with self.writing() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            try:
                return await run_async(batch, functools.partial(_answer, driver))
            except BaseException:
                if not driver.is_closed():
                    with contextlib.suppress(Exception):  # the connection may be gone; the first error is what matters
                        await driver.execute("ROLLBACK")
                raise

    def record_values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return _as_record(row)  # type: ignore[no-any-return]

    def event_values(self, event: Mapping[str, Any]) -> tuple[Any, ...]:
        return _event_values(event)  # type: ignore[no-any-return]

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, CONNECTION_ERRORS) or is_unavailable(exc):
            return True
        sqlstate = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(TRANSIENT_SQLSTATE_PREFIXES)


async def _answer(driver: asyncpg.Connection, request: Request) -> Any:
    """Answer one request of the batch write (:mod:`audit_plugin.storage.batch_write`) on the writer's connection."""
    match request:
        case Begin(chain_ids):  # every shard's lock, in the order given (the same for every writer)
            locks = "".join(f"; SELECT pg_advisory_xact_lock({chain_lock_key(chain_id)})" for chain_id in chain_ids)
            await driver.execute(f"BEGIN{locks}")
        case Commit():
            await driver.execute("COMMIT")
        case Rollback():
            await driver.execute("ROLLBACK")
        case InsertAndUpdate(records, updates):
            return await _write_in_one_statement(driver, records, updates)
        case InsertNew(records):
            try:
                if records:
                    await driver.copy_records_to_table(TABLE_NAME, records=records, columns=COLUMNS)
            except asyncpg.UniqueViolationError:
                return False
            return True
        case InsertMissing(records):
            return await _insert_returning(driver, records)
        case ApplyUpdates(updates):
            return {row[0] for row in await driver.fetch(_UPDATE_FROM_ARRAYS, *_update_arrays(updates))}
        case StoredIds(ids):
            return {row[0] for row in await driver.fetch(_STORED_IDS, ids)}
        case StoredOperations(ids):
            return {(row[0], row[1]) for row in await driver.fetch(_STORED_OPERATIONS, ids)}
        case ReadHead(chain_id):
            last = await driver.fetchrow(_CHAIN_HEAD, chain_id)
            return last if last is not None else await driver.fetchrow(_PRUNE_POINT, chain_id)
        case AppendEntries(rows):
            try:
                await driver.copy_records_to_table(EVENTS_TABLE, records=rows, columns=ENTRY_COLUMNS)
            except asyncpg.UniqueViolationError:
                return False
            return True
    return None


_STORED_IDS = f"SELECT message_id FROM {TABLE_NAME} WHERE message_id = ANY($1::text[])"
_STORED_OPERATIONS = (
    f"SELECT message_id, operation_id FROM {EVENTS_TABLE} "
    "WHERE operation_id IS NOT NULL AND message_id = ANY($1::text[])"
)
_CHAIN_HEAD = f"SELECT sequence, entry_hash FROM {EVENTS_TABLE} WHERE chain_id = $1 ORDER BY sequence DESC LIMIT 1"
_PRUNE_POINT = f"SELECT pruned_sequence, pruned_hash FROM {CHAINS_TABLE} WHERE chain_id = $1"
_event_values = operator.itemgetter(*EVENT_FIELDS)


def chain_lock_key(chain_id: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``chain_id``."""
    digest = hashlib.sha256(b"audit-plugin/chain-lock\x00" + chain_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _update_arrays(updates: Sequence[StatusUpdate]) -> list[list[Any]]:
    return [
        [u.message_id for u in updates],
        [u.status.value for u in updates],
        [u.delivered_at for u in updates],
        [u.error_message for u in updates],
        [u.retry_count for u in updates],
    ]


async def _write_in_one_statement(
    driver: asyncpg.Connection, records: Sequence[tuple[Any, ...]], updates: Sequence[StatusUpdate]
) -> tuple[set[str], set[str]]:
    """Insert and update in one statement (one round trip); return the inserted ids and the updated ids.

    The ``UPDATE`` sees the table as it was before the statement, so of the
    updates of rows in this batch it touches only rows whose insert was
    skipped as already stored: exactly the ones that still need it.
    """
    row_arrays = [[record[index] for record in records] for index in range(len(COLUMNS))]
    result = await driver.fetch(_INSERT_AND_UPDATE, *row_arrays, *_update_arrays(updates))
    return {row[1] for row in result if row[0]}, {row[1] for row in result if not row[0]}


async def _insert_returning(driver: asyncpg.Connection, records: Sequence[tuple[Any, ...]]) -> set[str]:
    """Insert those of ``records`` whose message is not stored (inside the caller's transaction); return their ids."""
    row_arrays = [[record[index] for record in records] for index in range(len(COLUMNS))]
    return {row[0] for row in await driver.fetch(_INSERT_RETURNING, *row_arrays)}
