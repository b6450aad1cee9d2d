"""The record table's indexes: a database made by an earlier version gets today's set at ``initialize()``."""

from __future__ import annotations

from sqlalchemy import inspect, text

from audit_plugin import MessageAuditTrail
from audit_plugin.storage.schema import RETIRED_INDEXES, TABLE_NAME, audit_log
from tests.helpers import make_message

SHARED = {index.name for index in audit_log.indexes}
POSTGRES_ONLY = {"idx_message_id_reversed"}  # the end of a message id (see audit_plugin_postgres.fragments)


def expected(trail: MessageAuditTrail) -> set[str]:
    return SHARED | (POSTGRES_ONLY if trail.backend.name == "postgresql" else set())


async def index_names(trail: MessageAuditTrail) -> set[str]:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        return await conn.run_sync(lambda sync: {i["name"] for i in inspect(sync).get_indexes(TABLE_NAME)})


async def test_a_new_store_has_the_fitted_index_set(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        assert await index_names(trail) == expected(trail)
        assert not expected(trail) & set(RETIRED_INDEXES)


async def test_initialize_brings_an_earlier_index_set_up_to_date_and_keeps_the_rows(database_url: str) -> None:
    message = make_message()
    async with MessageAuditTrail(database_url) as trail:
        await trail.log_message(message)
        async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            for name in expected(trail) - {"idx_timestamp_status", "idx_correlation", "idx_trace"}:
                await conn.execute(text(f"DROP INDEX {name}"))
            await conn.execute(text(f"CREATE INDEX idx_agents ON {TABLE_NAME} (from_agent, to_agent)"))
    for _ in range(2):  # idempotent: a second initialize changes nothing
        async with MessageAuditTrail(database_url) as trail:
            assert await index_names(trail) == expected(trail)
            assert (await trail.get_message(message.message_id)) is not None
