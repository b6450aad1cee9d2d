"""PostgreSQL: the pool's liveness check keeps a live connection and replaces one the server cut off.

Every read checks a pooled connection out with one ``SELECT 1`` round trip
(the driver's own check costs three). A connection that passes is reused
(its server process stays the same); one the server terminated is replaced
before the read runs, so the read answers instead of failing.
"""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text

from audit_plugin import MessageAuditTrail
from audit_plugin_postgres.testing import throwaway_database
from tests.helpers import asyncpg_dsn, make_message

pytestmark = pytest.mark.usefixtures("postgres_url")


async def _server_pid(trail: MessageAuditTrail) -> int:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(await conn.scalar(text("SELECT pg_backend_pid()")))


async def test_a_live_pooled_connection_is_reused() -> None:
    async with throwaway_database() as url, MessageAuditTrail(url) as trail:
        first = await _server_pid(trail)
        assert [await _server_pid(trail) for _ in range(3)] == [first] * 3


async def test_a_read_after_the_server_cut_the_pooled_connection_answers() -> None:
    message = make_message()
    async with throwaway_database() as url, MessageAuditTrail(url) as trail:
        await trail.log_message(message)
        victim = await _server_pid(trail)
        killer = await asyncpg.connect(asyncpg_dsn(url))
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", victim)
        finally:
            await killer.close()
        assert (await trail.get_message(message.message_id)).message_id == message.message_id  # type: ignore[union-attr]
        assert await _server_pid(trail) != victim
