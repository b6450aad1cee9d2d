"""Hash formats side by side: format-1 entries (written before format 2) still verify, before and after
format-2 ones; a database made before the format-2 columns is upgraded; a store that cannot keep payload
text verbatim keeps writing format 1."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text, update

from audit_plugin import MessageAuditTrail, MessageStatus
from audit_plugin.exceptions import ChainError
from audit_plugin.integrity import chain
from audit_plugin.storage.integrity_schema import chains, events
from audit_plugin.storage.schema import audit_log
from tests.helpers import make_message
from tests.test_tamper import broken, build_chain, execute

e = events.c


async def versions(trail: MessageAuditTrail) -> list[int | None]:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        return list((await conn.execute(select(e.hash_version).order_by(e.sequence))).scalars())


async def chain_version(trail: MessageAuditTrail) -> int:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(await conn.scalar(select(chains.c.hash_version)) or 0)


async def write_format_1(trail: MessageAuditTrail) -> list[str]:
    """Entries as an earlier version wrote them: format 1, ``hash_version`` left ``NULL``."""
    trail.ledger.hash_version = 1
    ids = await build_chain(trail)
    await execute(trail, update(events).values(hash_version=None))
    return ids


async def test_new_entries_are_format_2(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    assert await versions(trail) == [2] * 9
    assert await chain_version(trail) == 2


async def test_a_chain_of_format_1_then_format_2_verifies(trail: MessageAuditTrail) -> None:
    ids = await write_format_1(trail)
    trail.ledger.hash_version = chain.HASH_VERSION
    for message_id in ids[1::2]:
        await trail.update_message_status(message_id, MessageStatus.FAILED, error_message="late")
    await trail.log_message(make_message(seconds=99))
    assert await versions(trail) == [None] * 9 + [2] * 4
    report = await trail.verify()
    assert report.ok and report.entries == 13, report


@pytest.mark.parametrize("sequence", [2, 11])  # a format-1 record, a format-2 record
async def test_tampering_is_found_in_either_format(trail: MessageAuditTrail, sequence: int) -> None:
    await write_format_1(trail)
    trail.ledger.hash_version = chain.HASH_VERSION
    for seconds in (50, 51, 52):
        await trail.log_message(make_message(seconds=seconds))
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        message_id = await conn.scalar(select(e.message_id).where(e.sequence == sequence))
    await execute(trail, update(audit_log).where(audit_log.c.message_id == message_id).values(to_agent="mallory"))
    broken(await trail.verify(), sequence, "record or its payload altered")


async def test_an_unknown_format_is_reported_not_guessed(trail: MessageAuditTrail) -> None:
    await build_chain(trail)
    await execute(trail, update(events).where(e.sequence == 4).values(hash_version=9))
    broken(await trail.verify(), 4, "hash format 9, which this version of audit-plugin cannot check")


async def test_a_chain_in_a_newer_format_is_not_extended(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await execute(trail, update(chains).values(hash_version=chain.HASH_VERSION + 1))
    newer = MessageAuditTrail(database_url)
    try:
        with pytest.raises(ChainError, match="hash format 3"):
            await newer.initialize()
    finally:
        await newer.close()


async def test_a_database_from_before_format_2_is_upgraded(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await write_format_1(trail)
        await execute(
            trail,
            update(chains).values(hash_version=1),
            text("ALTER TABLE message_audit_events DROP COLUMN record_digest"),
            text("ALTER TABLE message_audit_events DROP COLUMN hash_version"),
        )
    async with MessageAuditTrail(database_url) as trail:
        assert (await trail.verify()).ok
        await trail.log_message(make_message(seconds=60))
        assert await versions(trail) == [None] * 9 + [2]
        assert await chain_version(trail) == 2
        report = await trail.verify()
    assert report.ok and report.entries == 10, report


async def test_a_jsonb_payload_column_keeps_format_1(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("jsonb is PostgreSQL's")
    alter = "ALTER TABLE message_audit_log ALTER COLUMN payload_json TYPE {}"
    async with MessageAuditTrail(database_url) as trail:
        await execute(trail, text(alter.format("jsonb")))
    async with MessageAuditTrail(database_url) as trail:
        await build_chain(trail)  # payloads with 1.5-multiples and 10**20: jsonb re-renders them
        assert await versions(trail) == [1] * 9
        assert (await trail.verify()).ok
        await execute(trail, text(alter.format("json")))
    async with MessageAuditTrail(database_url) as trail:
        await trail.log_message(make_message(payload={"n": 1.50, "big": 10**20}))
        assert await versions(trail) == [1] * 9 + [2]
        report: Any = await trail.verify()
    assert report.ok and report.entries == 10, report
