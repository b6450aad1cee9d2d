"""PostgreSQL specifics: asyncpg driver, jsonb payloads, COPY bulk writes.

Batches go straight through the asyncpg connection under the SQLAlchemy
pool (see ``benchmarks/`` for the measurements behind the choice). A batch
is one transaction holding the chain's advisory lock, and in the common case
four statements (``BEGIN`` and the lock, the records, the lifecycle entries,
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
  message is in the same batch (see :class:`~audit_plugin.sql.FoldedBatch`),
  otherwise one ``UPDATE ... FROM unnest(...)`` per batch;
* lifecycle entries: ``COPY``, linked after the chain head this writer
  committed last; if another writer (or a retention run) moved the head, the
  sequence number is taken, and the batch is written again after reading
  the head under the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, Float, cast, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_plugin.backend import BucketUnit
from audit_plugin.exceptions import InvalidFieldError, driver_message
from audit_plugin.integrity_schema import CHAINS_TABLE, EVENTS_TABLE
from audit_plugin.ledger import BOUND_EVENT_FIELDS, LINKED_COLUMNS, ChainHead, LedgerBatch, PendingEntry
from audit_plugin.records import StatusUpdate
from audit_plugin.schema import TABLE_NAME, audit_log
from audit_plugin.sql import FoldedBatch, delivered_in_window
from audit_plugin.transitions import FINAL_STATUS_VALUES, distinct_operations, operations
from audit_plugin_postgres.partitioned import PartitionedStore

COLUMNS: tuple[str, ...] = tuple(column.name for column in audit_log.columns)
_as_record = operator.itemgetter(*COLUMNS)
"""A row dict as a tuple in column order (in C: this runs once per stored message)."""
_ID = COLUMNS.index("message_id")
_NOT_FINAL = "t.status NOT IN (" + ", ".join(f"'{value}'" for value in sorted(FINAL_STATUS_VALUES)) + ")"
"""Updates apply to rows whose status is not final (see :mod:`audit_plugin.transitions`)."""
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

_SQL_TYPES = {"payload_json": "jsonb", "timestamp": "timestamptz", "delivered_at": "timestamptz"}
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


class PostgresBackend(PartitionedStore):
    """An audit store in a PostgreSQL database (payload as ``jsonb``).

    Options (keywords, or query parameters of ``url``) choose the layout of
    a new database: see :class:`~audit_plugin_postgres.partitioned.PartitionedStore`.
    """

    name = "postgresql"

    def __init__(self, url: str, **engine_options: Any) -> None:
        super().__init__(_with_async_driver(url), **engine_options)
        self._write_connection: AsyncConnection | None = None

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
            row = (await conn.execute(select(*columns).where(*delivered_in_window(start_time, end_time)))).one()
        return {p: None if value is None else float(value) for p, value in zip(percentiles, row, strict=True)}

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
                except DBAPIError as exc:  # failing to connect is never the batch's fault: the store is unavailable
                    raise ConnectionError(f"cannot connect to PostgreSQL: {driver_message(exc)}") from exc
                driver = (await self._write_connection.get_raw_connection()).driver_connection
                await driver.execute(WRITER_SESSION)
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

    async def write_batch(self, rows: Sequence[dict[str, Any]], updates: Sequence[StatusUpdate]) -> set[str]:
        batch = FoldedBatch.of(rows, updates)
        lifecycle = self.ledger.prepare(rows, batch.updates)
        records = {row["message_id"]: _as_record(row) for row in batch.rows}
        update_ids = {u.message_id for u in updates}
        async with self.writing() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            try:
                try:
                    return await self._write(driver, rows, records, batch, lifecycle, update_ids, optimistic=True)
                except _Conflict:
                    return await self._write(driver, rows, records, batch, lifecycle, update_ids, optimistic=False)
            except CONNECTION_ERRORS as exc:  # writing() discards the connection
                raise ConnectionError(f"PostgreSQL connection lost: {type(exc).__name__}: {exc}") from exc

    async def _write(
        self,
        driver: asyncpg.Connection,
        rows: Sequence[dict[str, Any]],
        records: dict[str, tuple[Any, ...]],
        batch: FoldedBatch,
        lifecycle: LedgerBatch,
        update_ids: set[str],
        *,
        optimistic: bool,
    ) -> set[str]:
        """One batch in one transaction; ``optimistic``: no record stored yet (but fallback ones), no operation id
        stored yet, the chain head kept from last time.

        Raises :class:`_Conflict` (after rolling back) when an assumption fails.
        Returns the ids among ``update_ids`` that are stored.
        """
        kept_head, self.ledger.kept_head = self.ledger.kept_head, None
        chain_id = self.ledger.chain_id
        await driver.execute(f"BEGIN; SELECT pg_advisory_xact_lock({chain_lock_key(chain_id)})")
        try:
            stored: set[str] = set()
            if not optimistic:
                looked_up = [*records, *(update_ids - records.keys())]
                stored = {row[0] for row in await driver.fetch(_STORED_IDS, looked_up)} if looked_up else set()
                with_operations = [message_id for message_id, _ in operations(batch.updates)]
                if with_operations:
                    applied = {(row[0], row[1]) for row in await driver.fetch(_STORED_OPERATIONS, with_operations)}
                    distinct = distinct_operations(batch.updates, applied)
                    if len(distinct) != len(batch.updates):
                        batch = FoldedBatch.of(rows, distinct)
                        lifecycle = lifecycle.only(batch.updates)
                        records = {row["message_id"]: _as_record(row) for row in batch.rows}
            new_records = [record for message_id, record in records.items() if message_id not in stored]
            if len(new_records) + len(batch.rest) + len(batch.folded) <= ONE_STATEMENT_MAX:
                pending = batch.rest + batch.updates_of(records)
                inserted, opened = await _write_in_one_statement(driver, new_records, pending)
                taken = set(inserted)
                stored.update(message_id for message_id in records if message_id not in taken)  # insert skipped
            else:
                try:
                    if optimistic and batch.fallback_ids:
                        fallback = [records[message_id] for message_id in records if message_id in batch.fallback_ids]
                        taken = await _insert_returning(driver, fallback)
                        stored = {message_id for message_id in batch.fallback_ids if message_id not in taken}
                        new_records = [r for message_id, r in records.items() if message_id not in batch.fallback_ids]
                    pending = batch.rest + batch.updates_of(m for m in records if m in stored)
                    opened = await _write_with_copy(driver, new_records, pending)
                except asyncpg.UniqueViolationError:
                    if not optimistic:
                        raise
                    raise _Conflict from None
                inserted = [message_id for message_id in records if message_id not in stored]
            unknown = [u.message_id for u in batch.rest if u.message_id not in opened]
            if optimistic and unknown:  # late updates, or updates of messages not stored: rare
                stored |= {row[0] for row in await driver.fetch(_STORED_IDS, unknown)}
            kinds, existing = batch.settle(inserted, opened, stored)
            head = kept_head if optimistic else None
            entries = lifecycle.entries(inserted, kinds)
            if entries:
                head, linked = await self._append_lifecycle(driver, head, entries, optimistic=optimistic)
                if not linked:
                    raise _Conflict
            await driver.execute("COMMIT")
        except BaseException:
            if not driver.is_closed():
                with contextlib.suppress(Exception):  # the connection may be gone; the first error is what matters
                    await driver.execute("ROLLBACK")
            raise
        self.ledger.kept_head = head
        return existing | (stored & update_ids)

    async def _append_lifecycle(
        self, driver: asyncpg.Connection, head: ChainHead | None, entries: list[PendingEntry], *, optimistic: bool
    ) -> tuple[ChainHead, bool]:
        """Link ``entries`` after ``head`` (read under the lock when ``None``) and ``COPY`` them in.

        Returns the new head and whether the entries went in: ``False`` when
        ``optimistic`` and a sequence number (``head`` was a kept one that
        another writer moved) or an operation id is taken.
        """
        if head is None:
            last = await driver.fetchrow(_CHAIN_HEAD, self.ledger.chain_id)
            head = ChainHead.of(last if last is not None else await driver.fetchrow(_PRUNE_POINT, self.ledger.chain_id))
        links, new_head = self.ledger.links(head, entries)
        chain_id = self.ledger.chain_id
        rows = [
            (*_event_values(entry.event), entry.digest, chain_id, *link)
            for entry, link in zip(entries, links, strict=True)
        ]
        try:
            await driver.copy_records_to_table(EVENTS_TABLE, records=rows, columns=LINKED_COLUMNS)
        except asyncpg.UniqueViolationError:
            if not optimistic:
                raise
            return head, False
        return new_head, True


class _Conflict(Exception):
    """The optimistic write met a stored record or a moved chain head: roll back, write carefully."""


_STORED_IDS = f"SELECT message_id FROM {TABLE_NAME} WHERE message_id = ANY($1::text[])"
_STORED_OPERATIONS = (
    f"SELECT message_id, operation_id FROM {EVENTS_TABLE} "
    "WHERE operation_id IS NOT NULL AND message_id = ANY($1::text[])"
)
_CHAIN_HEAD = f"SELECT sequence, entry_hash FROM {EVENTS_TABLE} WHERE chain_id = $1 ORDER BY sequence DESC LIMIT 1"
_PRUNE_POINT = f"SELECT pruned_sequence, pruned_hash FROM {CHAINS_TABLE} WHERE chain_id = $1"
_event_values = operator.itemgetter(*BOUND_EVENT_FIELDS)


def chain_lock_key(chain_id: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``chain_id``."""
    digest = hashlib.sha256(b"audit-plugin/chain-lock\x00" + chain_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _update_arrays(updates: list[StatusUpdate]) -> list[list[Any]]:
    return [
        [u.message_id for u in updates],
        [u.status.value for u in updates],
        [u.delivered_at for u in updates],
        [u.error_message for u in updates],
        [u.retry_count for u in updates],
    ]


async def _write_in_one_statement(
    driver: asyncpg.Connection, records: list[tuple[Any, ...]], updates: list[StatusUpdate]
) -> tuple[list[str], set[str]]:
    """Insert and update in one statement (one round trip); return the inserted ids (in order) and the updated ids.

    The ``UPDATE`` sees the table as it was before the statement, so of the
    updates of rows in this batch it touches only rows whose insert was
    skipped as already stored: exactly the ones that still need it.
    """
    row_arrays = [[record[index] for record in records] for index in range(len(COLUMNS))]
    result = await driver.fetch(_INSERT_AND_UPDATE, *row_arrays, *_update_arrays(updates))
    inserted = {row[1] for row in result if row[0]}
    return [record[_ID] for record in records if record[_ID] in inserted], {row[1] for row in result if not row[0]}


async def _insert_returning(driver: asyncpg.Connection, records: list[tuple[Any, ...]]) -> set[str]:
    """Insert those of ``records`` whose message is not stored (inside the caller's transaction); return their ids."""
    row_arrays = [[record[index] for record in records] for index in range(len(COLUMNS))]
    return {row[0] for row in await driver.fetch(_INSERT_RETURNING, *row_arrays)}


async def _write_with_copy(
    driver: asyncpg.Connection, records: list[tuple[Any, ...]], updates: list[StatusUpdate]
) -> set[str]:
    """Write one batch with ``COPY`` (inside the caller's transaction); return the updated ids."""
    if records:
        await driver.copy_records_to_table(TABLE_NAME, records=records, columns=COLUMNS)
    if not updates:
        return set()
    found = await driver.fetch(_UPDATE_FROM_ARRAYS, *_update_arrays(updates))
    return {row[0] for row in found}
