"""``AuditQuery.before``: keyset pages over (timestamp, message_id), on every backend."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from audit_plugin import AuditQuery, MessageAuditTrail
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from tests.helpers import BASE_TIME, make_message


async def test_pages_after_a_cursor_cover_every_record_once_even_with_equal_timestamps(
    trail: MessageAuditTrail,
) -> None:
    # 3 records per timestamp, so the message id must break ties
    for n in range(30):
        await trail.log_message(make_message(f"a{n % 3}", "b", seconds=n // 3, payload={"n": n}))
    everything = await trail.query_messages(AuditQuery(limit=1000))
    pages: list[list[str]] = []
    query = AuditQuery(limit=7)
    while True:
        page = await trail.query_messages(query)
        if not page:
            break
        pages.append([record.message_id for record in page])
        last = page[-1]
        query = replace(query, before=(last.timestamp, last.message_id))
    assert [message_id for page in pages for message_id in page] == [r.message_id for r in everything]
    assert [len(page) for page in pages] == [7, 7, 7, 7, 2]


async def test_the_cursor_combines_with_filters_and_counts(trail: MessageAuditTrail) -> None:
    for n in range(10):
        await trail.log_message(make_message("planner" if n % 2 else "other", "worker", seconds=n))
    newest = (await trail.query_messages(AuditQuery(from_agent="planner", limit=1)))[0]
    older = AuditQuery(from_agent="planner", before=(newest.timestamp, newest.message_id))
    assert [r.from_agent for r in await trail.query_messages(older)] == ["planner"] * 4
    assert await trail.count_messages(older) == 4
    assert all(r.timestamp < newest.timestamp for r in await trail.query_messages(older))


def test_a_bad_cursor_is_refused_naming_the_field() -> None:
    with pytest.raises(FieldTypeError) as not_a_pair:
        AuditQuery(before="2026-01-01")  # type: ignore[arg-type]
    assert not_a_pair.value.field == "AuditQuery.before"
    with pytest.raises(FieldTypeError):
        AuditQuery(before=("2026-01-01", "id"))  # type: ignore[arg-type]
    with pytest.raises(InvalidFieldError):
        AuditQuery(before=(BASE_TIME, ""))
    naive = AuditQuery(before=(BASE_TIME.replace(tzinfo=None) + timedelta(hours=1), "id"))
    assert naive.before is not None and naive.before[0].utcoffset() == timedelta(0)
