"""Sharded chains: a trail's lifecycle in N independent hash chains, on every backend.

One shard is the single chain of earlier versions (same id, same rows).
Several: every entry of a message goes into its shard's chain, the store
remembers the count, batches spanning shards lock them in order, concurrent
writers of different shards keep every chain gapless, ``verify()`` reports
per shard (a tampered shard is named, the others stay OK), checkpoints are
per shard, retention is recorded in every shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from audit_plugin import MessageAuditTrail, MessageStatus
from audit_plugin.exceptions import AuditError, ChainError, FieldTypeError, InvalidFieldError
from audit_plugin.integrity.checkpoint import Checkpoint
from audit_plugin.integrity.shards import (
    MAX_SHARDS,
    ShardedChains,
    shard_chain_id,
    shard_checkpoints,
    shard_count,
    shard_of,
)
from audit_plugin.integrity.verify import ShardsReport, VerifyReport
from audit_plugin.model.records import record_row
from audit_plugin.storage.batch_write import BatchWrite, Begin, Request
from audit_plugin.storage.integrity_schema import chains, events
from audit_plugin.storage.schema import audit_log
from tests.cli_support import assert_one_line_error, run_cli
from tests.helpers import BASE_TIME, make_message

SHARDS = 4
SHARDS_OF_M_0_TO_7 = [2, 0, 2, 0, 3, 1, 3, 1]
"""CRC-32 of the ids, modulo 4: fixed, so a change of the function (which would move messages) fails."""


async def entries_by_chain(trail: MessageAuditTrail) -> dict[str, list[tuple[int, str | None, str]]]:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(select(e.chain_id, e.sequence, e.message_id, e.kind).order_by(e.sequence))
        found: dict[str, list[tuple[int, str | None, str]]] = defaultdict(list)
        for chain_id, sequence, message_id, kind in rows:
            found[chain_id].append((sequence, message_id, kind))
        return dict(found)


e = events.c


async def refused(trail: MessageAuditTrail, reason: str) -> None:
    """``trail.initialize()`` raises a ChainError matching ``reason``; the trail is closed either way."""
    try:
        with pytest.raises(ChainError, match=reason):
            await trail.initialize()
    finally:
        await trail.close()


async def write_some(trail: MessageAuditTrail, count: int = 40) -> list[str]:
    messages = [make_message(seconds=n) for n in range(count)]
    ids = [message.message_id for message in messages]
    await asyncio.gather(*(trail.log_message(message) for message in messages))
    for message_id in ids[::3]:
        await trail.update_message_status(message_id, MessageStatus.DELIVERED)
    return ids


async def test_one_shard_is_the_single_chain_of_earlier_versions(database_url: str) -> None:
    async with MessageAuditTrail(database_url, shards=1) as trail:
        assert (trail.shards, trail.chain_id, trail.chains.chain_ids) == (1, "default", ("default",))
        await write_some(trail, 10)
        report = await trail.verify()
        assert isinstance(report, VerifyReport) and report.ok and report.chain_id == "default"
        assert set(await entries_by_chain(trail)) == {"default"}
        checkpoint = await trail.checkpoint()
        assert isinstance(checkpoint, Checkpoint) and checkpoint.chain_id == "default"
    async with MessageAuditTrail(database_url) as reopened:  # shards not given: the store's
        assert reopened.shards == 1
        assert (await reopened.verify(against=checkpoint)).ok


async def test_every_entry_of_a_message_goes_into_its_shard_and_each_shard_verifies(database_url: str) -> None:
    async with MessageAuditTrail(database_url, shards=SHARDS) as trail:
        ids = await write_some(trail)
        found = await entries_by_chain(trail)
        assert set(found) == {f"default/{k}" for k in range(SHARDS)}  # 40 messages reach every one of 4 shards
        for chain_id, entries in found.items():
            assert [sequence for sequence, _, _ in entries] == list(range(1, len(entries) + 1))  # gapless
            shard = int(chain_id.split("/")[1])
            assert all(shard_of(message_id, SHARDS) == shard for _, message_id, _ in entries if message_id)
        assert sum(len(entries) for entries in found.values()) == len(ids) + len(ids[::3])
        report = await trail.verify()
        assert isinstance(report, ShardsReport) and report.ok, report
        assert [r.chain_id for r in report.shards] == [f"default/{k}" for k in range(SHARDS)]
        assert report.entries == len(ids) + len(ids[::3])
        assert str(report).startswith("OK: chain 'default', 4 shards")


async def test_a_tampered_shard_is_named_and_the_others_stay_intact(database_url: str) -> None:
    async with MessageAuditTrail(database_url, shards=SHARDS) as trail:
        ids = await write_some(trail)
        victim = ids[5]
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(update(audit_log).where(audit_log.c.message_id == victim).values(to_agent="mallory"))
        report = await trail.verify()
        assert isinstance(report, ShardsReport) and not report.ok
        (broken,) = report.broken
        assert broken.chain_id == f"default/{shard_of(victim, SHARDS)}" and broken.message_id == victim
        assert "record or its payload altered" in (broken.reason or "")
        assert sum(r.ok for r in report.shards) == SHARDS - 1
        assert f"default/{shard_of(victim, SHARDS)}: BROKEN" in str(report)


async def test_a_problem_outside_the_chains_is_reported_in_its_messages_shard(database_url: str) -> None:
    async with MessageAuditTrail(database_url, shards=SHARDS) as trail:
        await write_some(trail, 8)
        intruder = record_row(make_message(seconds=99))
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(audit_log.insert().values(**intruder))
        report = await trail.verify()
        assert isinstance(report, ShardsReport)
        (broken,) = report.broken
        assert broken.chain_id == f"default/{shard_of(intruder['message_id'], SHARDS)}"
        assert broken.broken_sequence is None and "not in the chain" in (broken.reason or "")


async def test_the_store_keeps_its_shard_count(database_url: str) -> None:
    async with MessageAuditTrail(database_url, shards=SHARDS) as trail:
        await write_some(trail, 5)
    async with MessageAuditTrail(database_url) as reopened:
        assert reopened.shards == SHARDS and (await reopened.verify()).ok
    for other in (2, 1):
        await refused(MessageAuditTrail(database_url, shards=other), "kept in 4 shard")


async def test_a_single_chain_store_cannot_be_sharded_later(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await write_some(trail, 3)
    await refused(MessageAuditTrail(database_url, shards=SHARDS), "kept in 1 shard")


async def test_incomplete_or_mixed_shard_rows_are_refused(database_url: str) -> None:
    async with MessageAuditTrail(database_url, shards=SHARDS) as trail:
        await write_some(trail, 3)
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(chains.delete().where(chains.c.chain_id == "default/2"))
    await refused(MessageAuditTrail(database_url), "incomplete")


async def test_a_batch_spanning_shards_locks_them_in_ascending_order(trail: MessageAuditTrail) -> None:
    sharded = ShardedChains(shards=SHARDS)
    asked: list[Request] = []

    class Recorded(BatchWrite):
        def steps(self) -> Any:
            steps = super().steps()
            reply: Any = None
            while True:
                try:
                    request = steps.send(reply)
                except StopIteration as done:
                    return done.value
                asked.append(request)
                reply = yield request

    rows = [sharded.ledgered(record_row(make_message(seconds=n))) for n in range(30)]
    await trail.backend.write(Recorded(sharded, trail.backend, rows, []))  # type: ignore[attr-defined]
    begin = next(request for request in asked if isinstance(request, Begin))
    assert begin.chain_ids == tuple(f"default/{k}" for k in sorted({shard_of(r["message_id"], SHARDS) for r in rows}))


async def test_writers_of_different_shards_run_at_once_and_every_chain_stays_gapless(database_url: str) -> None:
    async with MessageAuditTrail(database_url, shards=SHARDS):
        pass
    trails = [MessageAuditTrail(database_url, batch_size=size) for size in (7, 60)]
    async with contextlib.AsyncExitStack() as stack:
        for each in trails:
            await stack.enter_async_context(each)

        async def write(each: MessageAuditTrail, offset: int) -> None:
            for start in range(0, 120, 40):
                batch = [make_message(seconds=offset + start + n) for n in range(40)]
                await asyncio.gather(*(each.log_message(m) for m in batch))

        await asyncio.gather(*(write(each, 1000 * n) for n, each in enumerate(trails)))
        report = await trails[0].verify()
        assert report.ok and report.entries == 240, report


async def test_checkpoints_are_per_shard_and_catch_a_cut_off_shard(database_url: str) -> None:
    async with MessageAuditTrail(database_url, shards=SHARDS) as trail:
        await write_some(trail)
        checkpoints = await trail.checkpoint()
        assert isinstance(checkpoints, tuple) and [c.chain_id for c in checkpoints] == list(trail.chains.chain_ids)
        assert (await trail.verify(against=checkpoints)).ok
        assert (await trail.verify(against=checkpoints[2])).ok  # one shard's checkpoint checks that shard
        last = checkpoints[1]
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(events.delete().where(e.chain_id == last.chain_id, e.sequence == last.sequence))
        report = await trail.verify(against=checkpoints)
        assert not report.ok and [r.chain_id for r in report.broken] == [last.chain_id]  # type: ignore[union-attr]
        with pytest.raises(ChainError, match="not a shard of chain 'default'"):
            await trail.verify(against=Checkpoint("default", 1, "0" * 64, BASE_TIME))


async def test_retention_is_recorded_in_every_shard_and_the_shards_still_verify(database_url: str) -> None:
    async with MessageAuditTrail(database_url, shards=SHARDS, retention_policy="days_30") as trail:
        old = [make_message(at=BASE_TIME - timedelta(days=400), seconds=n) for n in range(20)]
        new = [make_message(seconds=n) for n in range(20)]
        for message in old + new:
            await trail.log_message(message)
        for message in old[:5] + new[:5]:
            await trail.update_message_status(message.message_id, MessageStatus.DELIVERED)
        deleted = await trail.apply_retention_policy()
        assert deleted == 40  # BASE_TIME is far in the past too: everything is older than 30 days
        found = await entries_by_chain(trail)
        assert all(any(kind == "retention" for _, _, kind in found[c]) for c in trail.chains.chain_ids)
        report = await trail.verify()
        assert report.ok, report
        async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
            assert await conn.scalar(select(func.count()).select_from(audit_log)) == 0


async def test_a_nats_trail_takes_its_shards_from_the_url_not_the_keyword() -> None:
    with pytest.raises(InvalidFieldError) as caught:
        MessageAuditTrail("nats://127.0.0.1:4222/audit", shards=2)
    assert caught.value.field == "shards"


# -- inputs ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.integers(min_value=1, max_value=MAX_SHARDS))
def test_a_message_has_one_stable_shard_in_range(message_id: str, shards: int) -> None:
    shard = shard_of(message_id, shards)
    assert 0 <= shard < shards and shard == shard_of(message_id, shards)
    assert ShardedChains(shards=shards).ledger_of(message_id).chain_id == shard_chain_id("default", shard, shards)


def test_shard_of_is_the_same_everywhere() -> None:
    # CRC-32 of the UTF-8 bytes: fixed values, so a change of the function is caught (it would move messages).
    assert [shard_of(f"m-{n}", 4) for n in range(8)] == SHARDS_OF_M_0_TO_7
    assert shard_of("abc", 7) == zlib.crc32(b"abc") % 7 == 5
    assert shard_of("anything", 1) == 0


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.none(), st.booleans()))
def test_a_bad_shard_count_is_a_typed_error(value: object) -> None:
    try:
        sharded = ShardedChains(shards=value)  # type: ignore[arg-type]
    except (InvalidFieldError, FieldTypeError) as exc:
        assert exc.field == "shards"
    else:
        assert value is None or (type(value) is int and 1 <= value <= MAX_SHARDS)
        assert sharded.shards == (value or 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["default", "other"]), st.from_regex(r"default/[0-9]{1,2}", fullmatch=True))))
def test_the_stored_shard_rows_give_a_count_or_a_chain_error(chain_ids: list[str]) -> None:
    try:
        count = shard_count("default", chain_ids)
    except ChainError:
        return
    mine = {c for c in chain_ids if c == "default" or c.startswith("default/")}
    if count is None:
        assert not mine
    elif count == 1:
        assert mine == {"default"}
    else:
        assert {int(c.split("/")[1]) for c in mine} == set(range(count))


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)))
def test_checkpoints_for_a_sharded_trail_must_be_checkpoints_of_its_shards(against: Any) -> None:
    try:
        shard_checkpoints(ShardedChains(shards=3), against)
    except AuditError:
        pass
    else:
        assert against is None or against == []


async def test_verify_command_reports_per_shard_and_round_trips_per_shard_checkpoints(
    database_url: str, tmp_path: Path
) -> None:
    async with MessageAuditTrail(database_url, shards=SHARDS) as trail:
        ids = await write_some(trail, 20)
    saved = tmp_path / "heads.jsonl"
    result = await asyncio.to_thread(run_cli, "verify", "--save-checkpoint", str(saved), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: chain 'default', 4 shards, 27 entries")
    assert [json.loads(line)["chain_id"] for line in saved.read_text().splitlines()] == [
        f"default/{k}" for k in range(SHARDS)
    ]
    result = await asyncio.to_thread(run_cli, "verify", "--checkpoint", str(saved), "--json", database_url=database_url)
    outcome = json.loads(result.stdout)
    assert outcome["ok"] and outcome["checkpoint_checked"] and len(outcome["shards"]) == SHARDS

    async with MessageAuditTrail(database_url) as trail, trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(update(audit_log).where(audit_log.c.message_id == ids[0]).values(to_agent="mallory"))
    result = await asyncio.to_thread(run_cli, "verify", database_url=database_url)
    assert_one_line_error(result, 4, f"chain 'default/{shard_of(ids[0], SHARDS)}': BROKEN at entry", ids[0])
