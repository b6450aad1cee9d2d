"""Faults on a three-node JetStream cluster the tests start themselves (stream replicas 3).

* a node is killed while four producer processes publish 10,000 messages;
* an ingester process dies after its commit, before acknowledging;
* PostgreSQL connections are killed (and refused) while ingesters write.

Each time: every produced message is stored exactly once with its outcome,
the lifecycle holds no duplicate entry, and ``verify()`` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus
from audit_plugin.jetstream.ingest import IngestStats, JetStreamIngester
from audit_plugin.storage.integrity_schema import events
from audit_plugin.storage.schema import audit_log
from tests.helpers import asyncpg_dsn
from tests.jetstream_support import (
    NATS_SERVER,
    Node,
    eventually,
    nats_cluster,
    produce,
    spawn,
    stream_messages,
    wait_for_jetstream,
)

pytestmark = pytest.mark.skipif(not Path(NATS_SERVER).exists(), reason="nats-server is not installed")

PRODUCERS = 4
PER_PRODUCER = 2500
KILL_AFTER_MESSAGES = 20
"""Stream messages (each a batch of operations) published before the node is killed: well before the end."""
INGEST_PATIENCE = 120
"""Seconds the ingesters get to drain a test's stream (a few, when all is well)."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    with nats_cluster(tmp_path_factory.mktemp("nats-cluster")) as nodes:
        yield nodes


@pytest_asyncio.fixture
async def stream(cluster: list[Node]) -> str:
    """A fresh stream replicated on all three nodes."""
    name = f"audit_{uuid.uuid4().hex[:10]}"
    await wait_for_jetstream(cluster[1].url, name, replicas=3)
    return name


async def run_ingesters(source: str, database_url: str, count: int = 2, **options: object) -> list[IngestStats]:
    """``count`` ingesters (each with its own trail and connections) until the stream is drained."""
    async with MessageAuditTrail(database_url):
        pass  # the schema first: two SQLite trails creating it at once would meet "database is locked"

    async def one() -> IngestStats:
        async with MessageAuditTrail(database_url) as trail:
            trail.writer.retry_max_delay = 0.5
            ingester = JetStreamIngester(source, trail, fetch_timeout=0.3, **options)  # type: ignore[arg-type]
            return await ingester.run(exit_when_idle=True)

    async with asyncio.timeout(INGEST_PATIENCE):  # a stream never drained fails the test, not the whole run
        return list(await asyncio.gather(*(one() for _ in range(count))))


async def assert_stored_exactly_once(database_url: str, produced: set[str]) -> None:
    async with MessageAuditTrail(database_url) as store:
        engine = store.backend.engine  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            stored = set((await conn.execute(select(audit_log.c.message_id))).scalars())
            statuses = dict(
                (await conn.execute(select(audit_log.c.status, func.count()).group_by(audit_log.c.status))).all()
            )
            kinds = dict((await conn.execute(select(events.c.kind, func.count()).group_by(events.c.kind))).all())
        assert stored == produced
        assert statuses == {MessageStatus.DELIVERED.value: len(produced)}
        assert kinds == {"record": len(produced), "status": len(produced)}  # no entry written twice
        report = await store.verify()
        assert report.ok, report
        assert await store.count_messages(AuditQuery()) == len(produced)


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_a_node_killed_while_four_producers_publish_loses_and_duplicates_nothing(
    cluster: list[Node], stream: str, database_url: str, tmp_path: Path
) -> None:
    source = f"{cluster[0].url}/{stream}"
    producers = [
        spawn(
            "produce",
            source,
            str(PER_PRODUCER),
            f"producer-{i}",
            "commit" if i < 2 else "buffered",
            str(tmp_path / f"ids-{i}"),
        )
        for i in range(PRODUCERS)
    ]
    victim = cluster[0]  # the node every producer is connected to
    try:
        async with asyncio.timeout(120):
            for producer in producers:  # every producer connected before its server goes
                assert (await asyncio.to_thread(producer.stdout.readline)).strip() == "connected"  # type: ignore[union-attr]
            while await stream_messages(cluster[1].url, stream) < KILL_AFTER_MESSAGES:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        victim.kill()
        for producer in producers:
            _, err = await asyncio.to_thread(producer.communicate, timeout=180)
            assert producer.returncode == 0, err
    finally:
        for producer in producers:
            with contextlib.suppress(ProcessLookupError):
                producer.kill()
    produced = set()
    for i in range(PRODUCERS):
        produced |= set((tmp_path / f"ids-{i}").read_text().split())
    assert len(produced) == PRODUCERS * PER_PRODUCER

    stats = await run_ingesters(f"{cluster[1].url}/{stream}", database_url)
    assert sum(s.records for s in stats) >= len(produced)
    assert all(s.refused == 0 and s.orphaned == 0 for s in stats)
    await assert_stored_exactly_once(database_url, produced)
    victim.start()  # same store directory: it rejoins for the next test


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
async def test_an_ingester_killed_between_commit_and_ack_changes_nothing_on_redelivery(
    cluster: list[Node], stream: str, database_url: str
) -> None:
    source = f"{cluster[1].url}/{stream}"
    produced = set(await produce(source, 1000, "producer", "buffered"))
    async with MessageAuditTrail(database_url):
        pass  # the schema, before several processes race to create it
    dying = spawn("ingest-and-die", source, database_url, "2")
    out, err = await asyncio.to_thread(dying.communicate, timeout=120)
    assert dying.returncode == 17 and "committed" in out, err
    async with MessageAuditTrail(database_url) as store:
        assert await store.count_messages() > 0  # its batch was committed, not acknowledged

    stats = await run_ingesters(source, database_url)
    assert sum(s.redelivered for s in stats) > 0
    await assert_stored_exactly_once(database_url, produced)


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_a_sharded_ingester_killed_between_commit_and_ack_changes_nothing_on_redelivery(
    cluster: list[Node], database_url: str
) -> None:
    stream = f"audit_{uuid.uuid4().hex[:10]}"
    await wait_for_jetstream(cluster[1].url, stream, replicas=3, shards=4)
    source = f"{cluster[1].url}/{stream}"
    produced = set(await produce(source, 1000, "producer", "buffered"))
    async with MessageAuditTrail(database_url, shards=4):
        pass
    dying = spawn("ingest-and-die", source, database_url, "2")
    out, err = await asyncio.to_thread(dying.communicate, timeout=120)
    assert dying.returncode == 17 and "committed" in out, err

    async def owner(shards: tuple[int, ...]) -> IngestStats:
        async with MessageAuditTrail(database_url) as trail:
            return await JetStreamIngester(source, trail, shards=shards, fetch_timeout=0.3).run(exit_when_idle=True)

    async with asyncio.timeout(INGEST_PATIENCE):
        stats = await asyncio.gather(owner((0, 1)), owner((2, 3)))
    assert sum(s.redelivered for s in stats) > 0
    await assert_stored_exactly_once(database_url, produced)


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_postgres_connections_killed_during_ingest_are_caught_up(
    cluster: list[Node], stream: str, database_url: str
) -> None:
    postgres_database = database_url
    source = f"{cluster[2].url}/{stream}"
    produced = set(await produce(source, 3000, "producer", "buffered"))
    async with MessageAuditTrail(postgres_database):
        pass
    async with contextlib.AsyncExitStack() as stack:
        trails = [await stack.enter_async_context(MessageAuditTrail(postgres_database)) for _ in range(2)]
        ingesters = [JetStreamIngester(source, trail, fetch_timeout=0.3, batch_size=200) for trail in trails]
        for trail in trails:
            trail.writer.retry_max_delay = 0.5
        runs = [asyncio.create_task(ingester.run(exit_when_idle=True)) for ingester in ingesters]
        await eventually(lambda: sum(i.stats.operations for i in ingesters) > 0)
        await _postgres_outage(postgres_database, seconds=4)
        async with asyncio.timeout(INGEST_PATIENCE):
            stats = await asyncio.gather(*runs)
        assert sum(trail.writer_stats.retries for trail in trails) > 0  # the outage hit the writers
    assert sum(s.records for s in stats) >= len(produced)
    await assert_stored_exactly_once(postgres_database, produced)


async def _postgres_outage(database_url: str, seconds: float) -> None:
    """For ``seconds``: refuse new connections to the test's database and kill every open one, repeatedly."""
    database = make_url(database_url).database
    admin = await asyncpg.connect(asyncpg_dsn(database_url, "postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            await asyncio.sleep(0.2)
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
