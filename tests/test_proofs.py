"""Merkle trees over the chains, signed checkpoints and proof bundles, on every backend."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select, update

from audit_plugin import InvalidFieldError, LocalKeyFileProvider, Message, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.exceptions import FieldTypeError
from audit_plugin.integrity.note import NoteVerifier
from audit_plugin.integrity.proof_bundle import check_bundle
from audit_plugin.integrity.tree_checkpoint import CheckpointPolicy
from audit_plugin.storage.tree_log import ProofError
from audit_plugin.storage.tree_schema import checkpoints, tiles, trees

ORIGIN = "example.com/audit"
KEY = Ed25519PrivateKey.generate()


async def seed(trail: MessageAuditTrail, count: int = 5) -> list[str]:
    ids = []
    for index in range(count):
        message = Message("alice", "bob", MessageType.COMMAND, {"n": index, "text": "é\u2028"}, correlation_id="c")
        await trail.log_message(message)
        ids.append(message.message_id)
    await trail.record_retry(ids[1], 1, "timeout")
    await trail.update_message_status(ids[1], MessageStatus.DELIVERED, delivered_at=datetime.now(UTC))
    return ids


def mutated(bundle: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    document = json.loads(bundle)
    change(document)
    return json.dumps(document).encode()


async def test_a_record_and_its_lifecycle_prove_and_every_alteration_is_caught(trail: MessageAuditTrail) -> None:
    ids = await seed(trail)
    checkpoint = await trail.sign_checkpoint(KEY, origin=ORIGIN)
    assert checkpoint.id is not None and checkpoint.body.size == 7 and checkpoint.origin == ORIGIN
    bundle = (await trail.prove(ids[1])).to_json()
    result = check_bundle(bundle, KEY.public_key())
    assert result.ok, result.reason
    assert [(e.sequence, e.kind, e.status) for e in result.entries] == [
        (2, "record", "PENDING"),
        (6, "status", "PENDING"),
        (7, "status", "DELIVERED"),
    ]
    assert check_bundle(bundle, NoteVerifier(ORIGIN, KEY.public_key())).ok  # as a vkey
    assert not check_bundle(bundle, NoteVerifier("other.example/log", KEY.public_key())).ok
    assert not check_bundle(bundle, Ed25519PrivateKey.generate().public_key()).ok

    def payload(d):  # type: ignore[no-untyped-def]
        d["record"]["payload_json"] = d["record"]["payload_json"].replace('"n":1', '"n":2')

    def sender(d):  # type: ignore[no-untyped-def]
        d["record"]["from_agent"] = "mallory"

    def status(d):  # type: ignore[no-untyped-def]
        d["entries"][2]["status"] = "FAILED"

    def proof_node(d):  # type: ignore[no-untyped-def]
        d["entries"][0]["proof"][0] = d["entries"][0]["proof"][0][::-1]

    def dropped_node(d):  # type: ignore[no-untyped-def]
        d["entries"][0]["proof"].pop()

    def index(d):  # type: ignore[no-untyped-def]
        d["entries"][0]["leaf_index"] += 1

    def tree_size(d):  # type: ignore[no-untyped-def]
        d["checkpoint"]["note"] = d["checkpoint"]["note"].replace("\n7\n", "\n8\n", 1)

    def signature(d):  # type: ignore[no-untyped-def]
        note = d["checkpoint"]["note"]
        d["checkpoint"]["note"] = note[:-6] + ("A" if note[-6] != "A" else "B") + note[-5:]

    def head(d):  # type: ignore[no-untyped-def]
        d["chains"][0]["root"] = "0" * 64

    def other_message(d):  # type: ignore[no-untyped-def]
        d["message_id"] = ids[0]

    for change in (payload, sender, status, proof_node, dropped_node, index, tree_size, signature, head, other_message):
        result = check_bundle(mutated(bundle, change), KEY.public_key())
        assert not result.ok, change.__name__
        assert result.reason and "\n" not in result.reason


async def test_without_a_covering_checkpoint_a_signing_key_signs_one(trail: MessageAuditTrail) -> None:
    ids = await seed(trail, 2)
    with pytest.raises(ProofError, match="no stored checkpoint covers"):
        await trail.prove(ids[0])
    bundle = await trail.prove(ids[0], signing_key=KEY, origin=ORIGIN)
    assert bundle.checkpoint.id is not None and bundle.uncovered == 0
    await trail.update_message_status(ids[0], MessageStatus.FAILED, error_message="boom")
    later = await trail.prove(ids[0])  # the stored checkpoint predates the FAILED entry
    assert later.uncovered == 1 and len(later.entries) == 1
    assert check_bundle(later.to_json(), KEY.public_key()).ok
    fresh = await trail.prove(ids[0], signing_key=KEY, origin=ORIGIN)
    assert fresh.uncovered == 0 and fresh.checkpoint.id == bundle.checkpoint.id + 1
    assert len(await trail.tree_checkpoints()) == 2


async def test_withheld_record_proves_its_entries_and_digest(trail: MessageAuditTrail) -> None:
    ids = await seed(trail, 2)
    bundle = await trail.prove(ids[0], signing_key=KEY, include_record=False)
    data = bundle.to_json()
    assert b'"n":0' not in data and json.loads(data)["record"] is None
    result = check_bundle(data, KEY.public_key())
    assert result.ok and not result.record_included


async def test_an_erased_record_still_proves_its_ciphertext(database_url: str, tmp_path: Path) -> None:
    provider = LocalKeyFileProvider(tmp_path / "master.key")
    async with MessageAuditTrail(database_url, key_provider=provider) as trail:
        message = Message("alice", "bob", MessageType.EVENT, {"diagnosis": "secret", "x": "plain-words"})
        await trail.log_message(message)
        assert await trail.erase_subject("alice") == 1
        data = (await trail.prove(message.message_id, signing_key=KEY)).to_json()
    assert b"plain-words" not in data and b"encrypted" in data
    assert check_bundle(data, KEY.public_key()).ok


async def test_the_tree_is_rebuilt_from_the_chain_when_it_was_lost(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        ids = await seed(trail, 600)
        first = await trail.sign_checkpoint(KEY)
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(delete(tiles))
            await conn.execute(delete(trees))
    async with MessageAuditTrail(database_url) as trail:  # its start catches the tree up from the chain
        second = await trail.sign_checkpoint(KEY)
        assert second.heads == first.heads
        assert check_bundle((await trail.prove(ids[599])).to_json(), KEY.public_key()).ok
        assert [check.problem for check in await trail.check_checkpoints(KEY.public_key())] == [None, None]


async def test_one_checkpoint_covers_every_chain(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as one, MessageAuditTrail(database_url, chain_id="shard-2") as two:
        first, second = await seed(one, 3), await seed(two, 4)
        checkpoint = await one.sign_checkpoint(KEY, origin=ORIGIN)
        assert [head.chain_id for head in checkpoint.heads] == ["default", "shard-2"]
        assert checkpoint.body.size == 2  # the heads tree
        for trail, message_id in ((one, first[2]), (two, second[1])):
            bundle = await trail.prove(message_id)
            assert check_bundle(bundle.to_json(), KEY.public_key()).ok

            def moved(d):  # type: ignore[no-untyped-def]
                d["chains"][0]["heads_index"] ^= 1

            assert not check_bundle(mutated(bundle.to_json(), moved), KEY.public_key()).ok


async def test_a_field_no_bundle_has_is_refused(trail: MessageAuditTrail) -> None:
    """A field renamed by one byte (so the checks no longer read it) is refused, in a chain and the checkpoint."""
    ids = await seed(trail, 2)
    await trail.sign_checkpoint(KEY)
    data = (await trail.prove(ids[1])).to_json()

    def chain_field(d):  # type: ignore[no-untyped-def]
        d["chains"][0]["heads_indeX"] = d["chains"][0].pop("heads_index")

    def checkpoint_field(d):  # type: ignore[no-untyped-def]
        d["checkpoint"]["timestamP"] = d["checkpoint"].pop("timestamp")

    for change, what in ((chain_field, "chain 0"), (checkpoint_field, "the checkpoint")):
        result = check_bundle(mutated(data, change), KEY.public_key())
        assert not result.ok and f"{what}'s fields are not" in (result.reason or ""), result


async def test_checkpoints_are_consistent_until_the_tree_is_rewritten(trail: MessageAuditTrail) -> None:
    ids = await seed(trail, 300)
    await trail.sign_checkpoint(KEY)
    await seed(trail, 10)
    await trail.sign_checkpoint(KEY)
    assert [check.problem for check in await trail.check_checkpoints(KEY.public_key())] == [None, None]
    async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        first_256 = (tiles.c.level == 1) & (tiles.c.tile_index == 0)  # the root of the first 256 leaves
        stored = (await conn.execute(select(tiles.c.hashes).where(first_256))).scalar()
        await conn.execute(update(tiles).where(first_256).values(hashes=bytes([stored[0] ^ 1]) + stored[1:]))
    problems = [check.problem for check in await trail.check_checkpoints()]
    assert problems[0] and "not consistent" in problems[0]
    with pytest.raises(ProofError, match="tiles altered"):
        await trail.prove(ids[0])


async def test_an_altered_stored_checkpoint_is_reported(trail: MessageAuditTrail) -> None:
    await seed(trail, 3)
    await trail.sign_checkpoint(KEY)
    async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        heads = json.loads((await conn.execute(select(checkpoints.c.heads))).scalar())
        heads[0]["size"] = 4
        await conn.execute(update(checkpoints).values(heads=json.dumps(heads)))
    [check] = await trail.check_checkpoints()
    assert check.problem and "altered" in check.problem


async def test_records_kept_after_retention_still_prove(database_url: str) -> None:
    async with MessageAuditTrail(database_url, retention_policy="days_30") as trail:
        old = Message("a", "b", MessageType.EVENT, {}, timestamp=datetime.now(UTC) - timedelta(days=40))
        await trail.log_message(old)
        ids = await seed(trail, 3)
        await trail.sign_checkpoint(KEY)
        assert await trail.apply_retention_policy() == 1
        await trail.sign_checkpoint(KEY)  # the tree grew by the retention entry; the pruned prefix's tiles stay
        bundle = await trail.prove(ids[2])
        assert check_bundle(bundle.to_json(), KEY.public_key()).ok
        with pytest.raises(ProofError, match="no record entry"):
            await trail.prove(old.message_id)
        assert [check.problem for check in await trail.check_checkpoints(KEY.public_key())] == [None, None]


async def test_a_policy_signs_a_checkpoint_at_close(database_url: str) -> None:
    policy = CheckpointPolicy(KEY, origin=ORIGIN, every=0)
    async with MessageAuditTrail(database_url, checkpoint_policy=policy) as trail:
        await seed(trail, 2)
    async with MessageAuditTrail(database_url) as trail:
        [stored] = await trail.tree_checkpoints()
        assert stored.origin == ORIGIN and stored.heads[0].size == 4 and stored.signed_by(KEY.public_key())


async def test_bad_input_is_refused_naming_the_field(trail: MessageAuditTrail) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        await trail.prove("")
    assert caught.value.field == "message_id"
    with pytest.raises(FieldTypeError):
        await trail.sign_checkpoint("not a key")
    with pytest.raises(InvalidFieldError) as caught:
        await trail.sign_checkpoint(KEY, origin="has space")
    assert caught.value.field == "origin"
    with pytest.raises(InvalidFieldError):
        CheckpointPolicy(KEY, origin="a+b")
    with pytest.raises(ProofError, match="no record entry"):
        await trail.prove("never-logged")
    with pytest.raises(InvalidFieldError):
        MessageAuditTrail("sqlite+aiosqlite:///:memory:", hash_chain=False, checkpoint_policy=CheckpointPolicy(KEY))
