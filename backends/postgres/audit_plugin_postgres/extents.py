"""Time extents of the partitioned log: which id ranges can hold records of a time window, so reads prune partitions.

The log is partitioned by message id (see :mod:`audit_plugin_postgres.partitions`),
but reads filter and order by record time, and a record's timestamp is not
bounded by the time its id carries (a consumer's copy has its arrival time, an
import keeps old times under new ids). ``message_audit_time_extents`` keeps,
per *bucket* of ids, the interval that holds the timestamps of every record in
it; a read turns its time window into the id range of the buckets whose
interval meets the window, and that range prunes partitions as a lookup by id
does.

* A bucket is the first :data:`PREFIX_LENGTH` characters of a UUIDv7 id: its
  creation time to about 4.7 hours (``hour`` and ``day`` layouts) or 3.1 days
  (``week``, ``month``), so the table keeps a few rows per day. Every other
  id (uuid4, chosen by hand) falls in the bucket ``''``, whose interval is
  all time: while such a record exists, a window it meets is not pruned.
* A bucket's interval starts as its ids' time span widened by :data:`SLACK`
  on each side, and grows only when a record lies outside it, so a writer
  whose records carry about their ids' time never touches the table after
  the bucket's first record (concurrent writers do not queue on its row).
* Statement-level ``AFTER INSERT`` and ``AFTER UPDATE`` triggers on the log
  keep it in the writing transaction, for ``COPY`` and any statement on the
  parent table; an interval only ever grows, so it always covers its records.
  Deleting records leaves intervals wider than needed (still correct);
  retention removes the buckets whose interval ends before its cutoff, all of
  whose records it deleted.

A read narrows in one of two ways (:func:`narrowing`): to the id range of the
buckets meeting its window, always correct; and, for a page newest (or
oldest) first, first to the four newest (oldest) buckets with a time bound,
which is the answer when it fills the page, and is followed by the whole
window when it does not. A store keeps the last first attempt
(:class:`FirstAttempts`): the next first page runs it without reading the
extents, in a statement that checks it still holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Boolean,
    DateTime,
    String,
    and_,
    bindparam,
    column,
    exists,
    false,
    literal_column,
    or_,
    table,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from audit_plugin.storage.schema import TABLE_NAME, audit_log
from audit_plugin.storage.sql import TimeNarrowing
from audit_plugin_postgres.partitions import Partitioning, next_start

EXTENTS_TABLE = "message_audit_time_extents"
PREFIX_LENGTH = {"hour": 6, "day": 6, "week": 5, "month": 5}
"""Characters of a UUIDv7 id naming its bucket, per layout: 6 hex digits are 2**24 ms, 5 are 2**28 ms."""
FIRST_BUCKETS = 4
"""Buckets a page's first attempt reads, at the end of the window its order starts from (about 19 hours by day)."""
FEW_PARTITIONS = 4
"""A read whose id range spans this many partitions or fewer (:data:`FIRST_BUCKETS` at least) is planned for its
values."""
SLACK = timedelta(minutes=15)
"""How far a record's time may lie from its id's before its bucket's interval must grow."""

_UUID7 = "^[0-9a-f]{8}-[0-9a-f]{4}-7"
_HEX = "0123456789abcdef"
_MOMENT = DateTime(timezone=True)
_EXTENTS = table(EXTENTS_TABLE, column("bucket", String()), column("low", _MOMENT), column("high", _MOMENT))
_JANUARY = datetime(2001, 1, 1, tzinfo=UTC)
"""An interval start whose month is the longest: the interval length a month layout is sized by."""

CUSTOM, GENERIC = "force_custom_plan", "force_generic_plan"
"""The ``plan_cache_mode`` values reads and retention choose (see :func:`planning`)."""


def planning(mode: str) -> str:
    """The statement planning the rest of the transaction's statements with ``mode``."""
    return f"SET LOCAL plan_cache_mode = {mode}"


def bucket_span(unit: Partitioning) -> timedelta:
    """The id time one bucket of a ``unit`` layout covers."""
    return timedelta(milliseconds=1 << (4 * (12 - PREFIX_LENGTH[unit])))


_CREATE_TABLE = f"""
CREATE TABLE {EXTENTS_TABLE} (
    bucket text COLLATE "C" PRIMARY KEY,
    low timestamptz NOT NULL,
    high timestamptz NOT NULL
)
"""


def _note(unit: Partitioning, rows: str) -> str:
    """The statement widening the intervals to cover the records of ``rows`` (a table or a transition table)."""
    prefix_length = PREFIX_LENGTH[unit]
    widest = bucket_span(unit) + SLACK
    return f"""
INSERT INTO {EXTENTS_TABLE} AS e (bucket, low, high)
SELECT g.bucket,
       CASE WHEN g.bucket = '' THEN '-infinity' ELSE least(g.low, s.at - interval '{SLACK.total_seconds()} s') END,
       CASE WHEN g.bucket = '' THEN 'infinity'
            ELSE greatest(g.high, s.at + interval '{widest.total_seconds()} s') END
FROM (SELECT CASE WHEN message_id ~ '{_UUID7}' THEN left(message_id, {prefix_length}) ELSE '' END AS bucket,
             min("timestamp") AS low, max("timestamp") AS high
      FROM {rows} GROUP BY 1) AS g
CROSS JOIN LATERAL (SELECT to_timestamp(('x' || rpad(g.bucket, 12, '0'))::bit(48)::bigint / 1000.0) AS at) AS s
WHERE NOT EXISTS (SELECT 1 FROM {EXTENTS_TABLE} AS x WHERE x.bucket = g.bucket AND x.low <= g.low AND x.high >= g.high)
ORDER BY 1
ON CONFLICT (bucket) DO UPDATE SET low = least(e.low, excluded.low), high = greatest(e.high, excluded.high)
"""


def few_for(unit: Partitioning) -> timedelta:
    """The id time a range may span and still be planned for its values (see :data:`FEW_PARTITIONS`)."""
    interval = next_start(_JANUARY, unit) - _JANUARY
    return max(FEW_PARTITIONS * interval, FIRST_BUCKETS * bucket_span(unit))


def wide_for(unit: Partitioning) -> timedelta:
    """The shortest window a scan (not a page) is narrowed for: its range is then at most about twice as long."""
    return FIRST_BUCKETS * bucket_span(unit)


async def install_extents(conn: AsyncConnection, unit: Partitioning) -> None:
    """Create the table, filled from the stored records, once; (re)install its triggers every time.

    Run in a write transaction on a partitioned store. As for the rollups,
    writers are held off while a missing table is filled, so no record is
    missed.
    """
    if await _missing(conn):
        await conn.execute(text(f"LOCK TABLE {TABLE_NAME} IN SHARE ROW EXCLUSIVE MODE"))
        if await _missing(conn):
            await conn.execute(text(_CREATE_TABLE))
            await conn.execute(text(_note(unit, TABLE_NAME)))
    function = f"{EXTENTS_TABLE}_note"
    await conn.execute(
        text(
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$\n"
            f"BEGIN\n{_note(unit, 'new_rows')};\nRETURN NULL;\nEND\n$body$"
        )
    )
    for event in ("INSERT", "UPDATE"):
        await conn.execute(
            text(
                f"CREATE OR REPLACE TRIGGER {EXTENTS_TABLE}_{event.lower()} AFTER {event} ON {TABLE_NAME} "
                f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
            )
        )


async def _missing(conn: AsyncConnection) -> bool:
    return await conn.scalar(text(f"SELECT to_regclass('{EXTENTS_TABLE}') IS NULL")) is True


async def forget_extents_before(conn: AsyncConnection, before: datetime) -> None:
    """Remove the buckets whose interval ends before ``before``: run where retention has deleted every record
    older than it (each such bucket is empty)."""
    await conn.execute(text(f"DELETE FROM {EXTENTS_TABLE} WHERE high < :before").bindparams(_moment("before", before)))


_SPAN_MS = "(('x' || rpad({last}, 12, 'f'))::bit(48)::bigint - ('x' || rpad({low}, 12, '0'))::bit(48)::bigint)"
"""SQL for the milliseconds of id time from the start of bucket ``low`` to the end of prefix ``last``."""

_NARROWING = f"""
WITH meeting AS (
    SELECT bucket, low, high FROM {EXTENTS_TABLE}
    WHERE low <= coalesce(:end_time, 'infinity') AND high >= coalesce(:start_time, '-infinity')
),
edge AS (SELECT CASE WHEN :newest THEN low ELSE high END AS at FROM meeting
         ORDER BY CASE WHEN :newest THEN high END DESC, low LIMIT 1 OFFSET :edge_offset),
marked AS (
    SELECT bucket, rpad(bucket, 8, 'f') AS last, CASE WHEN :newest THEN high >= at ELSE low <= at END AS near
    FROM meeting LEFT JOIN edge ON true
),
ranges AS (
    SELECT count(*) AS buckets, coalesce(bool_or(bucket = ''), false) AS unbounded, min(bucket) AS low,
           max(last) AS last, (SELECT at FROM edge) AS edge,
           min(bucket) FILTER (WHERE near) AS edge_low, max(last) FILTER (WHERE near) AS edge_last
    FROM marked
),
prior AS MATERIALIZED (SELECT current_setting('plan_cache_mode') AS mode),
attempt AS (
    SELECT CASE WHEN :paged AND edge IS NOT NULL THEN edge_low ELSE low END AS low,
           CASE WHEN :paged AND edge IS NOT NULL THEN edge_last ELSE last END AS last
    FROM ranges
)
SELECT r.buckets, r.unbounded, r.low, r.last, r.edge, r.edge_low, r.edge_last, p.mode,
       set_config('plan_cache_mode',
                  CASE WHEN r.buckets > 0 AND NOT r.unbounded
                            AND {_SPAN_MS.format(low="f.low", last="f.last")} <= :few_ms
                       THEN 'force_custom_plan' ELSE p.mode END,
                  true)
FROM ranges AS r, prior AS p, attempt AS f
"""
"""The ranges of a window's buckets and of its page's first attempt; planned for their values when they span
few partitions (``:few_ms`` of id time), as is the first statement to run after it."""


@dataclass(frozen=True, slots=True)
class IdRange:
    """Ids from ``low`` (inclusive) to ``above`` (exclusive; ``None``: no end)."""

    low: str
    above: str | None
    span: timedelta
    """The id time from the start of ``low`` to ``above``."""

    @classmethod
    def of(cls, low: str, high_prefix: str) -> IdRange:
        """The ids from ``low`` up to every id whose first 8 characters are ``high_prefix`` or less."""
        span_ms = int(high_prefix.ljust(12, "f"), 16) - int(low.ljust(12, "0"), 16)
        return cls(low, _successor(high_prefix), timedelta(milliseconds=span_ms))

    def conditions(self) -> list[ColumnElement[bool]]:
        message_id = audit_log.c.message_id
        return [message_id >= self.low] + ([] if self.above is None else [message_id < self.above])


EMPTY = "empty"
"""What :func:`window_ids` returns when no record is timed in the window."""


async def window_ids(conn: AsyncConnection, start: datetime | None, end: datetime | None) -> IdRange | str | None:
    """The ids of the records timed in ``[start, end]``: a range, :data:`EMPTY`, or ``None`` (any id).

    For a statement planned for its values (retention's); after a
    ``force_generic_plan`` it gives ``None``, as :func:`narrowing` explains.
    """
    meeting = await _Meeting.read(conn, start, end, newest_first=None, few=timedelta(0))
    if isinstance(meeting.ids, IdRange) and meeting.prior_mode == GENERIC:
        return None
    return meeting.ids


async def narrowing(
    conn: AsyncConnection, start: datetime | None, end: datetime | None, newest_first: bool | None, few: timedelta
) -> tuple[TimeNarrowing, FirstAttempt | None]:
    """The id conditions of the records timed in ``[start, end]`` (``None``: unbounded), and the page's first
    attempt they include, if any.

    ``newest_first`` (``True`` or ``False``, ``None``: not a page) asks also
    for a first attempt of a page read in that order: the
    :data:`FIRST_BUCKETS` buckets at that end of the window, and a time bound that keeps the attempt correct (see
    :class:`~audit_plugin.storage.sql.TimeNarrowing` and :class:`FirstAttempt`).

    A statement given an id range is planned for its values: over a range
    spanning ``few`` of id time or less planning is quick (the partitions
    outside are skipped before planning), and a generic plan, costed for any
    range, may walk every partition's primary key (0.9 s at 10M records). A
    read planned once (``force_generic_plan`` before this) whose range is
    wider is left as it was, without the range.
    """
    meeting = await _Meeting.read(conn, start, end, newest_first=newest_first, few=few)
    ids = meeting.ids
    if ids is None:
        return TimeNarrowing(), None
    if ids == EMPTY:
        return TimeNarrowing(window=[false()]), None
    assert isinstance(ids, IdRange)
    attempt = None
    edge_ids = meeting.edge_ids
    if newest_first is not None and meeting.edge is not None and edge_ids is not None and edge_ids.span <= few:
        attempt = FirstAttempt(newest_first, meeting.edge, edge_ids)  # the statement read planned it for its values
    if ids.span > few and meeting.prior_mode == GENERIC:
        window, window_mode = [], GENERIC
    else:
        window, window_mode = ids.conditions(), CUSTOM
    if attempt is None:
        await meeting.plan(conn, window_mode)
        return TimeNarrowing(window=window), None

    async def planned_window() -> list[ColumnElement[bool]]:
        await meeting.plan(conn, window_mode)
        return window

    return TimeNarrowing(first=attempt.conditions(), then=planned_window), attempt


@dataclass(frozen=True, slots=True)
class FirstAttempt:
    """A page's first attempt: the records of ``ids`` timed at or after ``edge`` (newest first; at or before it,
    oldest first).

    Every record it leaves out is older (newer) than all it returns as long
    as no bucket outside ``ids`` has an interval reaching ``edge``: such a
    bucket's records are all timed before (after) it. That holds when the
    attempt is read from the extents, and stays true until a record lands in
    a new bucket near the window's end (every few hours, as time passes), so
    a store keeps the last attempt (:class:`FirstAttempts`) and its later
    pages run it at once, checked by the statement itself
    (:meth:`checked`) instead of reading the extents first.
    """

    newest_first: bool
    edge: datetime
    ids: IdRange

    def conditions(self) -> list[ColumnElement[bool]]:
        """The attempt's conditions, for the statement run right after the read of the extents that gave it."""
        timestamp = audit_log.c.timestamp
        return [*self.ids.conditions(), timestamp >= self.edge if self.newest_first else timestamp <= self.edge]

    def checked(self, dialect: Dialect) -> ColumnElement[bool]:
        """:meth:`conditions` and a condition true only while no bucket outside ``ids`` reaches ``edge`` (else the
        attempt returns nothing), as SQL with the values written in.

        Made once per kept attempt, so a page's statement is the same SQL
        each time: a read planned once plans it once per connection, and the
        planner, seeing the values, keeps only the partitions of ``ids``.
        """
        bucket = _EXTENTS.c.bucket
        outside = [bucket < self.ids.low] + ([] if self.ids.above is None else [bucket >= self.ids.above])
        reaching = _EXTENTS.c.high >= self.edge if self.newest_first else _EXTENTS.c.low <= self.edge
        check = ~exists().where(or_(*outside), reaching)
        sql = and_(check, *self.conditions()).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        return literal_column(f"({sql})", Boolean())


class FirstAttempts:
    """A store's last first attempt per order, for the pages read with the window open at that end (no end time
    newest first, no start time oldest first): the first pages the command line, the viewer and the agent
    histories ask for."""

    def __init__(self) -> None:
        self._kept: dict[bool, ColumnElement[bool]] = {}
        """Per order, the kept attempt's checked conditions (:meth:`FirstAttempt.checked`)."""

    async def narrowing(
        self,
        conn: AsyncConnection,
        start: datetime | None,
        end: datetime | None,
        newest_first: bool | None,
        few: timedelta,
    ) -> TimeNarrowing:
        """:func:`narrowing`, a first attempt kept from an earlier page taking the place of the read of the extents
        while it stands: when it does not fill the page, the extents are read for the window (and a new attempt
        kept) and the window read."""
        if newest_first is None or (end if newest_first else start) is not None:
            return (await narrowing(conn, start, end, newest_first, few))[0]
        order = newest_first

        async def read_and_keep() -> TimeNarrowing:
            narrowed, attempt = await narrowing(conn, start, end, order, few)
            if attempt is None:
                self._kept.pop(order, None)
            else:
                self._kept[order] = attempt.checked(conn.dialect)
            return narrowed

        kept = self._kept.get(order)
        if kept is None:
            return await read_and_keep()

        async def window() -> list[ColumnElement[bool]]:
            narrowed = await read_and_keep()
            return narrowed.window if narrowed.then is None else await narrowed.then()

        return TimeNarrowing(first=[kept], then=window)


@dataclass(frozen=True, slots=True)
class _Meeting:
    """What :data:`_NARROWING` read: the window's ids, the first attempt's edge and ids, the plan modes."""

    ids: IdRange | str | None
    edge: datetime | None
    edge_ids: IdRange | None
    prior_mode: str
    first_mode: str

    @classmethod
    async def read(
        cls,
        conn: AsyncConnection,
        start: datetime | None,
        end: datetime | None,
        *,
        newest_first: bool | None,
        few: timedelta,
    ) -> _Meeting:
        statement = text(_NARROWING).bindparams(
            _moment("start_time", start),
            _moment("end_time", end),
            bindparam("newest", bool(newest_first)),
            bindparam("paged", newest_first is not None),
            bindparam("few_ms", int(few.total_seconds() * 1000)),
            bindparam("edge_offset", FIRST_BUCKETS - 1),
        )
        buckets, unbounded, low, last, edge, edge_low, edge_last, prior, first = (await conn.execute(statement)).one()
        if not buckets:
            return cls(EMPTY, None, None, prior, first)
        if unbounded:
            return cls(None, None, None, prior, first)
        edge_ids = None if edge is None else IdRange.of(edge_low, edge_last)
        return cls(IdRange.of(low, last), edge, edge_ids, prior, first)

    async def plan(self, conn: AsyncConnection, mode: str) -> None:
        """Plan the next statements on ``conn`` with ``mode``, unless the statement read already did."""
        if mode != self.first_mode:
            await conn.execute(text(planning(mode)))


def _successor(prefix: str) -> str | None:
    """The least hex string above every string starting with ``prefix`` or less (``None``: all f's)."""
    digits = prefix.rstrip("f")
    if not digits:
        return None
    return digits[:-1] + _HEX[_HEX.index(digits[-1]) + 1]


def _moment(name: str, value: datetime | None) -> object:
    return bindparam(name, value, type_=_MOMENT)
