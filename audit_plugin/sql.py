"""What every SQL backend shares: engine set-up, queries, statistics, retention.

A database-specific backend subclasses :class:`SQLBackend` and supplies only
what differs: engine options, the batch write's statements (:meth:`SQLBackend.write_batch`
with :mod:`audit_plugin.batch_write`), and the SQL
expressions for "seconds between two timestamps" and "start of the hour (day,
minute) of a timestamp"; it may override any query with a faster native one
(PostgreSQL computes latency percentiles with ``percentile_disc``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, Select, delete, func, or_, select, union_all
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from audit_plugin.backend import BucketUnit, IdColumn
from audit_plugin.batch_write import BatchWrite
from audit_plugin.checkpoint import Checkpoint
from audit_plugin.exceptions import AuditStoreError, driver_message
from audit_plugin.integrity_schema import upgrade
from audit_plugin.keystore import SubjectKeyStore
from audit_plugin.ledger import ChainHead, ChainPrefix, Ledger
from audit_plugin.lifecycle import LifecycleStep, message_history
from audit_plugin.messages import MessageStatus
from audit_plugin.records import AuditQuery, AuditRecord, AuditStatistics, StatusUpdate
from audit_plugin.schema import (
    audit_log,
    json_text_identity,
    json_text_passthrough,
    metadata,
    upgrade_indexes,
)
from audit_plugin.verify import VerifyReport, verify_chain

TOP_AGENTS = 10
"""How many agents ``top_senders`` / ``top_receivers`` list."""

STREAM_CHUNK = 1000
"""Rows fetched per round trip when streaming."""

c = audit_log.c


def query_filters(query: AuditQuery) -> list[ColumnElement[bool]]:
    """The WHERE clauses for ``query``; every value is a bound parameter."""
    filters: list[ColumnElement[bool]] = []
    if query.from_agent is not None:
        filters.append(c.from_agent == query.from_agent)
    if query.to_agent is not None:
        filters.append(c.to_agent == query.to_agent)
    if query.message_type is not None:
        filters.append(c.message_type == query.message_type.value)
    if query.status is not None:
        filters.append(c.status == query.status.value)
    if query.correlation_id is not None:
        filters.append(c.correlation_id == query.correlation_id)
    if query.trace_id is not None:
        filters.append(c.trace_id == query.trace_id)
    filters.extend(time_window(query.start_time, query.end_time))
    if query.before is not None:
        at, message_id = query.before
        # Spelled so the timestamp index bounds the scan on both databases; the tie-break is a filter.
        filters.append(c.timestamp <= at)
        filters.append(or_(c.timestamp < at, c.message_id < message_id))
    return filters


def time_window(start_time: datetime | None, end_time: datetime | None) -> list[ColumnElement[bool]]:
    window: list[ColumnElement[bool]] = []
    if start_time is not None:
        window.append(c.timestamp >= start_time)
    if end_time is not None:
        window.append(c.timestamp <= end_time)
    return window


def ordered(stmt: Select[Any], *, oldest_first: bool) -> Select[Any]:
    """A total order (timestamp, then message_id) so pages never overlap or skip."""
    if oldest_first:
        return stmt.order_by(c.timestamp.asc(), c.message_id.asc())
    return stmt.order_by(c.timestamp.desc(), c.message_id.desc())


def delivered_in_window(start_time: datetime | None, end_time: datetime | None) -> list[ColumnElement[bool]]:
    """Delivered messages (those with a measurable latency) created in the window."""
    return [*time_window(start_time, end_time), c.status == MessageStatus.DELIVERED.value, c.delivered_at.is_not(None)]


def summarise(
    by_status: dict[str, int],
    by_type: dict[str, int],
    senders: list[tuple[str, int]],
    receivers: list[tuple[str, int]],
    avg_delivery: Any,
) -> AuditStatistics:
    """The statistics of a range from its counts and its mean delivery seconds (``None``: nothing delivered)."""
    total = sum(by_status.values())
    failed = by_status.get(MessageStatus.FAILED.value, 0)
    return AuditStatistics(
        total_messages=total,
        messages_by_status=by_status,
        messages_by_type=by_type,
        top_senders=senders,
        top_receivers=receivers,
        avg_delivery_time=float(avg_delivery or 0.0),
        error_rate=(100.0 * failed / total) if total else 0.0,
    )


class SQLBackend:
    """Base for SQLAlchemy-backed stores (async engine, Core statements)."""

    name: ClassVar[str] = "sql"

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        options = {
            "json_serializer": json_text_passthrough,
            "json_deserializer": json_text_identity,
            **self.engine_options(),
            **engine_options,
        }
        self.engine: AsyncEngine = create_async_engine(url, **options)
        self.ledger = Ledger()
        """Appends the lifecycle and hash chain; the trail sets its own (:meth:`use_ledger`)."""
        self._keys = SubjectKeyStore(self.engine)
        self.chain_prefix = ChainPrefix()
        """How retention finds and removes the chain's pruned prefix."""

    # -- what subclasses provide -------------------------------------------------

    def engine_options(self) -> dict[str, Any]:
        """Extra ``create_async_engine`` options for this database."""
        return {}

    def seconds_between(self, start: Any, end: Any) -> ColumnElement[float]:
        """SQL for the number of seconds from ``start`` to ``end``."""
        raise NotImplementedError

    def time_bucket(self, column: Any, unit: BucketUnit) -> ColumnElement[Any]:
        """SQL truncating the UTC timestamp ``column`` to the start of its ``unit``.

        May return a datetime or ISO text; :meth:`message_volume` normalises both.
        """
        raise NotImplementedError

    async def create_tables(self, conn: AsyncConnection) -> None:
        """Create the tables and indexes that are missing (a backend may lay them out its own way first)."""
        await conn.run_sync(metadata.create_all, checkfirst=True)

    # -- the backend contract ------------------------------------------------------

    async def initialize(self) -> None:
        try:
            async with self.engine.begin() as conn:
                await self.create_tables(conn)
            async with self.write_transaction() as conn:
                await conn.run_sync(upgrade)
                await conn.run_sync(upgrade_indexes)
                await self.ledger.ensure_chain(conn)
        except (DBAPIError, OSError) as exc:
            where = self.engine.url.render_as_string(hide_password=True)
            reason = driver_message(exc) or type(exc).__name__
            raise AuditStoreError(f"cannot open the audit store at {where}: {reason}") from exc

    async def write_batch(self, rows: Sequence[dict[str, Any]], updates: Sequence[StatusUpdate]) -> set[str]:
        """Write one batch and its lifecycle entries (see :meth:`AuditBackend.write_batch`) with :meth:`write`."""
        return await self.write(BatchWrite(self.ledger, self, rows, updates))

    async def write(self, batch: BatchWrite) -> set[str]:
        """Database-specific: drive ``batch`` (:func:`~audit_plugin.batch_write.run_sync` or
        :func:`~audit_plugin.batch_write.run_async`), answering its requests with this database's statements.

        The bulk paths are where a backend earns its throughput. Returns what
        the batch's steps return; rolls back (or discards the connection) if
        an answer raises.
        """
        raise NotImplementedError

    # -- the lifecycle and hash chain (LedgerStore) ---------------------------------

    def use_ledger(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def chain_head(self) -> ChainHead:
        async with self.engine.connect() as conn:
            return await self.ledger.head(conn)

    async def message_history(self, message_id: str) -> list[LifecycleStep]:
        return await message_history(self.engine, message_id)

    async def verify_chain(self, against: Checkpoint | None = None) -> VerifyReport:
        return await verify_chain(self.engine, self.ledger, against)

    # -- data keys (SupportsSubjectKeys) ---------------------------------------------

    def subject_keys(self) -> SubjectKeyStore:
        return self._keys

    async def lock_chain(self, conn: AsyncConnection, chain_id: str) -> None:
        """Serialise writers of ``chain_id`` until ``conn``'s transaction ends.

        The default does nothing: it suits a database whose write transactions
        already exclude each other (SQLite's ``BEGIN IMMEDIATE``).
        """

    @contextlib.asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on a new connection, holding the chain's writer lock from its start."""
        async with self.engine.connect() as conn:
            await conn.execution_options(audit_writer=True)
            async with conn.begin():
                await self.lock_chain(conn, self.ledger.chain_id)
                yield conn

    async def query(self, query: AuditQuery, *, oldest_first: bool = False) -> list[AuditRecord]:
        stmt = ordered(select(audit_log).where(*query_filters(query)), oldest_first=oldest_first)
        stmt = stmt.limit(query.limit).offset(query.offset)
        async with self.engine.connect() as conn:
            result = await conn.execute(stmt)
            return [AuditRecord.from_row(row) for row in result.mappings()]

    async def get(self, message_id: str) -> AuditRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(audit_log).where(c.message_id == message_id))).mappings().first()
            return AuditRecord.from_row(row) if row is not None else None

    async def stream(self, query: AuditQuery, *, oldest_first: bool = True) -> AsyncIterator[AuditRecord]:
        stmt = ordered(select(audit_log).where(*query_filters(query)), oldest_first=oldest_first)
        async with self.engine.connect() as conn:
            result = await conn.stream(stmt.execution_options(yield_per=STREAM_CHUNK))
            async for row in result.mappings():
                yield AuditRecord.from_row(row)

    async def ids_with_prefix(self, column: IdColumn, prefix: str, limit: int) -> list[str]:
        return await self._ids_where(column, c[column].startswith(prefix, autoescape=True), limit)

    async def ids_with_suffix(self, column: IdColumn, suffix: str, limit: int) -> list[str]:
        return await self._ids_where(column, c[column].endswith(suffix, autoescape=True), limit)

    async def _ids_where(self, column: IdColumn, condition: ColumnElement[bool], limit: int) -> list[str]:
        id_column = c[column]
        stmt = select(id_column).where(condition).group_by(id_column).order_by(id_column).limit(limit)
        async with self.engine.connect() as conn:
            return list((await conn.execute(stmt)).scalars())

    async def agent_history(self, agent_id: str, since: datetime, limit: int | None) -> list[AuditRecord]:
        # Sent and received apart (disjoint: a message to itself counts as sent), each newest first through
        # its own (agent, timestamp) index and cut at ``limit``: the first page reads ``limit`` rows per side,
        # where one query with OR collects the whole period's rows and sorts them.
        sides = [
            select(audit_log).where(c.from_agent == agent_id, c.timestamp >= since),
            select(audit_log).where(c.to_agent == agent_id, c.from_agent != agent_id, c.timestamp >= since),
        ]
        if limit is not None:
            sides = [select(ordered(side, oldest_first=False).limit(limit).subquery()) for side in sides]
        both = union_all(*sides).subquery()
        stmt = select(both).order_by(both.c.timestamp.desc(), both.c.message_id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [AuditRecord.from_row(row) for row in (await conn.execute(stmt)).mappings()]

    async def statistics(self, start_time: datetime | None, end_time: datetime | None) -> AuditStatistics:
        window = time_window(start_time, end_time)
        count = func.count().label("n")
        async with self.engine.connect() as conn:

            async def grouped(column: Any, *, top: int | None = None) -> list[tuple[str, int]]:
                stmt = select(column, count).where(*window).group_by(column).order_by(count.desc(), column.asc())
                if top is not None:
                    stmt = stmt.limit(top)
                return [(key, n) for key, n in (await conn.execute(stmt)).all()]

            by_status = dict(await grouped(c.status))
            by_type = dict(await grouped(c.message_type))
            senders = await grouped(c.from_agent, top=TOP_AGENTS)
            receivers = await grouped(c.to_agent, top=TOP_AGENTS)
            avg_delivery = await conn.scalar(
                select(func.avg(self.seconds_between(c.timestamp, c.delivered_at))).where(
                    *delivered_in_window(start_time, end_time)
                )
            )
        return summarise(by_status, by_type, senders, receivers, avg_delivery)

    async def delete_older_than(self, cutoff: datetime) -> int:
        async with self.write_transaction() as conn:
            result = await conn.execute(delete(audit_log).where(c.timestamp < cutoff))
            deleted = int(result.rowcount or 0)
            await self.ledger.prune(conn, cutoff, deleted, prefix=self.chain_prefix)
            return deleted

    async def count(self, query: AuditQuery) -> int:
        stmt = select(func.count()).select_from(audit_log).where(*query_filters(query))
        async with self.engine.connect() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def count_older_than(self, cutoff: datetime) -> int:
        stmt = select(func.count()).select_from(audit_log).where(c.timestamp < cutoff)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def delete_older_than_in_chunks(self, cutoff: datetime, chunk_size: int) -> AsyncIterator[int]:
        """Delete records older than ``cutoff``, ``chunk_size`` rows per transaction.

        Yields the number deleted by each committed chunk, so a caller can show
        progress; each transaction stays short and memory stays flat however
        many rows go. Stops when a chunk comes back short. Each chunk is
        recorded in the hash chain; the chain's old prefix is dropped after
        the last one.
        """
        while True:
            doomed = select(c.message_id).where(c.timestamp < cutoff).limit(chunk_size).scalar_subquery()
            async with self.write_transaction() as conn:
                deleted = int((await conn.execute(delete(audit_log).where(c.message_id.in_(doomed)))).rowcount or 0)
                last = deleted < chunk_size
                await self.ledger.prune(conn, cutoff, deleted, drop_prefix=last, prefix=self.chain_prefix)
            if deleted:
                yield deleted
            if deleted < chunk_size:
                return

    async def delivery_percentiles(
        self, start_time: datetime | None, end_time: datetime | None, percentiles: Sequence[float]
    ) -> dict[float, float | None]:
        """Nearest-rank percentiles of delivery seconds over delivered messages in the window.

        The p-th percentile is the smallest latency with at least p% of
        delivered messages at or below it (PostgreSQL's ``percentile_disc``);
        ``None`` when nothing was delivered. This portable version sorts in
        SQL once per percentile; backends with a native aggregate override it.
        """
        latency = self.seconds_between(c.timestamp, c.delivered_at)
        delivered = delivered_in_window(start_time, end_time)
        async with self.engine.connect() as conn:
            total = int(await conn.scalar(select(func.count()).select_from(audit_log).where(*delivered)) or 0)
            result: dict[float, float | None] = {}
            for p in percentiles:
                if not total:
                    result[p] = None
                    continue
                rank = max(1, math.ceil(p / 100 * total))
                value = await conn.scalar(select(latency).where(*delivered).order_by(latency).offset(rank - 1).limit(1))
                result[p] = float(value)
            return result

    async def message_volume(
        self, start_time: datetime | None, end_time: datetime | None, unit: BucketUnit
    ) -> list[tuple[datetime, int]]:
        """Messages per ``unit`` in the window, oldest bucket first; empty buckets are absent."""
        bucket = self.time_bucket(c.timestamp, unit).label("bucket")
        stmt = select(bucket, func.count()).where(*time_window(start_time, end_time)).group_by(bucket).order_by(bucket)
        async with self.engine.connect() as conn:
            return [(_as_utc(start), int(n)) for start, n in (await conn.execute(stmt)).all()]

    async def close(self) -> None:
        await self.engine.dispose()


def _as_utc(value: datetime | str) -> datetime:
    """A bucket start from either a datetime or the ISO text SQLite returns, as aware UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
