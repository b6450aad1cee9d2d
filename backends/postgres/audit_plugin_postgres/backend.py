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

import asyncio
import contextlib
import hashlib
import logging
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
from audit_plugin.sql import FoldedBatch, SQLBackend, delivered_in_window
from audit_plugin.transitions import FINAL_STATUS_VALUES, distinct_operations, operations
from audit_plugin_postgres import partitions

_log = logging.getLogger(__name__)

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


class PostgresBackend(SQLBackend):
    """An audit store in a PostgreSQL database (payload as ``jsonb``).

    :param partitioning: how a new database is partitioned (see
        :mod:`audit_plugin_postgres.partitions`): ``"none"``, ``"hour"``,
        ``"day"`` (the default), ``"week"`` or ``"month"``; also the URL
        query parameter ``?partitioning=``. A database keeps the layout it
        was created with (an unpartitioned one until it is migrated).
    :param events_per_partition: sequence numbers per lifecycle partition
        of a new partitioned database (also ``?events_per_partition=``).
    """

    name = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        partitioning: partitions.Partitioning | None = None,
        events_per_partition: int | None = None,
        **engine_options: Any,
    ) -> None:
        url, url_unit, url_span = partitions.split_url(url)
        unit = partitioning if partitioning is not None else url_unit
        span = events_per_partition if events_per_partition is not None else url_span
        self.wanted_layout = partitions.Layout(
            partitions.check_partitioning(unit if unit is not None else partitions.DEFAULT_PARTITIONING),
            partitions.check_span(span if span is not None else partitions.DEFAULT_EVENTS_PER_PARTITION),
        )
        """The layout a new database gets."""
        self.layout: partitions.Layout | None = None
        """The database's layout, once :meth:`initialize` has read (or made) it."""
        super().__init__(_with_async_driver(url), **engine_options)
        self._write_connection: AsyncConnection | None = None
        self._maintenance: asyncio.Task[None] | None = None

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

    async def create_tables(self, conn: AsyncConnection) -> None:
        layout = await partitions.read_layout(conn)
        if layout is None and self.wanted_layout.partitioned:
            await partitions.create_partitioned_tables(conn, self.wanted_layout)
            layout = self.wanted_layout
        self.layout = layout or partitions.Layout("none")
        await super().create_tables(conn)
        if self.layout.partitioned:
            await partitions.ensure_ahead(conn, self.layout)

    async def initialize(self) -> None:
        await super().initialize()
        if self.layout is not None and self.layout.partitioned and self._maintenance is None:
            self._maintenance = asyncio.create_task(self._maintain(self.layout), name="audit-plugin partitions")

    async def _maintain(self, layout: partitions.Layout) -> None:
        """Every :data:`~partitions.MAINTENANCE_SECONDS`, make sure the partitions ahead exist."""
        while True:
            await asyncio.sleep(partitions.MAINTENANCE_SECONDS)
            try:
                async with self.engine.begin() as conn:
                    await partitions.ensure_ahead(conn, layout)
            except Exception as exc:  # an outage: the default partitions take the rows; try again next time
                _log.warning("could not create the partitions ahead: %s", driver_message(exc) or exc)

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Partitioned: drop the partitions older than ``cutoff``, delete the older records of the others.

        One transaction, as unpartitioned (see :mod:`audit_plugin_postgres.partitions`).
        """
        if self.layout is None or not self.layout.partitioned:
            return await super().delete_older_than(cutoff)
        async with self.write_transaction() as conn:
            deleted = sum(await partitions.drop_partitions_before(conn, cutoff))
            deleted += await partitions.delete_records_before(conn, cutoff)
            await self.after_partitions_dropped(conn, cutoff)
            await self.ledger.prune(conn, cutoff, deleted, drop_entries=partitions.drop_entries_through)
            return deleted

    async def delete_older_than_in_chunks(self, cutoff: datetime, chunk_size: int) -> AsyncIterator[int]:
        """Partitioned: each partition older than ``cutoff`` is dropped in a transaction of its own (one chunk,
        whatever it held: dropping costs the same), then the other older records are deleted ``chunk_size`` at
        a time; unpartitioned: see :meth:`SQLBackend.delete_older_than_in_chunks`.
        """
        if self.layout is None or not self.layout.partitioned:
            async for deleted in super().delete_older_than_in_chunks(cutoff, chunk_size):
                yield deleted
            return
        while True:
            async with self.write_transaction() as conn:
                dropped = await partitions.drop_partitions_before(conn, cutoff, limit=1)
                if dropped:
                    await self.ledger.prune(conn, cutoff, dropped[0], drop_prefix=False)
            if not dropped:
                break
            yield dropped[0]
        while True:
            async with self.write_transaction() as conn:
                deleted = await partitions.delete_records_before(conn, cutoff, limit=chunk_size)
                last = deleted < chunk_size
                if last:
                    await self.after_partitions_dropped(conn, cutoff)
                await self.ledger.prune(
                    conn, cutoff, deleted, drop_prefix=last, drop_entries=partitions.drop_entries_through
                )
            if deleted:
                yield deleted
            if last:
                return

    async def after_partitions_dropped(self, conn: AsyncConnection, before: datetime) -> None:
        """Called, partitioned layout only, in the retention transaction that removes the last records older than
        ``before`` (after the partitions are dropped and the other older records deleted).

        Does nothing; a subclass keeping derived data (rollups) by time
        removes its share here, in the same transaction.
        """

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
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
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
