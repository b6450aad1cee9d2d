"""Convert an unpartitioned PostgreSQL audit store to the partitioned layout, in place.

One transaction: the log and lifecycle tables (and their indexes) are
renamed aside, the partitioned tables are created under the old names with
partitions covering the stored ids' times and sequence numbers, every row is
copied (the lifecycle verbatim, so the hash chain and its prune point are
unchanged and ``verify()`` passes as before), and the old tables are dropped.
Writers wait for the lock meanwhile; the copy takes about as long as a
``COPY`` of the same rows. Run it while no writer is running, or accept the
pause::

    python -m audit_plugin_postgres.migrate postgresql+asyncpg://user@host/db [day]
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_plugin.exceptions import AuditStoreError, InvalidFieldError
from audit_plugin.storage.integrity_schema import EVENTS_TABLE, events
from audit_plugin.storage.schema import TABLE_NAME, audit_log
from audit_plugin_postgres import partitions
from audit_plugin_postgres.backend import PostgresBackend

_OLD = "_unpartitioned"
_UUID7 = "^[0-9a-f]{8}-[0-9a-f]{4}-7"


async def migrate_to_partitions(
    url: str, *, partitioning: partitions.Partitioning = "day", events_per_partition: int | None = None
) -> bool:
    """Partition the audit store at ``url``; ``False`` if it already is. Raises if it has no audit tables."""
    backend = PostgresBackend(url, partitioning=partitioning, events_per_partition=events_per_partition)
    if not backend.wanted_layout.partitioned:
        raise InvalidFieldError("partitioning", "must name an interval to migrate to")
    try:
        async with backend.engine.begin() as conn:
            layout = await partitions.read_layout(conn)
            if layout is None:
                raise AuditStoreError(f"there is no {TABLE_NAME} table to migrate")
            if layout.partitioned:
                return False
            await _convert(conn, backend.wanted_layout)
    finally:
        await backend.close()
    return True


async def _convert(conn: AsyncConnection, layout: partitions.Layout) -> None:
    await conn.execute(text(f"LOCK TABLE {TABLE_NAME}, {EVENTS_TABLE} IN ACCESS EXCLUSIVE MODE"))
    for table in (TABLE_NAME, EVENTS_TABLE):
        indexes = await conn.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": table})
        for index in list(indexes):
            await conn.execute(text(f"ALTER INDEX {index} RENAME TO {index[: 63 - len(_OLD)]}{_OLD}"))
        await conn.execute(text(f"ALTER TABLE {table} RENAME TO {table}{_OLD}"))
    await partitions.create_partitioned_tables(conn, layout)
    oldest = await conn.scalar(text(f"SELECT min(message_id) FROM {TABLE_NAME}{_OLD} WHERE message_id ~ '{_UUID7}'"))
    now = datetime.now(UTC)
    start = partitions.interval_start(_id_time(oldest) if oldest is not None else now, layout.unit)
    starts = [start]
    while starts[-1] < now:
        starts.append(partitions.next_start(starts[-1], layout.unit))
    await partitions.create_intervals(conn, layout, starts)
    last = await conn.scalar(text(f"SELECT max(sequence) FROM {EVENTS_TABLE}{_OLD}"))
    await partitions.create_spans(conn, layout, through=last or 0)
    for table, columns in ((TABLE_NAME, audit_log.columns), (EVENTS_TABLE, events.columns)):
        names = ", ".join(column.name for column in columns)
        await conn.execute(text(f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}{_OLD}"))
        await conn.execute(text(f"DROP TABLE {table}{_OLD}"))
    await partitions.ensure_ahead(conn, layout, now)


def _id_time(message_id: str) -> datetime:
    """The creation time a UUIDv7's text carries (to the millisecond)."""
    return datetime.fromtimestamp(int(message_id[:8] + message_id[9:13], 16) / 1000, UTC)


def main(argv: list[str] | None = None) -> int:
    """``python -m audit_plugin_postgres.migrate URL [hour|day|week|month]``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    unit = partitions.check_partitioning(args[1] if len(args) == 2 else partitions.DEFAULT_PARTITIONING)
    converted = asyncio.run(migrate_to_partitions(args[0], partitioning=unit))
    print("partitioned" if converted else "already partitioned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
