"""Server time of each page of the web view (``audit-plugin serve``) on a large trail.

Seeds ``--rows`` records (default 1,000,000) through the backend's own batch
path (the writer's: rows, lifecycle and hash chain), then requests each page
in-process through the ASGI app (routing, the trail's reads, rendering; no
network) and prints the median of ``--repeat`` requests after one warm-up.

Baseline, measured in the same run on the same database: one plain
``trail.query_messages(AuditQuery(limit=50))``, the store read every list
page is built around. The deep-paging rows compare page 500 (50 per page)
reached through the keyset cursor with the same page through ``offset``.

On PostgreSQL the tables are ANALYZEd after seeding (as autovacuum would
soon do); SQLite keeps its default planner statistics.

Records: 60 agents, conversations of 5 messages, spread over the last 30
days; 90% DELIVERED, 5% FAILED, 3% EXPIRED, 2% PENDING; half carry a trace id.

Run::

    python benchmarks/web.py                                  # SQLite, and PostgreSQL if reachable
    python benchmarks/web.py --rows 100000 --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit_plugin import AuditQuery, Message, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.model.records import record_row
from audit_plugin.web import create_app
from audit_plugin.web.filters import cursor_of
from benchmarks.common import postgres_available, postgres_store, sqlite_store

BATCH = 10_000
AGENTS = 60
PAGE = 50
GOAL_MS = 100.0
STATUSES = (
    [MessageStatus.DELIVERED] * 90
    + [MessageStatus.FAILED] * 5
    + [MessageStatus.EXPIRED] * 3
    + [MessageStatus.PENDING] * 2
)


async def seed(trail: MessageAuditTrail, rows: int) -> None:
    """``rows`` records through ``backend.write_batch``, oldest first, in batches of :data:`BATCH`."""
    rng = random.Random(7)
    template = record_row(Message("a", "b", MessageType.QUERY, {"x": 1}))
    now = datetime.now(UTC)
    oldest = now - timedelta(days=30)
    step = (now - timedelta(minutes=1) - oldest) / rows
    previous = ""
    for start in range(0, rows, BATCH):
        batch = []
        for index in range(start, min(start + BATCH, rows)):
            conversation, position = divmod(index, 5)
            sender = f"agent-{rng.randrange(AGENTS)}"
            receiver = f"agent-{rng.randrange(AGENTS)}"
            status = rng.choice(STATUSES)
            at = oldest + step * index
            message_id = str(uuid.UUID(int=rng.getrandbits(128)))
            batch.append(
                {
                    **template,
                    "message_id": message_id,
                    "from_agent": sender,
                    "to_agent": receiver,
                    "message_type": (MessageType.RESPONSE if position % 2 else MessageType.QUERY).value,
                    "status": status.value,
                    "correlation_id": f"conv-{conversation}",
                    "reply_to": previous if position else None,
                    "payload_json": f'{{"task":"lookup","n":{index},"text":"lorem ipsum dolor sit amet"}}',
                    "timestamp": at,
                    "delivered_at": at + timedelta(milliseconds=rng.randrange(1, 80))
                    if status is MessageStatus.DELIVERED
                    else None,
                    "error_message": "handler raised TimeoutError: upstream timed out"
                    if status is MessageStatus.FAILED
                    else None,
                    "trace_id": f"{rng.getrandbits(128):032x}" if index % 2 else None,
                    "span_id": f"{rng.getrandbits(64):016x}" if index % 2 else None,
                }
            )
            previous = message_id
        await trail.backend.write_batch(batch, [])


BENCH_TOKEN = "benchmark-token-0123456789"
RECORDED_PAGES = ("search (no filter)", "conversation", "message")
"""Pages timed a second time as an authenticated visitor whose reads are recorded (an access entry each)."""


async def median_ms(run: Callable[[], Awaitable[object]], repeat: int) -> float:
    await run()  # warm-up: caches, prepared statements, templates
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def bench(kind: str, url: str, rows: int, repeat: int, verify: bool) -> list[tuple[str, float]]:
    async with MessageAuditTrail(url) as trail:
        started = time.perf_counter()
        await seed(trail, rows)
        print(f"  seeded {rows:,} rows in {time.perf_counter() - started:.0f} s", flush=True)
        if kind == "postgresql":  # what autovacuum does soon after a bulk load; SQLite has no automatic ANALYZE
            async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
                await conn.execute(text("ANALYZE"))
                await conn.commit()
        sample = (await trail.query_messages(AuditQuery(limit=PAGE * 500 + 1)))[-2:]
        deep_cursor = cursor_of(sample[0])
        middle = (await trail.query_messages(AuditQuery(offset=rows // 2, limit=1)))[0]
        traced = next(r for r in await trail.query_messages(AuditQuery(offset=rows // 2, limit=2)) if r.trace_id)
        results = [
            (
                "baseline: trail.query_messages(limit=50)",
                await median_ms(lambda: trail.query_messages(AuditQuery(limit=PAGE)), repeat),
            ),
            (
                "baseline: query_messages page 500 by offset",
                await median_ms(lambda: trail.query_messages(AuditQuery(limit=PAGE, offset=PAGE * 500)), repeat),
            ),
        ]

    app = create_app(url, no_auth=True, record_reads=False)  # the pages alone
    pages = {
        "home": "/",
        "search (no filter)": "/search",
        "search from_agent + status": "/search?from_agent=agent-7&status=FAILED",
        "search page 500 (keyset cursor)": f"/search?cursor={quote(deep_cursor)}",
        "search by trace id": f"/search?trace_id={traced.trace_id}",
        "search time window": f"/search?start_time={quote((middle.timestamp - timedelta(hours=1)).isoformat())}"
        f"&end_time={quote(middle.timestamp.isoformat())}",
        "conversation": f"/conversation?id={middle.correlation_id}",
        "message": f"/message?id={middle.message_id}",
        "agent (default: last day)": "/agent?name=agent-7",
        "agent (7 days)": "/agent?name=agent-7&days=7",
        "live": "/live",
        "integrity (page, no verify)": "/integrity",
    }
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for name, path in pages.items():

                async def get(path: str = path) -> None:
                    response = await client.get(path)
                    assert response.status_code == 200, (path, response.status_code, response.text[:300])

                results.append((name, await median_ms(get, repeat)))
        # The same pages read by a signed-in visitor (a bearer token) with each read recorded as an access entry.
        audited = create_app(url, token=BENCH_TOKEN)
        async with audited.router.lifespan_context(audited):
            recorded = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=audited),
                base_url="http://127.0.0.1",
                headers={"authorization": f"Bearer {BENCH_TOKEN}"},
            )
            async with recorded:
                for name in RECORDED_PAGES:

                    async def get_recorded(path: str = pages[name]) -> None:
                        response = await recorded.get(path)
                        assert response.status_code == 200, (path, response.status_code, response.text[:300])

                    results.append((f"{name}, authenticated, read recorded", await median_ms(get_recorded, repeat)))
            if not verify:
                return results
            trail = app.state.trail
            started = time.perf_counter()
            report = await trail.verify()
            results.append(
                (
                    f"verify() itself ({'OK' if report.ok else 'BROKEN'}, {report.entries:,} entries)",
                    (time.perf_counter() - started) * 1000,
                )
            )
    return results


def show(kind: str, rows: int, results: list[tuple[str, float]]) -> None:
    baseline = results[0][1]
    print(f"\n{kind}, {rows:,} records: median server time per page ({GOAL_MS:.0f} ms goal)")
    print(f"  {'page':<48} {'ms':>9} {'vs baseline':>11}")
    for name, ms in results:
        flag = "" if name.startswith(("baseline", "verify")) or ms < GOAL_MS else "  MISSES"
        print(f"  {name:<48} {ms:9.1f} {ms / baseline:11.1f}{flag}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-verify", action="store_true", help="Skip timing verify() (minutes at 1M rows).")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    options = parser.parse_args()
    for kind in options.backends:
        if kind == "postgresql" and not await postgres_available():
            print("PostgreSQL is not reachable (AUDIT_BENCH_POSTGRES_URL); skipped")
            continue
        print(f"{kind}:", flush=True)
        async with sqlite_store() if kind == "sqlite" else postgres_store() as store:
            show(kind, options.rows, await bench(kind, store.url, options.rows, options.repeat, not options.no_verify))


if __name__ == "__main__":
    asyncio.run(main())
