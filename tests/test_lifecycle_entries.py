"""``trail.lifecycle_entries()``: the chain read back in order after a position, what store followers build on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from audit_plugin import MessageAuditTrail, MessageStatus, RetentionPolicy
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.sinks.delivery import ExportCounters, open_sender
from audit_plugin.sinks.follow import follow_store
from tests.helpers import make_message


async def test_entries_come_in_order_after_a_position_each_record_entry_with_its_record(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        messages = [make_message() for _ in range(5)]
        for message in messages:
            await trail.log_message(message)
            await trail.update_message_status(message.message_id, MessageStatus.DELIVERED)
        everything = await trail.lifecycle_entries()
        assert [entry.sequence for entry, _ in everything] == list(range(1, 11))
        assert [entry.kind for entry, _ in everything] == ["record", "status"] * 5
        for entry, record in everything:
            if entry.kind == "record":
                assert record is not None and record.message_id == entry.message_id
                assert record.status is MessageStatus.DELIVERED  # the record as stored now
            else:
                assert record is None
        assert [e.sequence for e, _ in await trail.lifecycle_entries(3, limit=4)] == [4, 5, 6, 7]
        assert await trail.lifecycle_entries(10) == []
        pages, position = [], 0
        while page := await trail.lifecycle_entries(position, limit=3):
            pages.append([entry.sequence for entry, _ in page])
            position = page[-1][0].sequence
        assert pages == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
        heads = [entry.entry_hash for entry, _ in everything]
        assert all(heads) and len(set(heads)) == 10
        for bad in ({"after": -1}, {"limit": 0}, {"after": "3"}):
            with pytest.raises((InvalidFieldError, TypeError)):
                await trail.lifecycle_entries(**bad)  # type: ignore[arg-type]


async def test_entries_pruned_by_retention_before_a_follower_read_them_are_counted_dropped(
    database_url: str, tmp_path: object
) -> None:
    now = datetime.now(UTC)
    async with MessageAuditTrail(database_url, retention_policy=RetentionPolicy.DAYS_30) as trail:
        for age in (400, 300, 1):
            await trail.log_message(make_message(at=now - timedelta(days=age)))
        await trail.flush()
        assert await trail.apply_retention_policy() == 2
        kept = await trail.lifecycle_entries()
        assert [entry.kind for entry, _ in kept] == ["record", "retention"]
        sender = open_sender(f"jsonl://{tmp_path}/out.jsonl")
        counters = ExportCounters(sender.address)
        position = await follow_store(trail, sender, counters, after=1, stop=asyncio.Event(), exit_when_idle=True)
        await sender.close()
    assert position == 4
    assert counters.stats.dropped == 1  # entry 2 was pruned after the follower had entry 1
    assert counters.stats.sent == 2
