"""Declarative partitioning of the PostgreSQL store: layout, partitions made ahead, retention by dropping them.

Three tables are partitioned; users query the same names as before.

* ``message_audit_log`` by ``RANGE (message_id)``, one partition per
  interval (hour, day, week, month) of the time a message id carries: the
  default ids are UUIDv7, whose text starts with the creation time in
  milliseconds as fixed-width hex, so a day's ids are one text range. The
  primary key stays ``message_id`` alone (it contains the partition key), so
  a message id is stored once in the whole table, exactly as unpartitioned:
  ``ON CONFLICT (message_id)``, a ``COPY`` meeting a unique violation, and
  the consume side's copy of a message (whose timestamp is its arrival, not
  the producer's) all keep their meaning. A lookup or status update by id
  touches the one partition whose range holds the id. Ids of any other form
  (uuid4, uuid5, chosen by hand), and ids whose time has no partition, go to
  the ``DEFAULT`` partition: nothing is ever refused.
* ``message_audit_events`` by ``RANGE (sequence)`` in spans of
  ``events_per_partition`` numbers: the primary key ``(chain_id, sequence)``
  stays, so a taken sequence number is still refused; retention drops the
  spans below the prune point. A ``DEFAULT`` partition takes numbers no span
  covers yet.
* ``message_audit_operations`` (new): ``(message_id, operation_id)``, its
  primary key, partitioned like the log. A row trigger on the events table
  fills it for every entry with an operation id, so a repeated operation
  fails with a unique violation as the unique index of the unpartitioned
  layout does; its partitions are dropped with the log's.

Retention drops a log partition when its whole id range is older than the
cutoff and none of its records is as new as the cutoff (one index probe), and
deletes row by row only the records it cannot drop (the boundary partition's
older ones, the default partition's, any with a timestamp far from their id's
time). Partitions are created by :func:`ensure_ahead`: at ``initialize``, and
then every :data:`MAINTENANCE_SECONDS` by the backend, keeping the current and
the next :data:`INTERVALS_AHEAD` intervals (and :data:`SPANS_AHEAD` empty
sequence spans) in place; a range whose rows already went to the default
partition is not created (they stay there, and are deleted by retention).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, get_args

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.model import validation as v
from audit_plugin.storage.chain_store import ChainPrefix
from audit_plugin.storage.integrity_schema import CHAINS_TABLE, EVENTS_TABLE, events, operations_index
from audit_plugin.storage.schema import TABLE_NAME, audit_log

if TYPE_CHECKING:
    from audit_plugin_postgres.extents import IdRange

Partitioning = Literal["none", "hour", "day", "week", "month"]
PARTITIONING_VALUES: tuple[str, ...] = get_args(Partitioning)
DEFAULT_PARTITIONING: Partitioning = "day"
"""What a new database gets; an existing database keeps the layout it has."""

OPERATIONS_TABLE = "message_audit_operations"
DEFAULT_EVENTS_PER_PARTITION = 1_000_000
"""Sequence numbers per ``message_audit_events`` partition."""
INTERVALS_AHEAD = 3
"""Log partitions kept ready after the current interval."""
SPANS_AHEAD = 2
"""Empty event spans kept ready above the highest one in use."""
MAINTENANCE_SECONDS = 60.0
"""How often a running backend makes sure the partitions ahead exist."""

_LAYOUT_COMMENT = "audit_plugin partitioning="
"""Prefix of the comment on the partitioned log table that records its interval and span."""
_MAINTENANCE_LOCK = int.from_bytes(hashlib.sha256(b"audit-plugin/partitions").digest()[:8], "big", signed=True)
_BOUND = re.compile(r"FROM \('?([^')]*)'?\) TO \('?([^')]*)'?\)")


@dataclass(frozen=True, slots=True)
class Layout:
    """How a database is partitioned: log interval (``"none"``: not partitioned) and event span."""

    unit: Partitioning
    events_per_partition: int = DEFAULT_EVENTS_PER_PARTITION

    @property
    def partitioned(self) -> bool:
        return self.unit != "none"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its table name and bounds as PostgreSQL prints them (``None``: the default partition)."""

    name: str
    low: str | None
    high: str | None


# -- options -------------------------------------------------------------------------------


def check_partitioning(value: object) -> Partitioning:
    if value not in PARTITIONING_VALUES:
        raise InvalidFieldError("partitioning", f"must be one of {', '.join(PARTITIONING_VALUES)}, got {value!r}")
    return value  # type: ignore[return-value]


def split_url(url: str) -> tuple[str, Partitioning | None, int | None]:
    """``url`` without the ``partitioning`` and ``events_per_partition`` query parameters, and their values.

    asyncpg would pass unknown parameters to the server as settings, so they
    are taken off before the URL reaches it.
    """
    parsed = make_url(url)
    query = dict(parsed.query)
    unit = query.pop("partitioning", None)
    span = query.pop("events_per_partition", None)
    if unit is None and span is None:
        return url, None, None
    stripped = parsed.set(query=query).render_as_string(hide_password=False)
    checked_span = None
    if span is not None:
        try:
            checked_span = int(span)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidFieldError("events_per_partition", f"must be a whole number, got {span!r}") from None
    return stripped, None if unit is None else check_partitioning(unit), checked_span


def check_span(value: object) -> int:
    checked = v.check_int("events_per_partition", value, minimum=1, maximum=2**62)
    assert checked is not None
    return checked


# -- time ranges of ids ----------------------------------------------------------------------


def interval_start(moment: datetime, unit: Partitioning) -> datetime:
    """The start (UTC) of the ``unit`` interval holding ``moment`` (weeks start on Monday)."""
    moment = moment.astimezone(UTC)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    raise InvalidFieldError("partitioning", f"{unit!r} has no intervals")


def next_start(start: datetime, unit: Partitioning) -> datetime:
    """The start of the interval after the one starting at ``start``."""
    if unit == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}[unit]


def id_prefix(moment: datetime) -> str:
    """The text every UUIDv7 made at ``moment`` (to the millisecond) starts with: its time field in hex."""
    millis = f"{int(moment.timestamp() * 1000):012x}"
    return f"{millis[:8]}-{millis[8:]}"


def _suffix(start: datetime, unit: Partitioning) -> str:
    return start.strftime("%Y%m%d%H" if unit == "hour" else "%Y%m%d")


# -- schema ----------------------------------------------------------------------------------


async def lock_layout(conn: AsyncConnection) -> None:
    """Serialise, until the transaction ends, the processes creating tables or partitions."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MAINTENANCE_LOCK})


async def read_layout(conn: AsyncConnection) -> Layout | None:
    """The layout of the database, or ``None`` if it has no ``message_audit_log`` yet."""
    row = (
        await conn.execute(
            text(
                "SELECT p.partrelid IS NOT NULL, obj_description(c.oid, 'pg_class') FROM pg_class c "
                "LEFT JOIN pg_partitioned_table p ON p.partrelid = c.oid "
                "WHERE c.oid = to_regclass(:name)"
            ),
            {"name": TABLE_NAME},
        )
    ).first()
    if row is None:
        return None
    partitioned, comment = row
    if not partitioned:
        return Layout("none")
    settings = dict(item.split("=", 1) for item in (comment or "").removeprefix("audit_plugin ").split())
    span = int(settings.get("span", DEFAULT_EVENTS_PER_PARTITION))
    return Layout(check_partitioning(settings.get("partitioning", DEFAULT_PARTITIONING)), span)


async def create_partitioned_tables(conn: AsyncConnection, layout: Layout) -> None:
    """Create the three partitioned tables, their indexes, default partitions and the operations trigger."""
    dialect = conn.dialect
    log_ddl = str(CreateTable(audit_log).compile(dialect=dialect)).strip()
    events_ddl = str(CreateTable(events).compile(dialect=dialect)).strip()
    statements = [
        f"{log_ddl} PARTITION BY RANGE (message_id)",
        f"COMMENT ON TABLE {TABLE_NAME} IS '{_LAYOUT_COMMENT}{layout.unit} span={layout.events_per_partition}'",
        *(str(CreateIndex(index).compile(dialect=dialect)) for index in audit_log.indexes),
        f"{events_ddl} PARTITION BY RANGE (sequence)",
        *(
            str(CreateIndex(index).compile(dialect=dialect))
            for index in events.indexes
            if index is not operations_index
        ),
        # Not unique (a partitioned index must contain the partition key): message_audit_operations is.
        f"CREATE INDEX {operations_index.name} ON {EVENTS_TABLE} (message_id, operation_id) "
        "WHERE operation_id IS NOT NULL",
        f"CREATE INDEX idx_events_at ON {EVENTS_TABLE} USING brin (at)",  # see PartitionedPrefix
        f"CREATE TABLE {OPERATIONS_TABLE} (message_id VARCHAR(1024) NOT NULL, operation_id VARCHAR(1024) NOT NULL, "
        "PRIMARY KEY (message_id, operation_id)) PARTITION BY RANGE (message_id)",
        f"""CREATE FUNCTION {OPERATIONS_TABLE}_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {OPERATIONS_TABLE} (message_id, operation_id) VALUES (NEW.message_id, NEW.operation_id);
    RETURN NULL;
END $$""",
        f"CREATE TRIGGER {OPERATIONS_TABLE}_once AFTER INSERT ON {EVENTS_TABLE} FOR EACH ROW "
        f"WHEN (NEW.operation_id IS NOT NULL) EXECUTE FUNCTION {OPERATIONS_TABLE}_once()",
    ]
    for table in (TABLE_NAME, EVENTS_TABLE, OPERATIONS_TABLE):
        statements.append(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    for statement in statements:
        await conn.execute(text(statement))


async def partitions_of(conn: AsyncConnection, table: str) -> list[Partition]:
    """The partitions of ``table``, ranges sorted by their low bound as text, the default partition last."""
    rows = await conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:table)"
        ),
        {"table": table},
    )
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound)
        found.append(Partition(name, *match.groups()) if match else Partition(name, None, None))
    return sorted(found, key=lambda p: (p.low is None, int(p.low) if table == EVENTS_TABLE and p.low else p.low))


# -- partitions ahead -------------------------------------------------------------------------


async def ensure_ahead(conn: AsyncConnection, layout: Layout, now: datetime | None = None) -> None:
    """Create the current and the next intervals' log partitions and the next empty event spans, if missing.

    Serialised between processes by a transaction-scoped advisory lock.
    """
    await lock_layout(conn)
    start = interval_start(now or datetime.now(UTC), layout.unit)
    starts = [start]
    for _ in range(INTERVALS_AHEAD):
        starts.append(next_start(starts[-1], layout.unit))
    await create_intervals(conn, layout, starts)
    await _ensure_spans(conn, layout)


async def create_intervals(conn: AsyncConnection, layout: Layout, starts: Sequence[datetime]) -> None:
    """Create the log (and operations) partitions of the intervals starting at ``starts``, if missing.

    An interval whose ids are already in a default partition is left out:
    creating it would fail.
    """
    existing = {p.name for p in await partitions_of(conn, TABLE_NAME)}
    for start in starts:
        suffix = _suffix(start, layout.unit)
        if f"{TABLE_NAME}_p{suffix}" in existing:
            continue
        low, high = id_prefix(start), id_prefix(next_start(start, layout.unit))
        taken = await conn.scalar(
            text(
                f"SELECT EXISTS (SELECT 1 FROM {TABLE_NAME}_default WHERE message_id >= :low AND message_id < :high) "
                f"OR EXISTS (SELECT 1 FROM {OPERATIONS_TABLE}_default WHERE message_id >= :low AND message_id < :high)"
            ),
            {"low": low, "high": high},
        )
        if taken:
            continue
        for table in (TABLE_NAME, OPERATIONS_TABLE):
            await conn.execute(
                text(f"CREATE TABLE {table}_p{suffix} PARTITION OF {table} FOR VALUES FROM ('{low}') TO ('{high}')")
            )


async def _ensure_spans(conn: AsyncConnection, layout: Layout) -> None:
    spans = [p for p in await partitions_of(conn, EVENTS_TABLE) if p.low is not None]
    in_use = 0
    for span in reversed(spans):
        if await conn.scalar(text(f"SELECT EXISTS (SELECT 1 FROM {span.name})")):
            in_use = int(span.high) - 1  # type: ignore[arg-type]
            break
    in_default = await conn.scalar(text(f"SELECT max(sequence) FROM {EVENTS_TABLE}_default"))
    await create_spans(conn, layout, through=max(in_use, in_default or 0) + SPANS_AHEAD * layout.events_per_partition)


async def create_spans(conn: AsyncConnection, layout: Layout, *, through: int) -> None:
    """Create event spans above the highest one (and above the default partition's numbers) up to ``through``."""
    spans = [p for p in await partitions_of(conn, EVENTS_TABLE) if p.low is not None]
    top = int(spans[-1].high) if spans else 1  # type: ignore[arg-type]
    in_default = await conn.scalar(text(f"SELECT max(sequence) FROM {EVENTS_TABLE}_default"))
    if in_default is not None:
        top = max(top, in_default + 1)
    while top <= through:
        high = top + layout.events_per_partition
        await conn.execute(
            text(f"CREATE TABLE {EVENTS_TABLE}_s{top} PARTITION OF {EVENTS_TABLE} FOR VALUES FROM ({top}) TO ({high})")
        )
        top = high


# -- retention ------------------------------------------------------------------------------


async def detach_partitions_before(conn: AsyncConnection, cutoff: datetime, *, limit: int | None = None) -> list[int]:
    """Detach (at most ``limit``) log partitions holding only records with ``timestamp < cutoff``.

    A partition qualifies when its whole id range is older than the cutoff
    and no record in it is as new as the cutoff (one index probe). Its
    operations partition goes with it. Returns how many records each held.
    Detaching changes the catalogue only; :func:`drop_detached`, after the
    transaction commits, removes the tables and their files.
    """
    below = id_prefix(cutoff)
    dropped: list[int] = []
    operations = {p.low: p.name for p in await partitions_of(conn, OPERATIONS_TABLE) if p.low is not None}
    for partition in await partitions_of(conn, TABLE_NAME):
        if limit is not None and len(dropped) >= limit:
            break
        if partition.high is None or partition.high > below:
            continue
        newer = await conn.scalar(
            text(f"SELECT EXISTS (SELECT 1 FROM {partition.name} WHERE timestamp >= :cutoff)"), {"cutoff": cutoff}
        )
        if newer:
            continue
        dropped.append(int(await conn.scalar(text(f"SELECT count(*) FROM {partition.name}")) or 0))
        await _detach(conn, TABLE_NAME, partition.name)
        if partition.low in operations:
            await _detach(conn, OPERATIONS_TABLE, operations[partition.low])
    return dropped


async def delete_records_before(
    conn: AsyncConnection, cutoff: datetime, *, limit: int | None = None, within: IdRange | None = None
) -> int:
    """Delete, row by row, (at most ``limit``) records with ``timestamp < cutoff`` and their operation ids.

    ``within``: the ids those records can have, so the statement is planned
    over their partitions only (see :mod:`audit_plugin_postgres.extents`).
    Returns how many records went.
    """
    parameters: dict[str, object] = {"cutoff": cutoff}
    doomed = "timestamp < :cutoff"
    if within is not None:
        doomed += " AND message_id >= :low"
        parameters["low"] = within.low
        if within.above is not None:
            doomed += " AND message_id < :above"
            parameters["above"] = within.above
    if limit is not None:
        doomed = f"message_id IN (SELECT message_id FROM {TABLE_NAME} WHERE {doomed} LIMIT {int(limit)})"
    deleted = await conn.scalar(
        text(
            f"WITH gone AS (DELETE FROM {TABLE_NAME} WHERE {doomed} RETURNING message_id), "
            f"operations AS (DELETE FROM {OPERATIONS_TABLE} o USING gone WHERE o.message_id = gone.message_id) "
            "SELECT count(*) FROM gone"
        ),
        parameters,
    )
    return int(deleted or 0)


class PartitionedPrefix(ChainPrefix):
    """The chain's prefix in a lifecycle table partitioned by sequence: whole spans are skipped and dropped.

    Finding the prune point reads, in each span in order, the block-range
    summary of ``at`` (a BRIN index: a few pages) until a span holds an entry
    as new as the cutoff, and only that span's rows; the spans below the
    prune point are dropped. So a run costs about one span, whatever the
    size of the chain.
    """

    async def first_at_or_after(self, conn: AsyncConnection, chain_id: str, cutoff: datetime) -> int | None:
        found: list[int] = []
        parameters = {"chain": chain_id, "cutoff": cutoff}
        for span in await partitions_of(conn, EVENTS_TABLE):
            if found and span.low is not None:
                continue  # a higher span: only the default partition may still hold a lower number
            newer = f"FROM {span.name} WHERE chain_id = :chain AND at >= :cutoff"
            await _scans(conn, "off")  # a bitmap of the BRIN summary, never a scan of the whole span
            try:
                any_newer = await conn.scalar(text(f"SELECT EXISTS (SELECT 1 {newer})"), parameters)
            finally:
                await _scans(conn, "on")
            if any_newer:
                found.append(await conn.scalar(text(f"SELECT sequence {newer} ORDER BY sequence LIMIT 1"), parameters))
        return min(found, default=None)

    async def drop_prefixes(self, conn: AsyncConnection, lasts: Mapping[str, int]) -> None:
        """Detach (for :func:`drop_detached`) the spans no chain needs any more, then delete the rest of each
        chain's pruned entries (``lasts``: chain id -> its new prune point, which its row holds by now).

        A span is not needed when it lies wholly at or below a pruned chain's
        prune point, no chain has an entry in it above its own prune point,
        and none of the pruned chains (the shards of one trail) can still
        write into it (each has an entry at or above its top already).
        """
        for span in await partitions_of(conn, EVENTS_TABLE):
            if span.high is None or int(span.high) - 1 > max(lasts.values()):
                continue
            top = int(span.high) - 1
            needed = await conn.scalar(
                text(
                    f"SELECT EXISTS (SELECT 1 FROM {CHAINS_TABLE} c WHERE EXISTS "
                    f"(SELECT 1 FROM {span.name} e WHERE e.chain_id = c.chain_id AND e.sequence > c.pruned_sequence)) "
                    f"OR EXISTS (SELECT 1 FROM unnest(CAST(:chains AS text[])) AS p(chain_id) WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {EVENTS_TABLE} e WHERE e.chain_id = p.chain_id AND e.sequence >= :top))"
                ),
                {"chains": list(lasts), "top": top},
            )
            if not needed:
                await _detach(conn, EVENTS_TABLE, span.name)
        for chain_id, last in lasts.items():
            await conn.execute(
                text(f"DELETE FROM {EVENTS_TABLE} WHERE chain_id = :chain AND sequence <= :last"),
                {"chain": chain_id, "last": last},
            )


async def _scans(conn: AsyncConnection, setting: str) -> None:
    """Allow (``"on"``) or forbid (``"off"``) sequential and plain index scans until the transaction ends."""
    for scan in ("enable_seqscan", "enable_indexscan"):
        await conn.execute(text(f"SET LOCAL {scan} = {setting}"))


_DETACHED = re.compile(rf"^(?:{TABLE_NAME}|{OPERATIONS_TABLE})_p[0-9]+$|^{EVENTS_TABLE}_s[0-9]+$")


async def _detach(conn: AsyncConnection, table: str, partition: str) -> None:
    await conn.execute(text(f"ALTER TABLE {table} DETACH PARTITION {partition}"))


async def drop_detached(conn: AsyncConnection) -> None:
    """Drop the partitions retention detached (also those a crash left behind).

    Removing a partition's files costs time growing with its size (about a
    tenth of a second for a few hundred megabytes on a small machine); done
    here, after the retention transaction, it holds no lock writers or
    readers of the partitioned tables wait for.
    """
    names = await conn.scalars(
        text(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition "
            "AND relnamespace = current_schema()::regnamespace AND relname LIKE 'message_audit_%'"
        )
    )
    for name in [name for name in names if _DETACHED.match(name)]:
        await conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
