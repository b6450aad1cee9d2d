"""Reads recorded as access entries in the hash chain; the reader and auditor roles; on every backend."""

from __future__ import annotations

import json
from contextlib import aclosing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text, update

from audit_plugin import AuditQuery, LocalKeyFileProvider, Message, MessageAuditTrail, MessageType
from audit_plugin.exceptions import AccessDeniedError, FieldTypeError, InvalidFieldError
from audit_plugin.model.access import MAX_LISTED_IDS, Actor, Reading, Role, check_role
from audit_plugin.privacy.redaction import MASK
from audit_plugin.storage.integrity_schema import events


async def _seed(trail: MessageAuditTrail, count: int = 3, correlation_id: str = "c-1") -> list[str]:
    ids = []
    for index in range(count):
        message = Message(
            "alice", "bob", MessageType.COMMAND, {"n": index, "name": "Ada"}, correlation_id=correlation_id
        )
        ids.append(await trail.log_message(message))
    return ids


async def test_a_read_with_an_actor_is_an_access_entry_in_the_chain(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        ids = await _seed(trail)
        records = await trail.query_messages(AuditQuery(from_agent="alice"), actor="ops-script")
        assert {r.message_id for r in records} == set(ids)
        [entry] = await trail.access_log()
        assert (entry.actor, entry.role, entry.channel, entry.action) == ("ops-script", "auditor", "api", "query")
        assert entry.filter == {"from_agent": "alice"}
        assert entry.records == 3 and set(entry.ids) == set(ids)
        assert entry.sequence == 4  # after the three record entries: an ordinary entry of the chain
        report = await trail.verify()
        assert report.ok and report.entries == 4


async def test_reads_without_an_actor_leave_no_trace(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await _seed(trail)
        await trail.query_messages()
        await trail.get_conversation_history("c-1")
        assert await trail.access_log() == []


async def test_every_read_method_records_what_it_returned(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        ids = await _seed(trail)
        await trail.get_message(ids[0], actor="a")
        await trail.get_message("no-such-id", actor="b")
        await trail.get_conversation_history("c-1", actor="c")
        await trail.get_agent_communication_history("bob", days=1, actor="d")
        async with aclosing(trail.stream_messages(actor="e")) as stream:
            async for _ in stream:
                break
        log = {entry.actor: entry for entry in await trail.access_log()}
        assert (log["a"].action, log["a"].records, log["a"].ids) == ("message", 1, [ids[0]])
        assert (log["b"].records, log["b"].filter) == (0, {"message_id": "no-such-id"})  # a miss is recorded too
        assert (log["c"].action, log["c"].records) == ("conversation", 3)
        assert (log["d"].action, log["d"].filter["agent_id"]) == ("agent", "bob")
        assert (log["e"].action, log["e"].records) == ("stream", 1)  # closed after one record
        assert (await trail.verify()).ok


async def test_a_reading_gathers_several_reads_into_one_entry(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        ids = await _seed(trail)
        reading = Reading(Actor("carol", Role.READER, "viewer"), "home", {"page": "/"})
        await trail.query_messages(actor=reading)
        await trail.get_message(ids[1], actor=reading)
        assert await trail.access_log() == []  # gathered, not recorded yet
        entry = await trail.record_access(reading)
        assert entry is not None and entry.records == 4 and set(entry.ids) == set(ids)
        assert await trail.record_access(reading) is None  # nothing read since
        [stored] = await trail.access_log()
        assert stored == entry


async def test_the_reader_role_sees_shapes_not_values_and_never_decrypts(database_url: str, tmp_path: Path) -> None:
    provider = LocalKeyFileProvider(tmp_path / "master.key")
    async with MessageAuditTrail(database_url, key_provider=provider) as trail:
        ids = await _seed(trail, 2)
        as_reader = await trail.query_messages(actor=Actor("rita", Role.READER))
        as_auditor = await trail.query_messages(actor=Actor("audrey", Role.AUDITOR))
        assert all(r.payload == {"$audit": "encrypted", "kid": r.payload["kid"]} for r in as_reader)
        assert {r.payload["name"] for r in as_auditor} == {"Ada"}
        log = {entry.actor: entry for entry in await trail.access_log()}
        assert log["rita"].decrypted == 0 and log["rita"].decrypted_ids == []
        assert log["audrey"].decrypted == 2 and set(log["audrey"].decrypted_ids) == set(ids)
    async with MessageAuditTrail(database_url) as clear:  # no encryption: a reader sees keys, not values
        await clear.log_message(Message("x", "y", MessageType.EVENT, {"card": {"holder": "Ada"}, "items": [1, 2]}))
        [record] = await clear.query_messages(AuditQuery(from_agent="x"), actor=Actor("rita", Role.READER))
        assert record.payload == {"card": {"holder": MASK}, "items": [MASK, MASK]}


async def test_proofs_and_the_access_log_are_for_auditors(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await _seed(trail, 1)
        reader = Actor("rita", Role.READER)
        with pytest.raises(AccessDeniedError, match="reader role may not verify"):
            await trail.verify(actor=reader)
        with pytest.raises(AccessDeniedError, match="access log"):
            await trail.access_log(actor=reader)
        assert (await trail.verify(actor="audrey")).ok
        log = await trail.access_log(actor="audrey")
        assert [e.action for e in log] == ["verify"]
        assert [e.action for e in await trail.access_log()] == ["access-log", "verify"]  # reading the log is a read


async def test_an_altered_access_entry_breaks_the_chain(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await _seed(trail, 1)
        await trail.query_messages(actor="mallory")
        [entry] = await trail.access_log()
        forged = json.loads(entry_document := (await _document(trail, entry.sequence)))
        forged["actor"] = "somebody-else"
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                update(events).where(events.c.sequence == entry.sequence).values(error=json.dumps(forged))
            )
        report = await trail.verify()
        assert not report.ok and report.broken_sequence == entry.sequence
        assert "digest" in (report.reason or "")
        assert entry_document  # the stored document was there to alter


async def test_a_removed_access_entry_leaves_a_gap(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await _seed(trail, 1)
        await trail.query_messages(actor="mallory")
        await _seed(trail, 1, "c-2")  # the chain goes on after the read
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(text("DELETE FROM message_audit_events WHERE kind = 'access'"))
        report = await trail.verify()
        assert not report.ok and "missing" in (report.reason or "")  # reading cannot be hidden afterwards


async def _document(trail: MessageAuditTrail, sequence: int) -> str:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        return str(await conn.scalar(text(f"SELECT error FROM message_audit_events WHERE sequence = {sequence}")))


async def test_retention_keeps_verifying_with_access_entries(database_url: str) -> None:
    async with MessageAuditTrail(database_url, retention_policy="days_30") as trail:
        await _seed(trail, 2)
        await trail.query_messages(actor="before-retention")
        assert await trail.apply_retention_policy() == 0
        await trail.query_messages(actor="after-retention")
        assert (await trail.verify()).ok
        assert [e.actor for e in await trail.access_log()] == ["after-retention", "before-retention"]


async def test_the_access_log_pages_and_filters_by_actor(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await _seed(trail, 1)
        for index in range(7):
            await trail.count_messages()
            await trail.query_messages(actor=f"reader-{index % 2}")
        page = await trail.access_log(limit=3)
        assert len(page) == 3 and page[0].sequence > page[1].sequence > page[2].sequence
        older = await trail.access_log(limit=10, before=page[-1].sequence)
        assert len(older) == 4 and older[0].sequence < page[-1].sequence
        assert len(await trail.access_log(by="reader-1")) == 3
        with pytest.raises(InvalidFieldError):
            await trail.access_log(limit=0)


async def test_ids_are_bounded_counts_are_not(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        for _ in range(MAX_LISTED_IDS + 5):
            await trail.enqueue_message(Message("bulk", "sink", MessageType.EVENT))
        await trail.flush()
        await trail.query_messages(AuditQuery(limit=500), actor="bulk-reader")
        [entry] = await trail.access_log()
        assert entry.records == MAX_LISTED_IDS + 5 and len(entry.ids) == MAX_LISTED_IDS


async def test_bad_actors_and_roles_are_refused_before_anything_is_read(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await _seed(trail, 1)
        for bad, error in (("", InvalidFieldError), ("a\x00b", InvalidFieldError), (" x", InvalidFieldError)):
            with pytest.raises(error):
                await trail.query_messages(actor=bad)
        with pytest.raises(FieldTypeError):
            await trail.query_messages(actor=42)  # type: ignore[arg-type]
        with pytest.raises(InvalidFieldError) as role:
            Actor("x", "root")  # type: ignore[arg-type]
        assert role.value.field == "role"
        with pytest.raises(InvalidFieldError):
            Actor("x", Role.READER, "telnet")
        with pytest.raises(FieldTypeError):
            await trail.record_access("not a reading")  # type: ignore[arg-type]
        assert await trail.access_log() == []
        assert (await trail.verify()).ok


@given(st.text(max_size=40))
def test_check_role_accepts_exactly_the_two_roles(text_value: str) -> None:
    if text_value.strip().lower() in ("reader", "auditor"):
        assert check_role(text_value) in (Role.READER, Role.AUDITOR)
    else:
        with pytest.raises(InvalidFieldError):
            check_role(text_value)


@given(st.text(max_size=300))
def test_actor_names_are_checked(name: str) -> None:
    try:
        actor = Actor(name)
    except InvalidFieldError:
        return
    assert actor.name == name and name.isprintable() and name == name.strip() and 0 < len(name) <= 256
