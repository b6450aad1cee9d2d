"""What every SQL backend shares: engine set-up, queries, statistics, retention.

A database-specific backend subclasses :class:`SQLBackend` and supplies only
what differs: engine options, the batch write's statements (:meth:`SQLBackend.write_batch`
with :mod:`audit_plugin.storage.batch_write`), and the SQL
expressions for "seconds between two timestamps" and "start of the hour (day,
minute) of a timestamp"; it may override any query with a faster native one
(PostgreSQL computes latency percentiles with ``percentile_disc``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, Select, delete, func, literal, or_, select, union_all
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from audit_plugin.exceptions import AuditStoreError, StoreAuthenticationError, driver_message
from audit_plugin.integrity.checkpoint import Checkpoint
from audit_plugin.integrity.ledger import ChainEntry, ChainHead, Ledger, PendingEntry
from audit_plugin.integrity.shards import ShardedChains
from audit_plugin.integrity.verify import ShardsReport, VerifyReport
from audit_plugin.masking import mask_url
from audit_plugin.model.lifecycle import LifecycleStep
from audit_plugin.model.messages import MessageStatus
from audit_plugin.model.records import AuditQuery, AuditRecord, AuditStatistics, IdMatches, StatusUpdate
from audit_plugin.storage.backend import BucketUnit
from audit_plugin.storage.batch_write import BatchWrite
from audit_plugin.storage.chain_store import (
    ChainPrefix,
    access_entries,
    append_entries,
    chain_head,
    ensure_chains,
    prune_chains,
)
from audit_plugin.storage.chain_walk import verify_chains
from audit_plugin.storage.history import entries_after, message_history
from audit_plugin.storage.integrity_schema import upgrade
from audit_plugin.storage.keystore import SubjectKeyStore
from audit_plugin.storage.quarantine import QuarantinedMessage, keep, quarantined_count
from audit_plugin.storage.schema import (
    audit_log,
    json_text_identity,
    json_text_passthrough,
    metadata,
    upgrade_indexes,
)
from audit_plugin.storage.tree_store import SQLTreeStorage

TOP_AGENTS = 10
"""How many agents ``top_senders`` / ``top_receivers`` list."""

STREAM_CHUNK = 1000
"""Rows fetched per round trip when streaming."""

c = audit_log.c


@dataclass(frozen=True, slots=True)
class TimeNarrowing:
    """Conditions a backend adds to a read of a time window so it reads only the storage that can hold its records.

    ``window``: conditions every record timed in the window meets (a
    partitioned store: the id range that prunes partitions); always correct.
    ``first``: for a page read newest (oldest) first, a narrower first
    attempt, including a time bound: every record it leaves out is older
    (newer) than all it returns, so when it fills the page it is the page;
    when it does not, the read is run again with ``window``, or with what
    ``then`` gives when it is set.
    """

    window: list[ColumnElement[bool]] = field(default_factory=list)
    first: list[ColumnElement[bool]] | None = None
    then: Callable[[], Awaitable[list[ColumnElement[bool]]]] | None = None
    """Called when ``first`` did not fill the page, in place of ``window``: the window's conditions (for a backend
    that works them out, or plans their statement, only then)."""

    async def page(
        self,
        limit: int | None,
        read: Callable[[list[ColumnElement[bool]]], Awaitable[list[AuditRecord]]],
    ) -> list[AuditRecord]:
        """The page ``read(conditions)`` gives: the first attempt's when it fills ``limit``, else the window's."""
        if self.first is not None:
            records = await read(self.first)
            if len(records) == limit:
                return records
            if self.then is not None:
                return await read(await self.then())
        return await read(self.window)


def query_window(query: AuditQuery) -> tuple[datetime | None, datetime | None]:
    """The time range ``query`` reads: its start and the earlier of its end and its cursor."""
    end = query.end_time
    if query.before is not None and (end is None or query.before[0] < end):
        end = query.before[0]
    return query.start_time, end


def pages_far(query: AuditQuery) -> bool:
    """Whether a page of ``query`` likely fills from the newest (oldest) records: no correlation or trace id,
    whose few records may lie anywhere in time."""
    return query.correlation_id is None and query.trace_id is None


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
        self.engine_arguments: dict[str, Any] = options
        """What :attr:`engine` was made with (a backend may make another engine like it)."""
        self.engine: AsyncEngine = create_async_engine(url, **options)
        self.chains = ShardedChains()
        """Append the lifecycle to the hash chains (one per shard); the trail sets its own (:meth:`use_ledger`)."""
        self._keys = SubjectKeyStore(self.engine)
        self._trees = SQLTreeStorage(self.engine)
        self.chain_prefix = ChainPrefix()
        """How retention finds and removes the chain's pruned prefix."""

    # -- what subclasses provide -------------------------------------------------

    def engine_options(self) -> dict[str, Any]:
        """Extra ``create_async_engine`` options for this database."""
        return {}

    def reading(self, query: AuditQuery | None) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """The connection a page, a lookup, a conversation, a trace, an agent's history or an id search reads on
        (``query``: its filters; ``None`` for a lookup by id, an id search or an agent's history, each read from
        one index whatever the values).

        The engine's; a backend may choose one set up for how this read is
        planned (see :class:`~audit_plugin_postgres.partitioned.PartitionedStore`).
        """
        return self.engine.connect()

    async def narrow_to_time(
        self, conn: AsyncConnection, start: datetime | None, end: datetime | None, *, newest_first: bool | None = None
    ) -> TimeNarrowing:
        """How a read of records timed in ``[start, end]`` (``None``: unbounded) is narrowed on ``conn``;
        ``newest_first`` (``None``: not a page) asks for a first attempt of a page read in that order.

        Nothing by default; a partitioned store turns the window into the id
        range that prunes its partitions (see
        :class:`~audit_plugin_postgres.partitioned.PartitionedStore`).
        """
        return TimeNarrowing()

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
                await ensure_chains(conn, self.chains)
        except (DBAPIError, OSError) as exc:
            where = repr(self)
            refused = self.connection_refusal(exc)
            if refused is not None:
                raise StoreAuthenticationError(where, refused) from exc
            reason = driver_message(exc) or type(exc).__name__
            raise AuditStoreError(f"cannot open the audit store at {where}: {reason}") from exc

    def connection_refusal(self, exc: BaseException) -> str | None:
        """Why the server refused the connection for who we are or how we connect (credentials, TLS); else ``None``.

        A database-specific backend recognises its driver's errors; the
        trail then raises :class:`~audit_plugin.exceptions.StoreAuthenticationError`
        instead of a plain store error. The reason must hold no secret.
        """
        return None

    def __repr__(self) -> str:
        return mask_url(self.engine.url.render_as_string(hide_password=True))

    async def write_batch(self, rows: Sequence[dict[str, Any]], updates: Sequence[StatusUpdate]) -> set[str]:
        """Write one batch and its lifecycle entries (see :meth:`AuditBackend.write_batch`) with :meth:`write`."""
        return await self.write(BatchWrite(self.chains, self, rows, updates))

    async def write(self, batch: BatchWrite) -> set[str]:
        """Database-specific: drive ``batch`` (:func:`~audit_plugin.storage.batch_write.run_sync` or
        :func:`~audit_plugin.storage.batch_write.run_async`), answering its requests with this database's statements.

        The bulk paths are where a backend earns its throughput. Returns what
        the batch's steps return; rolls back (or discards the connection) if
        an answer raises.
        """
        raise NotImplementedError

    # -- the lifecycle and hash chain (LedgerStore) ---------------------------------

    def use_ledger(self, ledger: Ledger | ShardedChains) -> None:
        self.chains = ShardedChains.of(ledger)

    @property
    def ledger(self) -> Ledger:
        """The first shard's ledger (the only one of a single-chain store)."""
        return self.chains.ledgers[0]

    @ledger.setter
    def ledger(self, ledger: Ledger) -> None:
        self.chains = ShardedChains.of(ledger)

    async def chain_head(self) -> ChainHead:
        async with self.engine.connect() as conn:
            return await chain_head(conn, self.ledger.chain_id)

    async def chain_heads(self) -> list[ChainHead]:
        async with self.engine.connect() as conn:
            return [await chain_head(conn, chain_id) for chain_id in self.chains.chain_ids]

    async def message_history(self, message_id: str) -> list[LifecycleStep]:
        return await message_history(self.engine, message_id)

    async def verify_chain(self, against: Checkpoint | None = None) -> VerifyReport:
        return (await verify_chains(self.engine, self.chains, [against]))[0]  # type: ignore[return-value]

    async def verify_chains(self, against: Sequence[Checkpoint | None] = ()) -> VerifyReport | ShardsReport:
        return await verify_chains(self.engine, self.chains, against)

    # -- transport messages refused by an ingester (QuarantineStore) -----------------

    async def quarantine(self, messages: Sequence[QuarantinedMessage]) -> None:
        async with self.engine.begin() as conn:
            await keep(conn, messages)

    async def quarantined_count(self) -> int:
        async with self.engine.connect() as conn:
            return await quarantined_count(conn)

    async def append_entries(self, entries: Sequence[PendingEntry]) -> ChainHead | None:
        async with self.write_transaction() as conn:
            return await append_entries(conn, self.ledger, entries)

    async def access_entries(
        self, limit: int, before: int | None = None
    ) -> list[tuple[int, datetime, str, str | None]]:
        async with self.engine.connect() as conn:
            return await access_entries(conn, self.ledger.chain_id, limit, before)

    async def entries_after(self, after: int, limit: int) -> list[tuple[ChainEntry, AuditRecord | None]]:
        return await entries_after(self.engine, self.ledger.chain_id, after, limit)

    # -- data keys (SupportsSubjectKeys) ---------------------------------------------

    def subject_keys(self) -> SubjectKeyStore:
        return self._keys

    # -- Merkle trees (SupportsTrees) ---------------------------------------------------------

    def tree_storage(self) -> SQLTreeStorage:
        return self._trees

    async def lock_chain(self, conn: AsyncConnection, chain_id: str) -> None:
        """Serialise writers of ``chain_id`` until ``conn``'s transaction ends (called per shard, in shard order).

        The default does nothing: it suits a database whose write transactions
        already exclude each other (SQLite's ``BEGIN IMMEDIATE``).
        """

    @contextlib.asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on a new connection, holding every shard's writer lock (in shard order) from its start."""
        async with self.engine.connect() as conn:
            await conn.execution_options(audit_writer=True)
            async with conn.begin():
                for chain_id in self.chains.chain_ids:
                    await self.lock_chain(conn, chain_id)
                yield conn

    async def query(self, query: AuditQuery, *, oldest_first: bool = False) -> list[AuditRecord]:
        async with self.reading(query) as conn:
            order = (not oldest_first) if pages_far(query) else None
            narrowing = await self.narrow_to_time(conn, *query_window(query), newest_first=order)

            async def read(narrowed: list[ColumnElement[bool]]) -> list[AuditRecord]:
                stmt = ordered(select(audit_log).where(*query_filters(query), *narrowed), oldest_first=oldest_first)
                result = await conn.execute(stmt.limit(query.limit).offset(query.offset))
                return [AuditRecord.from_row(row) for row in result.mappings()]

            return await narrowing.page(query.limit, read)

    async def get(self, message_id: str) -> AuditRecord | None:
        async with self.reading(None) as conn:
            row = (await conn.execute(select(audit_log).where(c.message_id == message_id))).mappings().first()
            return AuditRecord.from_row(row) if row is not None else None

    async def stream(self, query: AuditQuery, *, oldest_first: bool = True) -> AsyncIterator[AuditRecord]:
        async with self.reading(query) as conn:
            narrowing = await self.narrow_to_time(conn, *query_window(query))
            stmt = ordered(select(audit_log).where(*query_filters(query), *narrowing.window), oldest_first=oldest_first)
            result = await conn.stream(stmt.execution_options(yield_per=STREAM_CHUNK))
            async for row in result.mappings():
                yield AuditRecord.from_row(row)

    def id_starts(self, column: ColumnElement[str], start: str) -> ColumnElement[bool]:
        """SQL for "``column`` starts with ``start``" (literally); a dialect makes it one an index serves."""
        return column.startswith(start, autoescape=True)

    def id_ends(self, column: ColumnElement[str], end: str) -> ColumnElement[bool]:
        """SQL for "``column`` ends with ``end``" (literally)."""
        return column.endswith(end, autoescape=True)

    async def ids_matching(self, fragment: str, limit: int) -> IdMatches:
        # One statement, the three searches as its parts. Each reads its matches first and is ordered after:
        # asked for in id order, a plan may walk the whole id index filtering (a generic plan over partitions
        # does) instead of reading the few matches from the index the condition names.
        def part(kind: str, column: Any, condition: ColumnElement[bool], *, distinct: bool = False) -> Select[Any]:
            matching = select(column.label("id")).where(condition)
            found = (matching.distinct() if distinct else matching).limit(limit).subquery()
            return select(literal(kind).label("kind"), found.c.id)

        stmt = union_all(
            part("message", c.message_id, self.id_starts(c.message_id, fragment)),
            part("message", c.message_id, self.id_ends(c.message_id, fragment)),
            part("correlation", c.correlation_id, self.id_starts(c.correlation_id, fragment), distinct=True),
        )
        async with self.reading(None) as conn:
            rows = (await conn.execute(stmt)).all()
        message_ids = sorted({found for kind, found in rows if kind == "message"})[:limit]
        return IdMatches(message_ids, sorted(found for kind, found in rows if kind == "correlation"))

    async def agent_history(self, agent_id: str, since: datetime, limit: int | None) -> list[AuditRecord]:
        # Sent and received apart (disjoint: a message to itself counts as sent), each newest first through
        # its own (agent, timestamp) index and cut at ``limit``: the first page reads ``limit`` rows per side,
        # where one query with OR collects the whole period's rows and sorts them.
        async with self.reading(None) as conn:  # each side is read in order from its agent's index
            narrowing = await self.narrow_to_time(conn, since, None, newest_first=None if limit is None else True)

            async def read(narrowed: list[ColumnElement[bool]]) -> list[AuditRecord]:
                sides = [
                    select(audit_log).where(c.from_agent == agent_id, c.timestamp >= since, *narrowed),
                    select(audit_log).where(
                        c.to_agent == agent_id, c.from_agent != agent_id, c.timestamp >= since, *narrowed
                    ),
                ]
                if limit is not None:
                    sides = [select(ordered(side, oldest_first=False).limit(limit).subquery()) for side in sides]
                both = union_all(*sides).subquery()
                stmt = select(both).order_by(both.c.timestamp.desc(), both.c.message_id.desc()).limit(limit)
                return [AuditRecord.from_row(row) for row in (await conn.execute(stmt)).mappings()]

            return await narrowing.page(limit, read)

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
            await prune_chains(conn, self.chains, cutoff, deleted, prefix=self.chain_prefix)
            return deleted

    async def count(self, query: AuditQuery) -> int:
        async with self.engine.connect() as conn:
            narrowing = await self.narrow_to_time(conn, *query_window(query))
            stmt = select(func.count()).select_from(audit_log).where(*query_filters(query), *narrowing.window)
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
                await prune_chains(conn, self.chains, cutoff, deleted, drop_prefix=last, prefix=self.chain_prefix)
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
        async with self.engine.connect() as conn:
            narrowing = await self.narrow_to_time(conn, start_time, end_time)
            window = [*time_window(start_time, end_time), *narrowing.window]
            stmt = select(bucket, func.count()).where(*window).group_by(bucket).order_by(bucket)
            return [(_as_utc(start), int(n)) for start, n in (await conn.execute(stmt)).all()]

    async def close(self) -> None:
        await self.engine.dispose()


def _as_utc(value: datetime | str) -> datetime:
    """A bucket start from either a datetime or the ISO text SQLite returns, as aware UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
