"""Statistics rollups on PostgreSQL: per-hour counts kept as records are written, so statistics read no records.

``message_audit_rollup`` holds, per UTC hour of record time and per value of
each dimension :func:`statistics` reports (``status``, ``type``, ``sender``,
``receiver``), the number of records, and for the status dimension the
number of delivered records with a delivery time and the sum of their
delivery seconds. Statement-level ``AFTER`` triggers with transition tables
keep it exact in the writing transaction: an ``INSERT`` adds its new rows,
a ``DELETE`` subtracts its old ones, an ``UPDATE`` both (a status change
moves a count from one status to another). They fire for ``COPY`` and for
every statement on a partitioned table's parent. What fires no trigger
(``TRUNCATE``, dropping a partition) must be followed by
:func:`forget_rollups_before`.

Marginal counts per dimension rather than one row per combination keep an
hour's rows few (statuses + types + senders + receivers) whatever the fleet's
pairings. :func:`statistics` adds up the whole hours inside a range and
reads only the records of the partial hours at its edges; the sums are
exact (``numeric``), so the result equals a scan of the records. Latency
percentiles cannot be summed from buckets and stay a scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_plugin.model.messages import MessageStatus
from audit_plugin.model.records import AuditStatistics
from audit_plugin.storage.schema import TABLE_NAME
from audit_plugin.storage.sql import TOP_AGENTS, summarise

ROLLUP_TABLE = "message_audit_rollup"
BUCKET = timedelta(hours=1)

_CREATE_TABLE = f"""
CREATE TABLE {ROLLUP_TABLE} (
    bucket timestamptz NOT NULL,
    dimension text NOT NULL,
    value text NOT NULL,
    messages bigint NOT NULL,
    delivered bigint NOT NULL,
    delivered_seconds numeric NOT NULL,
    PRIMARY KEY (bucket, dimension, value)
)
"""

_CHANGED_COLUMNS = '"timestamp", status, message_type, from_agent, to_agent, delivered_at'
_DIMENSIONS = f"""
CROSS JOIN LATERAL (VALUES
    ('status', c.status, c.status = '{MessageStatus.DELIVERED.value}' AND c.delivered_at IS NOT NULL),
    ('type', c.message_type, false),
    ('sender', c.from_agent, false),
    ('receiver', c.to_agent, false)
) AS d(dimension, value, latency)
"""
_SECONDS = 'extract(epoch FROM c.delivered_at - c."timestamp")'


def _apply(changed: str) -> str:
    """Add the signed rows of ``changed`` (columns ``sign`` and :data:`_CHANGED_COLUMNS`) to the rollup."""
    messages = "sum(c.sign)"
    delivered = "coalesce(sum(c.sign) FILTER (WHERE d.latency), 0)"
    seconds = f"coalesce(sum(c.sign * {_SECONDS}) FILTER (WHERE d.latency), 0)"
    return f"""
INSERT INTO {ROLLUP_TABLE} AS r (bucket, dimension, value, messages, delivered, delivered_seconds)
SELECT date_trunc('hour', c."timestamp", 'UTC'), d.dimension, d.value, {messages}, {delivered}, {seconds}
FROM ({changed}) AS c
{_DIMENSIONS}
GROUP BY 1, 2, 3
HAVING {messages} <> 0 OR {delivered} <> 0 OR {seconds} <> 0
ORDER BY 1, 2, 3
ON CONFLICT (bucket, dimension, value) DO UPDATE SET
    messages = r.messages + excluded.messages,
    delivered = r.delivered + excluded.delivered,
    delivered_seconds = r.delivered_seconds + excluded.delivered_seconds
"""


def _rows(sign: int, source: str) -> str:
    return f"SELECT {sign} AS sign, {_CHANGED_COLUMNS} FROM {source}"


_TRIGGERS = {
    "INSERT": ("NEW TABLE AS new_rows", _rows(1, "new_rows")),
    "DELETE": ("OLD TABLE AS old_rows", _rows(-1, "old_rows")),
    "UPDATE": (
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        f"{_rows(1, 'new_rows')} UNION ALL {_rows(-1, 'old_rows')}",
    ),
}
"""Per event (PostgreSQL allows transition tables on single-event triggers only): its tables, its signed rows."""


def _install_statements() -> list[str]:
    statements = []
    for event, (referencing, changed) in _TRIGGERS.items():
        name = f"{ROLLUP_TABLE}_{event.lower()}"
        statements.append(
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$\n"
            f"BEGIN\n{_apply(changed)};\nRETURN NULL;\nEND\n$body$"
        )
        statements.append(
            f"CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {TABLE_NAME} REFERENCING {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
    return statements


async def install_rollups(conn: AsyncConnection) -> None:
    """Create the rollup table, filled from the stored records, once; (re)install its triggers every time.

    Run in a write transaction. When the table is missing, writers to the
    records are held off (``SHARE ROW EXCLUSIVE``) while it is built from
    the rows stored, so no record is counted twice or missed; later calls
    only replace the functions and triggers (cheap, idempotent).
    """
    if await _missing(conn):
        await conn.execute(text(f"LOCK TABLE {TABLE_NAME} IN SHARE ROW EXCLUSIVE MODE"))
        if await _missing(conn):
            await conn.execute(text(_CREATE_TABLE))
            await conn.execute(text(_apply(_rows(1, TABLE_NAME))))
    for statement in _install_statements():
        await conn.execute(text(statement))


async def _missing(conn: AsyncConnection) -> bool:
    return await conn.scalar(text(f"SELECT to_regclass('{ROLLUP_TABLE}') IS NULL")) is True


async def forget_rollups_before(conn: AsyncConnection, before: datetime) -> None:
    """Make the rollups match the records after every record older than ``before`` went without a trigger.

    For a caller that dropped partitions (or truncated): the buckets before
    ``before``'s hour are removed; if ``before`` falls inside an hour, that
    hour is counted again from the records left. Run it in the transaction
    that dropped them.
    """
    before = _utc(before)
    hour = _floor(before)
    if hour == before:
        await conn.execute(text(f"DELETE FROM {ROLLUP_TABLE} WHERE bucket < :hour"), {"hour": hour})
        return
    await conn.execute(text(f"DELETE FROM {ROLLUP_TABLE} WHERE bucket <= :hour"), {"hour": hour})
    in_hour = f'{TABLE_NAME} WHERE "timestamp" >= :hour AND "timestamp" < :next'
    await conn.execute(text(_apply(_rows(1, in_hour))), {"hour": hour, "next": hour + BUCKET})


@dataclass(frozen=True, slots=True)
class Span:
    """A statistics range (both ends inclusive) as whole hours read from the rollup and edges read from the records."""

    hours: tuple[datetime | None, datetime | None] | None
    """``[first, end)`` bucket starts (``None``: unbounded), or ``None`` when no whole hour is inside."""
    edges: list[tuple[datetime | None, datetime | None, bool]]
    """``(start, end, end_inclusive)`` ranges of record time outside whole hours (``None``: unbounded)."""

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None) -> Span:
        start = None if start is None else _utc(start)
        end = None if end is None else _utc(end)
        try:
            first = None if start is None else _ceil(start)
            after = None if end is None else _floor(end + timedelta(microseconds=1))
        except OverflowError:  # a bound at the end of time: no whole hour to read, the records answer
            return cls(None, [(start, end, True)])
        if first is not None and after is not None and first >= after:
            return cls(None, [(start, end, True)])
        edges: list[tuple[datetime | None, datetime | None, bool]] = []
        if start is not None and first is not None and start < first:
            edges.append((start, first, False))
        if end is not None and after is not None and after <= end:
            edges.append((after, end, True))
        return cls((first, after), edges)


async def statistics(conn: AsyncConnection, start: datetime | None, end: datetime | None) -> AuditStatistics:
    """What :meth:`~audit_plugin.storage.sql.SQLBackend.statistics` returns, from the rollup plus the edges' records."""
    span = Span.of(start, end)
    parts: list[str] = []
    params: dict[str, Any] = {}
    if span.hours is not None:
        bounds = []
        first, after = span.hours
        if first is not None:
            bounds.append("bucket >= :first_hour")
            params["first_hour"] = first
        if after is not None:
            bounds.append("bucket < :end_hour")
            params["end_hour"] = after
        where = f" WHERE {' AND '.join(bounds)}" if bounds else ""
        parts.append(f"SELECT dimension, value, messages, delivered, delivered_seconds FROM {ROLLUP_TABLE}{where}")
    for n, (low, high, inclusive) in enumerate(span.edges):
        window = ["true"]
        if low is not None:
            window.append(f'c."timestamp" >= :low{n}')
            params[f"low{n}"] = low
        if high is not None:
            window.append(f'c."timestamp" {"<=" if inclusive else "<"} :high{n}')
            params[f"high{n}"] = high
        parts.append(
            "SELECT d.dimension, d.value, 1, CASE WHEN d.latency THEN 1 ELSE 0 END, "
            f"CASE WHEN d.latency THEN {_SECONDS} ELSE 0 END FROM {TABLE_NAME} AS c {_DIMENSIONS}"
            f"WHERE {' AND '.join(window)}"
        )
    query = f"""
WITH parts (dimension, value, messages, delivered, seconds) AS ({" UNION ALL ".join(parts)}),
totals AS (
    SELECT dimension, value, sum(messages) AS messages, sum(delivered) AS delivered, sum(seconds) AS seconds
    FROM parts GROUP BY dimension, value
)
SELECT dimension, value, messages,
       (SELECT sum(seconds) / nullif(sum(delivered), 0) FROM totals WHERE dimension = 'status') AS average
FROM totals WHERE messages > 0
ORDER BY dimension, messages DESC, value
"""
    counts: dict[str, list[tuple[str, int]]] = {"status": [], "type": [], "sender": [], "receiver": []}
    average = None
    for dimension, value, messages, row_average in (await conn.execute(text(query), params)).all():
        counts[dimension].append((value, int(messages)))
        average = row_average
    return summarise(
        dict(counts["status"]),
        dict(counts["type"]),
        counts["sender"][:TOP_AGENTS],
        counts["receiver"][:TOP_AGENTS],
        average,
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil(moment: datetime) -> datetime:
    hour = _floor(moment)
    return hour if hour == moment else hour + BUCKET
