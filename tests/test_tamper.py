"""Tamper evidence: every kind of tampering is found at the right place, clean chains never raise an alarm."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, insert, select, update

from audit_plugin import MessageAuditTrail, MessageStatus, RetentionPolicy
from audit_plugin.exceptions import ChainError
from audit_plugin.integrity import chain as hashing
from audit_plugin.integrity.checkpoint import Checkpoint
from audit_plugin.integrity.ledger import Ledger
from audit_plugin.model.records import record_row
from audit_plugin.storage.integrity_schema import events
from audit_plugin.storage.schema import audit_log
from tests.helpers import make_message

e = events.c


async def build_chain(trail: MessageAuditTrail, messages: int = 6) -> list[str]:
    """``messages`` records, every other one delivered: entries 1..n records, then status entries."""
    ids = []
    for i in range(messages):
        message = make_message(seconds=i, payload={"text": f"message {i}", "n": i * 1.5, "big": 10**20})
        await trail.log_message(message)
        ids.append(message.message_id)
    for message_id in ids[::2]:
        await trail.update_message_status(message_id, MessageStatus.DELIVERED, error_message=None)
    return ids


async def execute(trail: MessageAuditTrail, *statements: Any) -> None:
    async with trail.backend.write_transaction() as conn:  # type: ignore[attr-defined]
        for statement in statements:
            await conn.execute(statement)


async def entry(trail: MessageAuditTrail, sequence: int) -> Any:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        return (await conn.execute(select(events).where(e.sequence == sequence))).first()


async def rewrite(trail: MessageAuditTrail, first: int, last: int, error: str) -> None:
    """Recompute entries first..last self-consistently, with a forged ``error`` on status entries."""
    async with trail.backend.write_transaction() as conn:  # type: ignore[attr-defined]
        previous = (await conn.execute(select(e.entry_hash).where(e.sequence == first - 1))).scalar() or (
            hashing.GENESIS_HASH
        )
        rows = (await conn.execute(select(events).where(e.sequence.between(first, last)).order_by(e.sequence))).all()
        for row in rows:
            digest = row.entry_digest
            values: dict[str, Any] = {}
            if row.kind == "status":
                values["error"] = error
                digest = hashing.entry_digest({**row._mapping, "error": error})
            entry_hash = hashing.link_hash(row.chain_id, row.sequence, previous, digest)
            values.update(entry_digest=digest, prev_hash=previous, entry_hash=entry_hash)
            await conn.execute(update(events).where(e.sequence == row.sequence).values(**values))
            previous = entry_hash


def broken(report: Any, sequence: int | None, reason: str) -> None:
    assert not report.ok, report
    assert report.broken_sequence == sequence, report
    assert reason in report.reason, report


async def test_clean_chain_verifies(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    report = await trail.verify()
    assert report.ok and report.entries == 9 and (report.first_sequence, report.last_sequence) == (1, 9)
    assert str(report).startswith("OK: chain 'default', 9 entries")


async def test_flipped_byte_in_a_record_is_found(trail: MessageAuditTrail) -> None:
    ids = await build_chain(trail)
    await execute(trail, update(audit_log).where(audit_log.c.message_id == ids[3]).values(from_agent="plbnner"))
    report = await trail.verify()
    broken(report, 4, "content does not match its digest (record or its payload altered)")
    assert report.message_id == ids[3] and report.entries == 3


async def test_flipped_byte_in_a_stored_hash_is_found(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    stored = (await entry(trail, 5)).entry_hash
    flipped = ("1" if stored[10] == "0" else "0").join((stored[:10], stored[11:]))
    await execute(trail, update(events).where(e.sequence == 5).values(entry_hash=flipped))
    broken(await trail.verify(), 5, "entry_hash does not match")


async def test_changed_payload_is_found(trail: MessageAuditTrail) -> None:
    ids = await build_chain(trail)
    forged = '{"big":100000000000000000000,"n":3.0,"text":"message 2, amended"}'
    await execute(trail, update(audit_log).where(audit_log.c.message_id == ids[2]).values(payload_json=forged))
    broken(await trail.verify(), 3, "payload altered")


async def test_changed_lifecycle_event_is_found(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    await execute(trail, update(events).where(e.sequence == 8).values(status="FAILED"))
    broken(await trail.verify(), 8, "lifecycle event altered")


async def test_deleted_middle_entry_is_found(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    await execute(trail, delete(events).where(e.sequence == 4))
    broken(await trail.verify(), 5, "entries 4..4 are missing")


async def test_deleted_middle_record_is_found(trail: MessageAuditTrail) -> None:
    ids = await build_chain(trail)
    await execute(trail, delete(audit_log).where(audit_log.c.message_id == ids[1]))
    broken(await trail.verify(), 2, "record is missing")


async def test_forged_record_row_is_found(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    forged = make_message("ceo", "bank", payload={"transfer": 1_000_000})
    await execute(trail, insert(audit_log).values(record_row(forged)))
    report = await trail.verify()
    broken(report, None, "not in the chain")
    assert report.message_id == forged.message_id


async def test_forged_entry_is_found(trail: MessageAuditTrail) -> None:
    ids = await build_chain(trail)
    head = await entry(trail, 9)
    forged = {**head._mapping, "sequence": 10, "message_id": ids[1], "status": "DELIVERED"}
    await execute(trail, insert(events).values(forged))
    broken(await trail.verify(), 10, "prev_hash does not match")


async def test_forged_current_status_is_found(trail: MessageAuditTrail) -> None:
    ids = await build_chain(trail)
    await execute(trail, update(audit_log).where(audit_log.c.message_id == ids[1]).values(status="DELIVERED"))
    report = await trail.verify()
    broken(report, None, "current status DELIVERED differs from its last lifecycle entry (PENDING)")
    assert report.message_id == ids[1]


async def test_swapped_entries_are_found(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    await execute(
        trail,
        update(events).where(e.sequence == 3).values(sequence=-1),
        update(events).where(e.sequence == 6).values(sequence=3),
        update(events).where(e.sequence == -1).values(sequence=6),
    )
    broken(await trail.verify(), 3, "prev_hash does not match")


async def test_self_consistent_fake_segment_is_found_where_it_ends(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    await rewrite(trail, 7, 8, error="forged")
    broken(await trail.verify(), 9, "prev_hash does not match")


async def test_truncated_tail_needs_a_checkpoint(trail: MessageAuditTrail) -> None:
    ids = await build_chain(trail)
    checkpoint = await trail.checkpoint()
    assert (checkpoint.sequence, checkpoint.hash) == (9, (await entry(trail, 9)).entry_hash)
    assert (await trail.verify(against=checkpoint)).checkpoint_checked
    await execute(
        trail,
        delete(events).where(e.sequence >= 7),
        update(audit_log).where(audit_log.c.message_id.in_(ids[::2])).values(status="PENDING"),
    )
    assert (await trail.verify()).ok  # a bare chain cannot see a cut tail
    broken(await trail.verify(against=checkpoint), 7, "chain ends at 6 but the checkpoint is at 9")


async def test_whole_chain_rewrite_needs_a_checkpoint(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    checkpoint = await trail.checkpoint()
    await rewrite(trail, 1, 9, error="history rewritten")
    assert (await trail.verify()).ok  # a bare chain cannot see a consistent rewrite
    broken(await trail.verify(against=checkpoint), 9, "entry differs from the checkpoint")


async def test_signed_checkpoints(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    key = Ed25519PrivateKey.generate()
    checkpoint = await trail.checkpoint(signing_key=key)
    restored = Checkpoint.from_json(checkpoint.to_json())
    assert restored == checkpoint and restored.signature_valid(key.public_key())
    assert not Checkpoint(restored.chain_id, 8, restored.hash, restored.at, restored.signature).signature_valid(
        key.public_key()
    )
    assert not restored.signature_valid(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ChainError, match="chain 'other'"):
        await trail.verify(against=Checkpoint("other", 1, "0" * 64, datetime.now(UTC)))


async def test_retention_keeps_the_chain_verifiable(database_url: str) -> None:
    now = datetime.now(UTC)
    async with MessageAuditTrail(database_url, retention_policy=RetentionPolicy.DAYS_30) as trail:
        ages = [400, 100, 40, 1, 50, 2]  # days; the young message at entry 4 keeps the chain from pruning past 3
        ids = []
        for age in ages:
            message = make_message(at=now - timedelta(days=age))
            await trail.log_message(message)
            ids.append(message.message_id)
        await trail.update_message_status(ids[3], MessageStatus.DELIVERED)
        checkpoint = await trail.checkpoint()
        assert await trail.apply_retention_policy() == 4
        report = await trail.verify()
        assert report.ok and report.first_sequence == 4, report
        assert (await trail.verify(against=checkpoint)).ok
        assert await trail.apply_retention_policy() == 0
        assert (await trail.verify()).ok
        await execute(trail, delete(audit_log).where(audit_log.c.message_id == ids[5]))  # not retention's doing
        broken(await trail.verify(), 6, "record is missing")


async def test_writes_after_a_retention_run_continue_the_chain(database_url: str) -> None:
    """Retention appends to the chain from another connection; the writer's next batch must link after it."""
    now = datetime.now(UTC)
    async with MessageAuditTrail(database_url, retention_policy=RetentionPolicy.DAYS_30) as trail:
        for age in (400, 1):
            await trail.log_message(make_message(at=now - timedelta(days=age)))
        assert await trail.apply_retention_policy() == 1
        for _ in range(3):
            message = make_message(at=now)
            await trail.log_message(message)
            await trail.update_message_status(message.message_id, MessageStatus.DELIVERED)
        report = await trail.verify()
    assert report.ok, report
    assert report.last_sequence == 2 + 1 + 3 * 2  # two records, the retention run, three records and updates


def random_payload(rng: random.Random) -> dict[str, Any]:
    def value(depth: int) -> Any:
        kind = rng.randrange(8 if depth < 3 else 5)
        return [
            lambda: rng.random() * 10 ** rng.randint(-10, 25),
            lambda: rng.randint(-(10**30), 10**30),
            lambda: "".join(rng.choice('aé€𝄞 "\\\n\t') for _ in range(rng.randint(0, 12))),
            lambda: rng.choice([True, False, None, 0, -0.0, 1.0]),
            lambda: rng.choice([1e-7, 1.5e300, 123456789012345678901234567890]),
            lambda: {f"k{rng.randint(0, 99)}": value(depth + 1) for _ in range(rng.randint(0, 4))},
            lambda: [value(depth + 1) for _ in range(rng.randint(0, 4))],
            lambda: {"Zeta": 1, "alpha": [value(depth + 1)], "ß": {}},
        ][kind]()

    return {f"field{i}": value(0) for i in range(rng.randint(0, 6))}


async def test_one_hundred_random_clean_chains_verify(trail: MessageAuditTrail) -> None:
    rng = random.Random(20261127)
    statuses = list(MessageStatus)
    for number in range(100):
        trail.ledger = trail.backend.ledger = Ledger(f"chain-{number}")  # type: ignore[attr-defined]
        messages = [make_message(payload=random_payload(rng), seconds=rng.random() * 1e6) for _ in range(3)]
        for message in messages:
            await trail.log_message(message)
        for _ in range(rng.randint(0, 3)):
            await trail.update_message_status(
                rng.choice(messages).message_id,
                rng.choice(statuses),
                error_message=rng.choice([None, "err ✗"]),
                retry_count=rng.choice([None, 1]),
            )
        report = await trail.verify()
        assert report.ok, (number, report)


async def test_concurrent_writers_keep_one_gapless_chain(database_url: str) -> None:
    trails = [MessageAuditTrail(database_url, batch_size=rng_size) for rng_size in (7, 50, 300)]
    for each in trails:
        await each.initialize()
    try:

        async def write(each: MessageAuditTrail, index: int) -> None:
            messages = [make_message(f"writer-{index}", "sink", seconds=i) for i in range(150)]
            futures = [await each.enqueue_message(m) for m in messages]
            await asyncio.gather(*futures)
            for m in messages[::3]:
                await each.update_message_status(m.message_id, MessageStatus.DELIVERED)

        await asyncio.gather(*(write(each, index) for index, each in enumerate(trails)))
        report = await trails[0].verify()
        assert report.ok, report
        assert report.entries == report.last_sequence == 3 * (150 + 50)
    finally:
        for each in trails:
            await each.close()


async def test_unhashed_entries_are_reported(database_url: str) -> None:
    async with MessageAuditTrail(database_url, hash_chain=False) as trail:
        await trail.log_message(make_message())
        assert len(await trail.get_message_history((await trail.query_messages())[0].message_id)) == 1
        broken(await trail.verify(), 1, "not hashed")


async def test_erasure_keeps_the_chain_verifiable(database_url: str, tmp_path: Any) -> None:
    from audit_plugin.privacy.crypto import LocalKeyFileProvider

    provider = LocalKeyFileProvider(tmp_path / "master.key")
    async with MessageAuditTrail(database_url, key_provider=provider) as trail:
        for agent in ("alice", "bob", "alice"):
            await trail.log_message(make_message(agent, "bot", payload={"secret": 1, "note": agent}))
        before = await trail.checkpoint()
        await trail.erase_subject("alice")
        report = await trail.verify(against=before)
        assert report.ok and report.entries == 3


async def test_checkpoints_and_the_prune_point(database_url: str) -> None:
    now = datetime.now(UTC)
    async with MessageAuditTrail(database_url, retention_policy=RetentionPolicy.DAYS_30) as trail:
        for age in (300, 200, 1):
            await trail.log_message(make_message(at=now - timedelta(days=age)))
        early = await trail.checkpoint()  # head 3
        await trail.log_message(make_message(at=now - timedelta(days=100)))
        assert await trail.apply_retention_policy() == 3  # prunes entries 1..2 (entry 3 is young)
        at_prune_point = Checkpoint("default", 2, (await trail.verify()).head_hash, now)  # wrong hash on purpose
        assert (await trail.verify()).first_sequence == 3
        assert (await trail.verify(against=early)).ok  # entry 3 is still there with its hash
        broken(await trail.verify(against=at_prune_point), 2, "the prune point's hash differs from the checkpoint")
        old = Checkpoint("default", 1, "0" * 64, now)
        broken(await trail.verify(against=old), 1, "predates the prune point 2")


async def test_checkpoint_from_a_report_vouches_only_for_what_was_verified(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    report = await trail.verify()
    await trail.log_message(make_message(seconds=999))  # appended after the walk: not verified
    taken = report.checkpoint()
    assert (taken.sequence, taken.hash) == (report.last_sequence, report.head_hash)
    assert (await trail.checkpoint()).sequence > taken.sequence
    assert (await trail.verify(against=taken)).ok


async def test_altered_ciphertext_is_found_and_unreadable(database_url: str, tmp_path: Any) -> None:
    import json

    from audit_plugin.privacy.crypto import LocalKeyFileProvider

    async with MessageAuditTrail(database_url, key_provider=LocalKeyFileProvider(tmp_path / "k")) as trail:
        messages = [make_message(payload={"n": n}) for n in range(3)]
        for message in messages:
            await trail.log_message(message)
        record = await trail.get_message(messages[1].message_id)
        assert record is not None and record.payload == {"n": 1}
        async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
            stored = (
                await conn.execute(
                    select(audit_log.c.payload_json).where(audit_log.c.message_id == messages[1].message_id)
                )
            ).scalar()
        envelope = json.loads(stored)
        envelope["ct"] = ("A" if envelope["ct"][5] != "A" else "B").join((envelope["ct"][:5], envelope["ct"][6:]))
        await execute(
            trail,
            update(audit_log)
            .where(audit_log.c.message_id == messages[1].message_id)
            .values(payload_json=json.dumps(envelope)),
        )
        broken(await trail.verify(), 2, "payload altered")
        tampered = await trail.get_message(messages[1].message_id)
        assert tampered is not None and tampered.payload["$audit"] == "unreadable"


async def test_chunked_retention_keeps_the_chain_verifiable(database_url: str) -> None:
    now = datetime.now(UTC)
    async with MessageAuditTrail(database_url, retention_policy=RetentionPolicy.DAYS_30) as trail:
        for age in (1, 300, 200, 100, 90, 60, 2):  # the young first entry keeps the whole chain from pruning
            await trail.log_message(make_message(at=now - timedelta(days=age)))
        assert [n async for n in trail.apply_retention_policy_in_chunks(chunk_size=2)] == [2, 2, 1]
        report = await trail.verify()
        assert report.ok and report.first_sequence == 1, report
        assert len(await trail.query_messages()) == 2


async def test_back_dated_entry_of_a_deleted_record_is_found(database_url: str) -> None:
    """Deleting a young record and back-dating its entry before a retention run hides it in format 1, not 2."""
    now = datetime.now(UTC)
    async with MessageAuditTrail(database_url, retention_policy=RetentionPolicy.DAYS_30) as trail:
        messages = [make_message(at=now - timedelta(days=1), seconds=i) for i in range(3)]
        for message in messages:
            await trail.log_message(message)
        victim = messages[1].message_id
        await execute(
            trail,
            delete(audit_log).where(audit_log.c.message_id == victim),
            update(events).where(e.message_id == victim).values(at=now - timedelta(days=400)),
        )
        assert await trail.apply_retention_policy() == 0  # the retention entry now "covers" the back-dated one
        report = await trail.verify()
    broken(report, 2, "content does not match its digest (lifecycle event altered)")
    assert report.message_id == victim
