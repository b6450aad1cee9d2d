"""The partition-aware half of the PostgreSQL backend: layout at ``initialize``, partitions ahead, retention by drop.

:class:`PartitionedStore` sits between :class:`~audit_plugin.storage.sql.SQLBackend`
and :class:`~audit_plugin_postgres.backend.PostgresBackend`, which adds the
driver and the batch writes; the write statements are the same in both
layouts. What the layout is and why: :mod:`audit_plugin_postgres.partitions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from audit_plugin.exceptions import driver_message
from audit_plugin.model.records import AuditQuery
from audit_plugin.storage.chain_store import prune_chains
from audit_plugin.storage.sql import SQLBackend, TimeNarrowing
from audit_plugin_postgres import extents, partitions

_log = logging.getLogger(__name__)

PLANNED_ONCE = {"plan_cache_mode": extents.GENERIC}
"""The session setting of the connections a read whose filters an index serves in order runs on (see
:func:`plans_well_once`): plan each statement once.

Planning a query over the log's partitions (35 of them after a month by
day) takes about 7 ms, longer than running it; a generic plan is made once
per connection and statement (asyncpg prepares them) and still skips, when
it starts, the partitions a parameter rules out (a lookup by id opens one).
Reads whose best plan depends on the values keep custom plans. Set when the
connection opens (in its startup message), so such a read spends no round
trip on it.
"""
CUSTOM_PLANS = extents.planning(extents.CUSTOM)
"""Run first in each retention transaction: its statements are planned for their values (a generic plan of "older
than the cutoff" cannot tell that almost nothing is, and reads every partition)."""


def plans_well_once(query: AuditQuery) -> bool:
    """Whether one plan suits ``query`` whatever its values: no status or type (some are rare, some
    everywhere), and a sender only with its receiver (one agent alone: at 10M records a generic plan of its
    page took 26-31 ms, planned for its value 5-6 ms)."""
    one_agent = (query.from_agent is None) != (query.to_agent is None)
    return query.status is None and query.message_type is None and not one_agent


class PartitionedStore(SQLBackend):
    """A SQL store whose tables may be partitioned (PostgreSQL only).

    :param url: the database URL; its query parameters ``partitioning`` and
        ``events_per_partition`` are read and taken off (the driver never sees them).
    :param partitioning: how a new database is partitioned: ``"none"``,
        ``"hour"``, ``"day"`` (the default), ``"week"`` or ``"month"``;
        overrides ``?partitioning=``. A database keeps the layout it was
        created with (an unpartitioned one until it is migrated, see
        :mod:`audit_plugin_postgres.migrate`).
    :param events_per_partition: sequence numbers per lifecycle partition of
        a new partitioned database; overrides ``?events_per_partition=``.
    """

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
        self._maintenance: asyncio.Task[None] | None = None
        self._dropping: asyncio.Task[None] | None = None
        self._drop_again = False
        self.first_attempts = extents.FirstAttempts()
        """First attempts kept for the pages that follow (:class:`~audit_plugin_postgres.extents.FirstAttempts`)."""
        super().__init__(url, **engine_options)
        self.planned_once_engine: AsyncEngine = create_async_engine(
            self.engine.url, **_with_settings(self.engine_arguments, PLANNED_ONCE)
        )
        """The engine of the reads planned once (:data:`PLANNED_ONCE`); partitioned layout only."""

    @property
    def partitioned(self) -> bool:
        return self.layout is not None and self.layout.partitioned

    async def create_tables(self, conn: AsyncConnection) -> None:
        await partitions.lock_layout(conn)
        layout = await partitions.read_layout(conn)
        if layout is None and self.wanted_layout.partitioned:
            await partitions.create_partitioned_tables(conn, self.wanted_layout)
            layout = self.wanted_layout
        self.layout = layout or partitions.Layout("none")
        await super().create_tables(conn)
        if self.layout.partitioned:
            self.chain_prefix = partitions.PartitionedPrefix()
            await partitions.ensure_ahead(conn, self.layout)
            await partitions.drop_detached(conn)

    def reading(self, query: AuditQuery | None) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        if self.partitioned and (query is None or plans_well_once(query)):
            return self.planned_once_engine.connect()
        return super().reading(query)

    async def narrow_to_time(
        self, conn: AsyncConnection, start: datetime | None, end: datetime | None, *, newest_first: bool | None = None
    ) -> TimeNarrowing:
        """Partitioned: the id range of the buckets of :mod:`~audit_plugin_postgres.extents` meeting the window."""
        if not self.partitioned or self.layout is None:
            return TimeNarrowing()
        if newest_first is None and (start is None or end is None or end - start < extents.wide_for(self.layout.unit)):
            # A scan of a short window (or one open at an end) reads its rows from the timestamp index of every
            # partition: opening them costs little beside it, and given an id range wider than the window the
            # planner may read the range instead (every record of its buckets).
            return TimeNarrowing()
        return await self.first_attempts.narrowing(conn, start, end, newest_first, extents.few_for(self.layout.unit))

    async def initialize(self) -> None:
        await super().initialize()
        if self.layout is None or not self.layout.partitioned:
            return
        async with self.write_transaction() as conn:
            await extents.install_extents(conn, self.layout.unit)
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(self._maintain(self.layout), name="audit-plugin partitions")

    async def _maintain(self, layout: partitions.Layout) -> None:
        """Every :data:`~partitions.MAINTENANCE_SECONDS`, make sure the partitions ahead exist (and that none
        retention detached is left)."""
        while True:
            await asyncio.sleep(partitions.MAINTENANCE_SECONDS)
            try:
                async with self.engine.begin() as conn:
                    await partitions.ensure_ahead(conn, layout)
                    await partitions.drop_detached(conn)
            except Exception as exc:  # an outage: the default partitions take the rows; try again next time
                _log.warning("partition maintenance failed: %s", driver_message(exc) or exc)

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Partitioned: detach the partitions older than ``cutoff``, delete the older records of the others.

        One transaction, as unpartitioned (see :mod:`audit_plugin_postgres.partitions`). When it
        returns the records are gone from every read; the detached partitions' files are removed
        right after, in the background (:meth:`wait_for_drops`; :meth:`close` waits for it).
        """
        if not self.partitioned:
            return await super().delete_older_than(cutoff)
        async with self._retention_transaction() as conn:
            deleted = sum(await partitions.detach_partitions_before(conn, cutoff))
            deleted += await self._delete_records_before(conn, cutoff)
            await self._forget_before(conn, cutoff)
            await prune_chains(conn, self.chains, cutoff, deleted, prefix=self.chain_prefix)
        self._drop_detached_soon()
        return deleted

    async def delete_older_than_in_chunks(self, cutoff: datetime, chunk_size: int) -> AsyncIterator[int]:
        """Partitioned: each partition older than ``cutoff`` is dropped in a transaction of its own (one chunk,
        whatever it held: dropping costs the same), then the other older records are deleted ``chunk_size`` at
        a time; unpartitioned: see :meth:`SQLBackend.delete_older_than_in_chunks`.
        """
        if not self.partitioned:
            async for deleted in super().delete_older_than_in_chunks(cutoff, chunk_size):
                yield deleted
            return
        while True:
            async with self._retention_transaction() as conn:
                dropped = await partitions.detach_partitions_before(conn, cutoff, limit=1)
                if dropped:
                    await prune_chains(
                        conn, self.chains, cutoff, dropped[0], drop_prefix=False, prefix=self.chain_prefix
                    )
            if not dropped:
                break
            self._drop_detached_soon()
            yield dropped[0]
        while True:
            async with self._retention_transaction() as conn:
                deleted = await self._delete_records_before(conn, cutoff, limit=chunk_size)
                last = deleted < chunk_size
                if last:
                    await self._forget_before(conn, cutoff)
                await prune_chains(conn, self.chains, cutoff, deleted, drop_prefix=last, prefix=self.chain_prefix)
            if last:
                self._drop_detached_soon()
            if deleted:
                yield deleted
            if last:
                return

    @contextlib.asynccontextmanager
    async def _retention_transaction(self) -> AsyncIterator[AsyncConnection]:
        """:meth:`write_transaction`, its statements planned for their values (:data:`CUSTOM_PLANS`)."""
        async with self.write_transaction() as conn:
            await conn.execute(text(CUSTOM_PLANS))
            yield conn

    def _drop_detached_soon(self) -> None:
        """Start dropping what retention detached, in the background; if a drop is under way, it runs once more.

        Removing a day partition's files takes longer than the retention
        transaction itself (about 0.1 s for 300,000 records on a small
        machine, mostly the file system freeing them). The records are out of
        every read once that transaction commits, and dropping holds no lock
        that readers or writers of the log wait for, so the call returns then.
        """
        if self._dropping is not None and not self._dropping.done():
            self._drop_again = True
            return
        self._dropping = asyncio.create_task(self._drop_until_done(), name="audit-plugin partition drop")

    async def _drop_until_done(self) -> None:
        while True:
            self._drop_again = False
            await self._drop_detached()
            if not self._drop_again:
                return

    async def wait_for_drops(self) -> None:
        """Return once the partitions retention detached so far are dropped (their files removed), or the
        attempt failed (then logged; the maintenance task and the next :meth:`initialize` drop them)."""
        if self._dropping is not None:
            await asyncio.shield(self._dropping)

    async def _drop_detached(self) -> None:
        """Drop what retention detached, after its transaction (see :func:`partitions.drop_detached`).

        A failure here loses nothing: the retention run is committed, and the
        maintenance task drops what is left on its next run.
        """
        try:
            async with self.engine.begin() as conn:
                await partitions.drop_detached(conn)
        except Exception as exc:
            _log.warning("could not drop the detached partitions yet: %s", driver_message(exc) or exc)

    async def _delete_records_before(self, conn: AsyncConnection, cutoff: datetime, *, limit: int | None = None) -> int:
        """:func:`partitions.delete_records_before`, over the ids the time extents allow records older than
        ``cutoff`` (planning it over every partition costs more than the delete, usually of a few rows)."""
        ids = await extents.window_ids(conn, None, cutoff)
        if ids == extents.EMPTY:
            return 0
        within = ids if isinstance(ids, extents.IdRange) else None
        return await partitions.delete_records_before(conn, cutoff, limit=limit, within=within)

    async def _forget_before(self, conn: AsyncConnection, before: datetime) -> None:
        """In the retention transaction that removes the last records older than ``before``: drop what is kept
        about them (their time extents, and what :meth:`after_partitions_dropped` removes)."""
        await extents.forget_extents_before(conn, before)
        await self.after_partitions_dropped(conn, before)

    async def after_partitions_dropped(self, conn: AsyncConnection, before: datetime) -> None:
        """Called, partitioned layout only, in the retention transaction that removes the last records older than
        ``before`` (after the partitions are dropped and the other older records deleted).

        Does nothing; a subclass keeping derived data (rollups) by time
        removes its share here, in the same transaction.
        """

    async def close(self) -> None:
        await self.wait_for_drops()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        await self.planned_once_engine.dispose()
        await super().close()


def _with_settings(engine_arguments: dict[str, Any], settings: dict[str, str]) -> dict[str, Any]:
    """``engine_arguments`` whose connections open with the server ``settings`` too."""
    connect_args = engine_arguments.get("connect_args", {})
    server_settings = {**connect_args.get("server_settings", {}), **settings}
    return {**engine_arguments, "connect_args": {**connect_args, "server_settings": server_settings}}
