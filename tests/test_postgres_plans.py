"""PostgreSQL: the writer's batch statements find rows through the primary key however the table grew.

A statement prepared on a young table and run more than five times may be
switched to a generic plan costed for that table; if the plan scans
``message_audit_log`` whole, every later batch pays for the table's size.
These tests prepare the writer's statements on the writer's own connection
(its session settings included) while the table is empty, run them past that
threshold, grow the table, and read the plan PostgreSQL then uses.
"""

from __future__ import annotations

import os
import re

import pytest

import audit_plugin_postgres.backend as postgres_backend
from audit_plugin import MessageAuditTrail, MessageStatus
from tests.helpers import make_message

pytestmark = [
    pytest.mark.skipif(not os.environ.get("AUDIT_TEST_POSTGRES_URL"), reason="AUDIT_TEST_POSTGRES_URL is not set"),
    pytest.mark.parametrize("backend_name", ["postgres"]),
]

GROWN_ROWS = 20_000
RUNS_BEFORE_GROWTH = 10
"""More than the five runs after which PostgreSQL may cache a generic plan."""

_STATUS_ARRAYS = "ARRAY[$$missing-id$$], ARRAY[$$DELIVERED$$], ARRAY[now()], ARRAY[NULL::text], ARRAY[NULL::int4]"
_NO_RECORDS = ", ".join(["$${}$$"] * len(postgres_backend.COLUMNS))

STATEMENTS = {
    "status update of stored records": (postgres_backend._UPDATE_FROM_ARRAYS, _STATUS_ARRAYS),
    "records and status updates in one statement": (
        postgres_backend._INSERT_AND_UPDATE,
        f"{_NO_RECORDS}, {_STATUS_ARRAYS}",
    ),
}

_GROW = f"""
INSERT INTO message_audit_log (message_id, from_agent, to_agent, message_type, priority, status, payload_json,
                               timestamp, retry_count)
SELECT 'grown-' || n, 'planner', 'worker', 'QUERY', 'NORMAL', 'PENDING', '{{}}', now(), 0
FROM generate_series(1, {GROWN_ROWS}) AS n
"""


@pytest.mark.parametrize("statement", sorted(STATEMENTS))
async def test_writer_statement_plan_stays_an_index_lookup_as_table_grows(database_url: str, statement: str) -> None:
    sql, arguments = STATEMENTS[statement]
    async with MessageAuditTrail(database_url) as trail:
        for _ in range(RUNS_BEFORE_GROWTH):  # the writer at work on a young table, on its own connection
            message = make_message()
            await trail.log_message(message)
            assert await trail.update_message_status(message.message_id, MessageStatus.DELIVERED)
        async with trail.backend.writing() as conn:  # type: ignore[attr-defined]
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.execute(f"PREPARE writer_statement AS {sql}")
            try:
                for _ in range(RUNS_BEFORE_GROWTH):
                    await driver.execute(f"EXECUTE writer_statement({arguments})")
                await driver.execute(_GROW)
                plan = "\n".join(row[0] for row in await driver.fetch(f"EXPLAIN EXECUTE writer_statement({arguments})"))
            finally:
                await driver.execute("DEALLOCATE writer_statement")
    assert "Seq Scan on message_audit_log" not in plan, plan
    # (the id column compares bytewise, so the array's ids may show a cast: "(u.message_id)::text")
    assert re.search(r"Index Cond: \(\(message_id\)::text = \(?u\.message_id", plan), plan
