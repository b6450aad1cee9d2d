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

from audit_plugin import AuditQuery, MessageAuditTrail
from audit_plugin_postgres.testing import throwaway_database
from tests.helpers import asyncpg_dsn, make_message

pytestmark = pytest.mark.usefixtures("postgres_url")


ENGINES = ["engine", "planned_once_engine"]
"""The backend's two pools: reads planned for their values (and writes), and reads planned once."""


async def _server_pid(trail: MessageAuditTrail, engine: str) -> int:
    async with getattr(trail.backend, engine).connect() as conn:
        return int(await conn.scalar(text("SELECT pg_backend_pid()")))


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_live_pooled_connection_is_reused(engine: str) -> None:
    async with throwaway_database() as url, MessageAuditTrail(url) as trail:
        first = await _server_pid(trail, engine)
        assert [await _server_pid(trail, engine) for _ in range(3)] == [first] * 3


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_read_after_the_server_cut_the_pooled_connection_answers(engine: str) -> None:
    message = make_message()
    async with throwaway_database() as url, MessageAuditTrail(url) as trail:
        await trail.log_message(message)
        reads = {  # a read each pool serves: planned for its values (a type), planned once (a correlation id)
            "engine": lambda: trail.query_messages(AuditQuery(message_type=message.message_type)),
            "planned_once_engine": lambda: trail.query_messages(AuditQuery(correlation_id=message.correlation_id)),
        }
        victim = await _server_pid(trail, engine)
        killer = await asyncpg.connect(asyncpg_dsn(url))
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", victim)
        finally:
            await killer.close()
        assert [record.message_id for record in await reads[engine]()] == [message.message_id]
        assert await _server_pid(trail, engine) != victim
