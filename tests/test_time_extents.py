"""Time filters prune the partitioned log: reads narrowed by the time extents, always giving what a scan gives."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import uuid_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text

from audit_plugin import AuditQuery, Message, MessageAuditTrail, MessageType

pytest.importorskip("audit_plugin_postgres")

from audit_plugin_postgres import extents, partitions
from audit_plugin_postgres.testing import throwaway_database
from tests.helpers import asyncpg_dsn

NOW = datetime.now(UTC).replace(microsecond=0)
PARTITION = re.compile(r"message_audit_log_(p[0-9]+|default)")


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[tuple[MessageAuditTrail, MessageAuditTrail]]:
    """A partitioned store (the default) and an unpartitioned one: the second is the oracle."""
    async with (
        throwaway_database() as partitioned,
        throwaway_database() as flat,
        MessageAuditTrail(partitioned) as pruned,
        MessageAuditTrail(flat + "?partitioning=none") as scanned,
    ):
        yield pruned, scanned


def _message(made: datetime, timed: datetime, n: int, *, agent: str = "a", foreign: bool = False) -> Message:
    """A message whose id carries ``made`` (a uuid4 when ``foreign``) and whose timestamp is ``timed``."""
    nanos = int(made.timestamp() * 1_000_000_000) + n
    return Message(
        message_id=str(uuid.uuid4()) if foreign else str(uuid_utils.uuid7(nanoseconds=nanos)),
        from_agent=agent,
        to_agent="b",
        message_type=MessageType.EVENT,
        payload={"n": n},
        timestamp=timed,
    )


async def _store(messages: list[Message], *trails: MessageAuditTrail) -> None:
    for trail in trails:
        for message in messages:
            await trail.log_message(message)
        await trail.flush()


def _ids(records: list[Any]) -> list[str]:
    return [record.message_id for record in records]


async def _same_answers(pruned: MessageAuditTrail, scanned: MessageAuditTrail, start: datetime, end: datetime) -> None:
    """Every read narrowed by time answers as the unpartitioned store does."""
    for query in (
        AuditQuery(limit=7),
        AuditQuery(start_time=start, end_time=end, limit=500),
        AuditQuery(start_time=start, limit=3),
        AuditQuery(end_time=end, limit=3),
        AuditQuery(from_agent="a", limit=5),
    ):
        assert _ids(await pruned.query_messages(query)) == _ids(await scanned.query_messages(query)), query
        assert await pruned.count_messages(query) == await scanned.count_messages(query), query
    for query in (AuditQuery(limit=4), AuditQuery(from_agent="a", to_agent="b", limit=2)):
        for oldest_first in (False, True, False, True):  # again, on the first attempts the first reads kept
            answers = [await trail.backend.query(query, oldest_first=oldest_first) for trail in (pruned, scanned)]
            assert _ids(answers[0]) == _ids(answers[1]), (query, oldest_first)
    window = AuditQuery(start_time=start, end_time=end, limit=500)
    assert [r.message_id async for r in pruned.stream_messages(window)] == [
        r.message_id async for r in scanned.stream_messages(window)
    ]
    assert await pruned.get_statistics(start, end) == await scanned.get_statistics(start, end)
    for limit in (4, None):
        assert _ids(await pruned.backend.agent_history("a", start, limit)) == _ids(
            await scanned.backend.agent_history("a", start, limit)
        )
    assert await pruned.get_message_volume(start, end) == await scanned.get_message_volume(start, end)
    assert await pruned.get_delivery_percentiles(start, end) == await scanned.get_delivery_percentiles(start, end)


@contextmanager
def _statements(trail: MessageAuditTrail) -> Iterator[list[tuple[str, Any]]]:
    """The statements ``trail`` sends to the database meanwhile (on either engine), with their parameters."""
    seen: list[tuple[str, Any]] = []
    backend: Any = trail.backend
    engines = [backend.engine.sync_engine, backend.planned_once_engine.sync_engine]

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, parameters))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)


async def _partitions_read(trail: MessageAuditTrail, statements: list[tuple[str, Any]]) -> set[str]:
    """The log partitions the plans of ``statements``' reads of the log open."""
    opened: set[str] = set()
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        for statement, parameters in statements:
            if statement.startswith("SELECT message_audit_log."):
                plan = (await conn.exec_driver_sql("EXPLAIN " + statement, parameters)).all()
                opened |= {word for (line,) in plan for word in line.split() if PARTITION.fullmatch(word)}
    return opened


async def test_records_timed_far_from_their_ids_are_found(stores: tuple[MessageAuditTrail, MessageAuditTrail]) -> None:
    pruned, scanned = stores
    messages = [
        _message(NOW - timedelta(days=day, hours=n), NOW - timedelta(days=day, hours=n), n)
        for day in range(4)
        for n in range(6)
    ]
    messages += [
        _message(NOW, NOW - timedelta(days=20), 100),  # a new id carrying an old time (an import)
        _message(NOW - timedelta(days=3), NOW + timedelta(hours=2), 101),  # an old id, a late copy
        _message(NOW - timedelta(days=2), NOW - timedelta(days=2, hours=1), 102, agent="rare"),
    ]
    await _store(messages, pruned, scanned)
    for start, end in (
        (NOW - timedelta(days=21), NOW - timedelta(days=19)),
        (NOW + timedelta(hours=1), NOW + timedelta(hours=3)),
        (NOW - timedelta(days=2, hours=3), NOW - timedelta(days=1)),
        (NOW - timedelta(days=30), NOW + timedelta(days=1)),
        (NOW + timedelta(days=5), NOW + timedelta(days=6)),
    ):
        await _same_answers(pruned, scanned, start, end)
    imported = await pruned.query_messages(
        AuditQuery(start_time=NOW - timedelta(days=21), end_time=NOW - timedelta(days=19))
    )
    assert _ids(imported) == [messages[-3].message_id]


async def test_a_window_opens_only_its_partitions_and_the_newest_page_the_newest(
    stores: tuple[MessageAuditTrail, MessageAuditTrail],
) -> None:
    pruned, _ = stores
    messages = [
        _message(NOW - timedelta(days=day, minutes=n), NOW - timedelta(days=day, minutes=n), n)
        for day in range(5)
        for n in range(60)
    ]
    async with pruned.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        # the partitions of the past days, as an operator makes them before importing (else: the default one)
        await partitions.create_intervals(
            conn, pruned.backend.layout, [partitions.interval_start(NOW - timedelta(days=d), "day") for d in range(6)]
        )  # type: ignore[attr-defined]
    await _store(messages, pruned)
    three_days_ago = NOW - timedelta(days=3)
    with _statements(pruned) as newest:
        page = await pruned.query_messages(AuditQuery(limit=20))
    with _statements(pruned) as window:
        day = await pruned.query_messages(
            AuditQuery(start_time=three_days_ago - timedelta(minutes=30), end_time=three_days_ago, limit=500)
        )
    assert _ids(page) == [m.message_id for m in messages[:20]]
    assert len(day) == 31
    # the first attempt reads the four newest buckets holding records: here an hour on each of four days (an hour
    # that crosses midnight is in two partitions); the newest bucket (4.7 hours of ids) reaches into tomorrow's
    # partition when it crosses midnight
    newest_days = {f"message_audit_log_p{NOW + timedelta(days=1):%Y%m%d}"} | {
        f"message_audit_log_p{NOW - timedelta(days=d, minutes=minutes):%Y%m%d}"
        for d in range(extents.FIRST_BUCKETS)
        for minutes in (0, 59)
    }
    assert await _partitions_read(pruned, newest) <= newest_days
    opened = await _partitions_read(pruned, window)
    # its day's partition; the next or previous day's too when the window's buckets (4.7 hours) cross midnight
    assert f"message_audit_log_p{three_days_ago:%Y%m%d}" in opened and len(opened) <= 2


async def test_a_kept_first_attempt_answers_the_next_pages_alone_until_a_newer_bucket_appears(
    stores: tuple[MessageAuditTrail, MessageAuditTrail],
) -> None:
    pruned, scanned = stores
    # a record every 5 hours for six days: a bucket (4.7 hours of ids) each
    messages = [_message(NOW - timedelta(hours=5 * n), NOW - timedelta(hours=5 * n), n) for n in range(30)]
    await _store(messages, pruned, scanned)
    query = AuditQuery(limit=3)
    first = await pruned.query_messages(query)  # reads the extents, keeps the page's first attempt
    with _statements(pruned) as kept:
        again = await pruned.query_messages(query)
    assert _ids(again) == _ids(first) == _ids(await scanned.query_messages(query)) == _ids(messages[:3])
    assert len(kept) == 1 and extents.EXTENTS_TABLE in kept[0][0]  # the page, checking the attempt still holds
    # today's partition (tomorrow's too when the newest bucket crosses midnight) and the default one (older days)
    nearby = {f"message_audit_log_p{NOW + timedelta(days=d):%Y%m%d}" for d in (0, 1)} | {"message_audit_log_default"}
    assert await _partitions_read(pruned, kept) <= nearby

    newer = _message(NOW + timedelta(hours=10), NOW + timedelta(hours=10), 99)  # in a bucket after the attempt's
    await _store([newer], pruned, scanned)
    with _statements(pruned) as stale:
        page = await pruned.query_messages(query)
    assert _ids(page) == _ids(await scanned.query_messages(query)) == [newer.message_id, *_ids(messages[:2])]
    # the kept attempt, empty; the extents; the window (after setting how it is planned, when that differs)
    assert 3 <= len(stale) <= 4 and stale[1][0].startswith("\nWITH meeting")
    with _statements(pruned) as renewed:
        assert _ids(await pruned.query_messages(query)) == _ids(page)
    assert len(renewed) == 1

    late = _message(NOW - timedelta(hours=30), NOW + timedelta(hours=11), 100)  # an old bucket's late copy
    await _store([late], pruned, scanned)
    assert _ids(await pruned.query_messages(query)) == _ids(await scanned.query_messages(query))
    assert _ids(await pruned.query_messages(query))[0] == late.message_id


async def test_a_foreign_id_turns_pruning_off_where_its_time_is_unknown_and_answers_stay_right(
    stores: tuple[MessageAuditTrail, MessageAuditTrail],
) -> None:
    pruned, scanned = stores
    messages = [_message(NOW - timedelta(days=day), NOW - timedelta(days=day), day) for day in range(3)]
    messages.append(_message(NOW, NOW - timedelta(days=1, minutes=1), 9, foreign=True))
    await _store(messages, pruned, scanned)
    async with pruned.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        assert await extents.window_ids(conn, NOW - timedelta(days=2), NOW) is None  # any id: the uuid4 may be there
    await _same_answers(pruned, scanned, NOW - timedelta(days=1, minutes=2), NOW - timedelta(days=1))


async def test_a_timestamp_changed_by_hand_grows_its_extent(
    stores: tuple[MessageAuditTrail, MessageAuditTrail],
) -> None:
    pruned, _ = stores
    message = _message(NOW, NOW, 0)
    await _store([message], pruned)
    async with pruned.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            text('UPDATE message_audit_log SET "timestamp" = :at WHERE message_id = :id'),
            {"at": NOW - timedelta(days=40), "id": message.message_id},
        )
    found = await pruned.query_messages(AuditQuery(end_time=NOW - timedelta(days=39)))
    assert _ids(found) == [message.message_id]


async def test_retention_forgets_the_extents_of_what_it_dropped(
    stores: tuple[MessageAuditTrail, MessageAuditTrail],
) -> None:
    pruned, scanned = stores
    messages = [_message(NOW - timedelta(days=day), NOW - timedelta(days=day), day) for day in range(6)]
    await _store(messages, pruned, scanned)
    cutoff = NOW - timedelta(days=2, hours=12)
    assert await pruned.backend.delete_older_than(cutoff) == await scanned.backend.delete_older_than(cutoff) == 3
    async with pruned.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        kept = (await conn.execute(text(f"SELECT min(high) FROM {extents.EXTENTS_TABLE}"))).scalar_one()
    assert kept >= cutoff
    await _same_answers(pruned, scanned, NOW - timedelta(days=10), NOW)


async def test_a_store_partitioned_before_extents_is_filled_on_start(postgres_url: str) -> None:
    async with throwaway_database() as url:
        async with MessageAuditTrail(url) as trail:
            old = _message(NOW, NOW - timedelta(days=9), 0)
            await _store([old], trail)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:  # as a store made before the extents existed
            await conn.execute(f"DROP TABLE {extents.EXTENTS_TABLE}")
            for event_name in ("insert", "update"):
                await conn.execute(f"DROP TRIGGER {extents.EXTENTS_TABLE}_{event_name} ON message_audit_log")
        finally:
            await conn.close()
        async with MessageAuditTrail(url) as trail:
            found = await trail.query_messages(AuditQuery(end_time=NOW - timedelta(days=8)))
    assert _ids(found) == [old.message_id]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.tuples(st.integers(-30 * 24, 24), st.integers(-40 * 24 * 60, 2 * 24 * 60), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    window=st.tuples(st.integers(-45 * 24, 48), st.integers(0, 20 * 24)),
)
async def test_any_records_and_window_answer_as_a_scan(
    stores: tuple[MessageAuditTrail, MessageAuditTrail],
    records: list[tuple[int, int, bool]],
    window: tuple[int, int],
) -> None:
    """Ids of any time, timestamps hours or weeks from them, some uuid4 ids: the same answers as a scan."""
    pruned, scanned = stores
    for trail in stores:  # each example from empty stores: one uuid4 left over would turn pruning off for all
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            also = f", {extents.EXTENTS_TABLE}" if trail is pruned else ""
            await conn.execute(text(f"TRUNCATE message_audit_log, message_audit_rollup{also}"))
    messages = [
        _message(NOW + timedelta(hours=made), NOW + timedelta(hours=made, minutes=drift), n, foreign=foreign and n == 3)
        for n, (made, drift, foreign) in enumerate(records)
    ]
    await _store(messages, pruned, scanned)
    start = NOW + timedelta(hours=window[0])
    await _same_answers(pruned, scanned, start, start + timedelta(hours=window[1]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kept=st.lists(st.tuples(st.integers(-10 * 24, 0), st.integers(-3 * 60, 3 * 60)), min_size=4, max_size=12),
    later=st.lists(
        st.tuples(st.integers(-10 * 24, 24), st.integers(-2 * 24 * 60, 2 * 24 * 60), st.booleans()), max_size=4
    ),
    limit=st.integers(1, 4),
)
async def test_kept_first_attempts_answer_as_a_scan_after_any_later_records(
    stores: tuple[MessageAuditTrail, MessageAuditTrail],
    kept: list[tuple[int, int]],
    later: list[tuple[int, int, bool]],
    limit: int,
) -> None:
    """First pages read (their first attempts kept), then records of any time, ids or timestamps, some uuid4: the
    next first pages, each order, answer as a scan."""
    pruned, scanned = stores
    for trail in stores:
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            also = f", {extents.EXTENTS_TABLE}" if trail is pruned else ""
            await conn.execute(text(f"TRUNCATE message_audit_log, message_audit_rollup{also}"))
    hours, minutes = (lambda n: timedelta(hours=n)), (lambda n: timedelta(minutes=n))
    first = [_message(NOW + hours(made), NOW + hours(made) + minutes(drift), n) for n, (made, drift) in enumerate(kept)]
    await _store(first, pruned, scanned)
    queries = [AuditQuery(limit=limit), AuditQuery(from_agent="a", to_agent="b", limit=limit)]
    for oldest_first in (False, True):
        for query in queries:
            await pruned.backend.query(query, oldest_first=oldest_first)
    added = [
        _message(NOW + hours(made), NOW + hours(made) + minutes(drift), 100 + n, foreign=foreign)
        for n, (made, drift, foreign) in enumerate(later)
    ]
    await _store(added, pruned, scanned)
    for oldest_first in (False, True):
        for query in queries:
            answers = [await trail.backend.query(query, oldest_first=oldest_first) for trail in stores]
            assert _ids(answers[0]) == _ids(answers[1]), (query, oldest_first)


_HEX8 = st.text(alphabet="0123456789abcdef", min_size=8, max_size=8)


@given(last=_HEX8, prefix=_HEX8, rest=st.text(max_size=30))
def test_an_id_range_holds_every_id_whose_start_is_at_most_its_last_prefix(last: str, prefix: str, rest: str) -> None:
    ids = extents.IdRange.of("0", last)
    inside = prefix <= last
    message_id = prefix + rest
    if inside:
        assert ids.above is None or message_id < ids.above
    else:
        assert ids.above is not None and message_id >= ids.above
    assert extents.IdRange.of("0", "ffffffff").above is None
