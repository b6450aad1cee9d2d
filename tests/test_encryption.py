"""Encryption at rest and crypto-shredding erasure, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from audit_plugin import AuditPlugin, AuditQuery, Message, MessageAuditTrail, MessageBus, MessageType
from audit_plugin.exceptions import EncryptionError, FieldTypeError
from audit_plugin.privacy.crypto import SUBJECT_HEADER, LocalKeyFileProvider
from audit_plugin.storage.integrity_schema import KEYS_TABLE
from audit_plugin.storage.schema import TABLE_NAME
from tests.helpers import make_message

SECRET = "the-launch-code-is-0000"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "master.key"


@pytest.fixture
async def encrypted(database_url: str, key_file: Path):
    async with MessageAuditTrail(database_url, key_provider=LocalKeyFileProvider(key_file)) as trail:
        yield trail


async def raw_database_text(trail: MessageAuditTrail) -> bytes:
    """Everything the store holds, as bytes: the SQLite files, or every PostgreSQL row as text."""
    engine = trail.backend.engine  # type: ignore[attr-defined]
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(make_url(trail.database_url).database or "")
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    async with engine.connect() as conn:
        tables = (await conn.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname='public'")).scalars()
        dumps = [
            (await conn.execute(text(f"SELECT coalesce(string_agg(t::text, chr(10)), '') FROM \"{name}\" t"))).scalar()
            for name in list(tables)
        ]
    return "\n".join(dumps).encode()


async def vacuum(trail: MessageAuditTrail) -> None:
    engine = trail.backend.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM")


async def all_payloads(trail: MessageAuditTrail, message: Message) -> list[dict]:
    """The payload of ``message`` as every read method returns it."""
    got = [await trail.get_message(message.message_id)]
    got += await trail.query_messages(AuditQuery(from_agent=message.from_agent))
    got += [r async for r in trail.stream_messages(AuditQuery(from_agent=message.from_agent))]
    if message.correlation_id:
        got += await trail.get_conversation_history(message.correlation_id)
    got += await trail.get_agent_communication_history(message.from_agent, days=100_000)
    return [r.payload for r in got if r is not None and r.message_id == message.message_id]


def test_local_key_file_is_created_private_and_reused(key_file: Path) -> None:
    first = LocalKeyFileProvider(key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    again = LocalKeyFileProvider(key_file)
    assert again.key_id == first.key_id
    wrapped = first.wrap_key(b"k" * 32, b"ctx")
    assert again.unwrap_key(wrapped, b"ctx") == b"k" * 32
    with pytest.raises(EncryptionError, match="wrong master key"):
        again.unwrap_key(wrapped, b"other context")


def test_bad_key_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EncryptionError, match="does not exist"):
        LocalKeyFileProvider(tmp_path / "missing.key", create=False)
    short = tmp_path / "short.key"
    short.write_text("c2hvcnQ=\n")
    with pytest.raises(EncryptionError, match="32 bytes"):
        LocalKeyFileProvider(short)


async def test_trail_rejects_a_non_provider(database_url: str) -> None:
    with pytest.raises(FieldTypeError, match="key_provider"):
        MessageAuditTrail(database_url, key_provider="secret")  # type: ignore[arg-type]


async def test_payload_is_stored_encrypted_and_read_back_decrypted(encrypted: MessageAuditTrail) -> None:
    message = make_message(payload={"code": SECRET, "n": 1.5}, correlation_id="c-1")
    await encrypted.log_message(message)
    assert all(p == {"code": SECRET, "n": 1.5} for p in await all_payloads(encrypted, message))
    assert len(await all_payloads(encrypted, message)) == 5
    assert SECRET.encode() not in await raw_database_text(encrypted)


async def test_reader_without_the_key_sees_an_encrypted_marker(
    database_url: str, encrypted: MessageAuditTrail, tmp_path: Path
) -> None:
    message = make_message(payload={"code": SECRET})
    await encrypted.log_message(message)
    async with MessageAuditTrail(database_url) as no_key:
        record = await no_key.get_message(message.message_id)
    async with MessageAuditTrail(database_url, key_provider=LocalKeyFileProvider(tmp_path / "other.key")) as other:
        other_record = await other.get_message(message.message_id)
    assert record is not None and other_record is not None
    assert record.payload["$audit"] == "encrypted" and "ct" not in record.payload
    assert other_record.payload == record.payload


async def test_ciphertext_is_bound_to_its_message_id(encrypted: MessageAuditTrail) -> None:
    first, second = make_message(payload={"code": SECRET}), make_message(payload={"code": "other"})
    await encrypted.log_message(first)
    await encrypted.log_message(second)
    engine = encrypted.backend.engine  # type: ignore[attr-defined]
    async with engine.begin() as conn:  # an attacker moves first's ciphertext onto second's row
        stolen = (
            await conn.execute(
                text(f"SELECT payload_json FROM {TABLE_NAME} WHERE message_id = :m"), {"m": first.message_id}
            )
        ).scalar()
        stolen_text = stolen if isinstance(stolen, str) else json.dumps(stolen)
        await conn.execute(
            text(f"UPDATE {TABLE_NAME} SET payload_json = :p WHERE message_id = :m"),
            {"p": stolen_text, "m": second.message_id},
        )
    record = await encrypted.get_message(second.message_id)
    assert record is not None
    assert record.payload["$audit"] == "unreadable" and record.payload["reason"] == "authentication failed"


async def test_erasure_shreds_one_subject_and_keeps_the_rest(encrypted: MessageAuditTrail) -> None:
    alice = [make_message("alice", "bot", payload={"diary": f"{SECRET}-{i}"}, correlation_id="c") for i in range(3)]
    bob = make_message("bob", "bot", payload={"note": "bob keeps this"}, correlation_id="c")
    for message in [*alice, bob]:
        await encrypted.log_message(message)
    await encrypted.update_message_status(alice[0].message_id, "DELIVERED")

    assert await encrypted.erase_subject("alice") == 1
    assert await encrypted.erase_subject("alice") == 0  # idempotent

    for message in alice:
        payloads = await all_payloads(encrypted, message)
        assert len(payloads) == 5
        for payload in payloads:
            assert payload["$audit"] == "erased" and payload["subject_id"] == "alice" and payload["erased_at"]
    assert await all_payloads(encrypted, bob) == [{"note": "bob keeps this"}] * 5
    kept = await encrypted.get_message(alice[0].message_id)
    assert kept is not None and (kept.from_agent, kept.to_agent, kept.status) == ("alice", "bot", "DELIVERED")

    later = make_message("alice", "bot", payload={"diary": "after erasure"})
    await encrypted.log_message(later)
    assert await all_payloads(encrypted, later) == [{"diary": "after erasure"}] * 4  # no conversation

    await vacuum(encrypted)
    raw = await raw_database_text(encrypted)
    assert b"alice" in raw  # the dump is real: who/when stay readable
    assert SECRET.encode() not in raw and b"bob keeps this" not in raw


async def test_erased_data_keys_leave_the_sqlite_file(tmp_path: Path, key_file: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    async with MessageAuditTrail(url, key_provider=LocalKeyFileProvider(key_file)) as trail:
        await trail.log_message(make_message("carol", "bot", payload={"x": SECRET}))
        async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
            [wrapped] = (await conn.execute(text(f"SELECT wrapped_key FROM {KEYS_TABLE}"))).scalars()
        assert wrapped in await raw_database_text(trail)
        await trail.erase_subject("carol")
        await vacuum(trail)
        raw = await raw_database_text(trail)
    assert wrapped not in raw and SECRET.encode() not in raw


async def test_subject_from_header_or_callable(database_url: str, key_file: Path) -> None:
    provider = LocalKeyFileProvider(key_file)
    async with MessageAuditTrail(database_url, key_provider=provider) as trail:
        by_header = make_message("support-bot", "crm", payload={"x": 1}, headers={SUBJECT_HEADER: "customer-42"})
        by_sender = make_message("support-bot", "crm", payload={"x": 2})
        await trail.log_message(by_header)
        await trail.log_message(by_sender)
        await trail.erase_subject("customer-42")
        assert (await trail.get_message(by_header.message_id)).payload["$audit"] == "erased"  # type: ignore[union-attr]
        assert (await trail.get_message(by_sender.message_id)).payload == {"x": 2}  # type: ignore[union-attr]

    def subject_of(message: Message) -> str:
        return message.payload.get("user", "nobody")

    async with MessageAuditTrail(database_url, key_provider=provider, subject_of=subject_of) as trail:
        mine = make_message(payload={"user": "u-7", "x": 3})
        await trail.log_message(mine)
        assert await trail.erase_subject("u-7") == 1
        assert (await trail.get_message(mine.message_id)).payload["$audit"] == "erased"  # type: ignore[union-attr]


@pytest.mark.parametrize("durability", ["commit", "buffered"])
async def test_bus_messages_are_encrypted_and_redacted(encrypted: MessageAuditTrail, durability: str) -> None:
    bus = MessageBus()
    bus.register(AuditPlugin(encrypted, durability=durability))  # type: ignore[arg-type]

    async def worker(message: Message) -> None:
        return None

    bus.subscribe("worker", worker)
    messages = [Message("dave", "worker", MessageType.EVENT, {"password": SECRET, "i": i}) for i in range(3)]
    for message in messages:
        await bus.send(message)
    await encrypted.flush()
    for message in messages:
        record = await encrypted.get_message(message.message_id)
        assert record is not None and record.status == "DELIVERED"
        assert record.payload == {"password": "[REDACTED]", "i": message.payload["i"]}
    assert SECRET.encode() not in await raw_database_text(encrypted)
