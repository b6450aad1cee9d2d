"""The JetStream transport on one real server: producer trail, ingester, wire format, outages.

Streams are private to each test (a random name) and deleted afterwards; the
shared server on 127.0.0.1:4222 is never stopped. Tests that take a server
down start their own (see ``tests/jetstream_support.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
import pytest_asyncio
import typer
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from audit_plugin import AuditPlugin, AuditQuery, Message, MessageAuditTrail, MessageBus, MessageStatus, MessageType
from audit_plugin.cli.values import shard_list
from audit_plugin.exceptions import (
    AuditError,
    AuditStoreError,
    ChainError,
    EncryptionError,
    FieldTypeError,
    InvalidFieldError,
    WriteOnlyTrailError,
)
from audit_plugin.integrity.shards import ShardedChains, shard_of
from audit_plugin.jetstream import wire
from audit_plugin.jetstream.ingest import IngestStats, JetStreamIngester, check_owned_shards, ingest
from audit_plugin.model.records import StatusUpdate, record_row
from audit_plugin.privacy.crypto import LocalKeyFileProvider
from audit_plugin.storage.backend import LedgerStore, SupportsSubjectKeys
from audit_plugin.storage.integrity_schema import events
from audit_plugin.storage.quarantine import QuarantinedMessage, quarantine_table
from tests.cli_support import assert_one_line_error, run_cli
from tests.helpers import make_message
from tests.jetstream_support import SHARED_URL, eventually, nats_server, shared_server_up

pytestmark = pytest.mark.skipif(not shared_server_up(), reason="no NATS JetStream server on 127.0.0.1:4222")


@pytest_asyncio.fixture
async def stream() -> AsyncIterator[str]:
    """A fresh stream name on the shared server (created by the first trail or ingester), deleted afterwards."""
    name = f"audit_test_{uuid.uuid4().hex[:12]}"
    yield name
    client = await nats.connect(SHARED_URL)
    try:
        await client.jetstream().delete_stream(name)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await client.close()


async def drain(source: str, database_url: str, **options: Any) -> IngestStats:
    """Ingest ``source`` into ``database_url`` until the stream is empty."""
    options.setdefault("fetch_timeout", 0.2)
    return await ingest(source, database_url, exit_when_idle=True, **options)


async def publish_raw(stream: str, subject: str, body: bytes, msg_id: str) -> None:
    client = await nats.connect(SHARED_URL)
    try:
        await client.jetstream().publish(f"{stream}.{subject}", body, headers={wire.MSG_ID_HEADER: msg_id})
    finally:
        await client.close()


async def lifecycle_kinds(trail: MessageAuditTrail) -> dict[str, int]:
    async with trail.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(select(events.c.kind, func.count()).group_by(events.c.kind))
        return {kind: n for kind, n in rows.all()}


# -- the producer ---------------------------------------------------------------------------


async def test_a_nats_trail_publishes_and_refuses_queries_with_a_pointer_to_the_store(stream: str) -> None:
    async with MessageAuditTrail(f"{SHARED_URL}/{stream}") as trail:
        bus = MessageBus()
        bus.register(AuditPlugin(trail))
        bus.subscribe("worker", _accept)
        receipt = await bus.send(make_message(to_agent="worker"))
        assert receipt.status is MessageStatus.DELIVERED
        for query in (
            trail.query_messages(AuditQuery()),
            trail.get_message(receipt.message_id),
            trail.get_statistics(),
            trail.apply_retention_policy(),
            trail.count_messages(),
        ):
            with pytest.raises(WriteOnlyTrailError, match="query the database the ingesters write to"):
                await query
    client = await nats.connect(SHARED_URL)
    try:
        info = await client.jetstream().stream_info(stream)
    finally:
        await client.close()
    assert info.state.messages == 2  # the record and its outcome, acknowledged by the stream


async def test_a_nats_trail_keeps_no_chain_and_no_keys_and_says_so(stream: str, tmp_path: Path) -> None:
    async with MessageAuditTrail(f"{SHARED_URL}/{stream}") as trail:
        assert not isinstance(trail.backend, LedgerStore | SupportsSubjectKeys)
        for call in (trail.verify, trail.checkpoint, functools.partial(trail.get_message_history, "m-1")):
            with pytest.raises(ChainError, match="need a store that keeps them; 'jetstream' does not"):
                await call()
        with pytest.raises(EncryptionError, match="erasure needs a store that keeps data keys"):
            await trail.erase_subject("alice")
    with pytest.raises(EncryptionError, match="encryption at rest needs a store that keeps data keys"):
        MessageAuditTrail(f"{SHARED_URL}/{stream}", key_provider=LocalKeyFileProvider(tmp_path / "master.key"))


async def test_bad_nats_urls_are_typed_errors_naming_the_field() -> None:
    for url, reason in (
        (f"{SHARED_URL}/bad.name", "stream name"),
        (f"{SHARED_URL}/", "stream name"),
        (f"{SHARED_URL}/ok?replicas=9", "replicas"),
        (f"{SHARED_URL}/ok?durable=x", "unknown option"),
    ):
        with pytest.raises(InvalidFieldError, match=reason) as caught:
            MessageAuditTrail(url)
        assert caught.value.field == "database_url"
    async with MessageAuditTrail("sqlite+aiosqlite:///:memory:") as store:
        with pytest.raises(InvalidFieldError) as caught:
            JetStreamIngester("http://127.0.0.1:4222/x", store)
        assert caught.value.field == "source"


async def test_an_unreachable_server_is_a_store_error_at_initialize() -> None:
    from tests.jetstream_support import free_port

    trail = MessageAuditTrail(f"nats://127.0.0.1:{free_port()}/audit")
    with pytest.raises(AuditStoreError, match="cannot reach NATS"):
        await trail.initialize()
    await trail.close()


def test_importing_audit_plugin_does_not_import_nats() -> None:
    code = "import sys, audit_plugin; audit_plugin.storage.registry.extension_manager(); print('nats' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# -- producer to store ----------------------------------------------------------------------


async def test_records_outcomes_and_retries_reach_the_store_with_a_valid_chain(stream: str, database_url: str) -> None:
    source = f"{SHARED_URL}/{stream}"
    attempts: dict[str, int] = {}

    async def flaky(message: Message) -> None:
        attempts[message.message_id] = attempts.get(message.message_id, 0) + 1
        if message.payload["n"] % 5 == 0 and attempts[message.message_id] == 1:
            raise RuntimeError("first attempt fails")

    sent = []
    async with MessageAuditTrail(source) as producer:
        bus = MessageBus(max_retries=1)
        bus.register(AuditPlugin(producer, durability="buffered"))
        bus.subscribe("worker", flaky)
        for n in range(50):
            sent.append(await bus.send(make_message(to_agent="worker", payload={"n": n})))

    stats = await drain(source, database_url)
    assert (stats.records, stats.updates, stats.refused, stats.orphaned) == (50, 60, 0, 0)
    async with MessageAuditTrail(database_url) as store:
        records = await store.query_messages(AuditQuery(limit=1000))
        assert {r.message_id for r in records} == {receipt.message_id for receipt in sent}
        assert {r.status for r in records} == {MessageStatus.DELIVERED}
        retried = next(r for r in sent if r.retry_count == 1)
        steps = await store.get_message_history(retried.message_id)
        assert [(s.kind, s.status) for s in steps] == [
            ("record", MessageStatus.PENDING),
            ("status", MessageStatus.PENDING),
            ("status", MessageStatus.DELIVERED),
        ]
        assert await lifecycle_kinds(store) == {"record": 50, "status": 60}
        assert (await store.verify()).ok


async def test_a_redelivered_operation_changes_nothing(stream: str, database_url: str) -> None:
    message = make_message()
    record = wire.encode_record(record_row(message))
    outcome = StatusUpdate.build(message.message_id, MessageStatus.DELIVERED, operation_id="consumer-ack-1")
    status = wire.encode_update(outcome)
    source = f"{SHARED_URL}/{stream}"
    async with MessageAuditTrail(source):  # creates the stream
        pass
    for copy in range(3):  # as if redelivered after lost acknowledgements: new message ids, same operations
        await publish_raw(stream, "record", record, f"record-{copy}")
        await publish_raw(stream, "status", status, f"status-{copy}")

    stats = await drain(source, database_url, batch_size=2)
    assert stats.operations == 6
    async with MessageAuditTrail(database_url) as store:
        assert await store.count_messages() == 1
        assert (await store.get_message(message.message_id)).status is MessageStatus.DELIVERED  # type: ignore[union-attr]
        assert await lifecycle_kinds(store) == {"record": 1, "status": 1}
        assert (await store.verify()).ok


async def test_a_status_update_that_overtakes_its_record_waits_for_it(stream: str, database_url: str) -> None:
    message = make_message()
    source = f"{SHARED_URL}/{stream}"
    async with MessageAuditTrail(source):
        pass
    update = StatusUpdate.build(message.message_id, MessageStatus.DELIVERED, operation_id="op-1")
    await publish_raw(stream, "status", wire.encode_update(update), "s1")

    async with MessageAuditTrail(database_url) as store:
        ingester = JetStreamIngester(source, store, fetch_timeout=0.2)
        running = asyncio.create_task(ingester.run())
        await eventually(lambda: ingester.stats.waiting_for_record > 0)
        await publish_raw(stream, "record", wire.encode_record(record_row(message)), "r1")
        await eventually(lambda: ingester.stats.operations == 2)
        ingester.stop()
        stats = await running
        assert (stats.records, stats.updates, stats.orphaned) == (1, 1, 0)
        assert (await store.get_message(message.message_id)).status is MessageStatus.DELIVERED  # type: ignore[union-attr]


async def test_malformed_stream_messages_are_refused_counted_and_never_stored(stream: str, database_url: str) -> None:
    source = f"{SHARED_URL}/{stream}"
    async with MessageAuditTrail(source):
        pass
    good = record_row(make_message())
    bad_row = dict(good, message_id="bad\x00id")
    await publish_raw(stream, "record", b"not json", "m1")
    await publish_raw(stream, "record", json.dumps({"v": 99, "op": "record"}).encode(), "m2")
    await publish_raw(stream, "record", wire.encode_record(bad_row), "m3")
    await publish_raw(stream, "record", wire.encode_record(good), "m4")
    stats = await drain(source, database_url)
    assert (stats.refused, stats.records) == (3, 1)
    async with MessageAuditTrail(database_url) as store:
        assert [r.message_id for r in await store.query_messages()] == [good["message_id"]]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decoding_anything_gives_an_operation_or_a_typed_error(body: bytes) -> None:
    with contextlib.suppress(AuditError):
        wire.decode(body)


@settings(max_examples=100, deadline=None)
@given(
    st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    st.dictionaries(
        st.text(max_size=10).filter(lambda s: "\x00" not in s),
        st.integers() | st.text(max_size=20).filter(lambda s: "\x00" not in s) | st.none(),
        max_size=5,
    ),
)
@example("planner", {"\\u0000": "C:\\u0000 is a path, not a NUL"})
def test_a_record_survives_the_wire_unchanged(agent: str, payload: dict[str, Any]) -> None:
    row = record_row(Message(agent, agent, MessageType.EVENT, payload, correlation_id=agent))
    decoded = wire.decode(wire.encode_record(row))
    assert isinstance(decoded, wire.RecordOperation)
    assert decoded.row == row


def test_an_update_without_an_operation_id_gets_one_that_is_stable_and_distinct() -> None:
    first = StatusUpdate.build("m1", MessageStatus.DELIVERED)
    second = StatusUpdate.build("m1", MessageStatus.DELIVERED)
    assert wire.with_operation_id(first).operation_id == wire.with_operation_id(first).operation_id
    assert wire.with_operation_id(first).operation_id != wire.with_operation_id(second).operation_id
    given_id = StatusUpdate.build("m1", MessageStatus.DELIVERED, operation_id="mine")
    assert wire.with_operation_id(given_id) is given_id


# -- outages --------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["commit", "buffered"])
async def test_a_nats_outage_is_ridden_out_and_loses_nothing(tmp_path: Path, durability: str) -> None:
    with nats_server(tmp_path / "nats") as server:
        source = f"{server.url}/outage"
        async with MessageAuditTrail(source) as producer:
            producer.writer.retry_max_delay = 0.2
            producer.writer.backend.publish_timeout = 1.0  # type: ignore[attr-defined]
            bus = MessageBus()
            bus.register(AuditPlugin(producer, durability=durability, commit_timeout=None))
            bus.subscribe("worker", _accept)
            before = [await bus.send(make_message(to_agent="worker")) for _ in range(20)]
            server.kill()
            during = asyncio.gather(*(bus.send(make_message(to_agent="worker")) for _ in range(30)))
            await eventually(lambda: not producer.writer_stats.store_available)
            server.start()  # same port, same store directory
            receipts = before + list(await during)
            await producer.flush()
            assert producer.writer_stats.dropped == 0
        stats = await drain(source, f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    assert stats.records == 50
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as store:
        stored = await store.query_messages(AuditQuery(limit=100))
        assert {r.message_id for r in stored} == {r.message_id for r in receipts}
        assert {r.status for r in stored} == {MessageStatus.DELIVERED}
        assert (await store.verify()).ok


# -- the command line -----------------------------------------------------------------------


async def test_ingest_command_drains_the_stream_with_a_progress_line(stream: str, tmp_path: Path) -> None:
    source = f"{SHARED_URL}/{stream}"
    async with MessageAuditTrail(source) as producer:
        for _ in range(30):
            await producer.log_message(make_message())
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'ingested.db'}"
    result = await asyncio.to_thread(
        run_cli, "ingest", "--from", source, "--exit-when-idle", "--json", database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["records"] == 30
    assert "ingested 30 ops" in result.stderr and "pending 0" in result.stderr
    result = await asyncio.to_thread(run_cli, "query", "--json", database_url=database_url)
    assert len(json.loads(result.stdout)) == 30


def test_ingest_command_refuses_a_bad_source_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "ingest", "--from", "nats://127.0.0.1:4222/bad.name", database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"
    )
    assert_one_line_error(result, 2, "source", "stream name")


async def _accept(message: Message) -> None:
    return None


# -- format 2: batches, digests, quarantine, shards ------------------------------------------


def _row(message: Message) -> Any:
    """A record row as a trail captures it: with its lifecycle entry's digests."""
    return ShardedChains().ledgered(record_row(message))


def _batch(rows: list[Any], updates: list[StatusUpdate] = (), *, shard: int = 0, shards: int = 1) -> bytes:  # type: ignore[assignment]
    items = [wire.record_item(row) for row in rows] + [wire.status_item(wire.with_operation_id(u)) for u in updates]
    (body,) = wire.encode_batches(shard, shards, items, 1 << 20)
    return body


def _headers(body: bytes) -> dict[str, str]:
    return {wire.DIGEST_HEADER: wire.body_digest(body)}


async def publish_batch(stream: str, subject: str, body: bytes, headers: dict[str, str] | None = None) -> None:
    client = await nats.connect(SHARED_URL)
    try:
        headers = headers if headers is not None else _headers(body)
        await client.jetstream().publish(f"{stream}.{subject}", body, headers=headers)
    finally:
        await client.close()


async def test_a_producer_packs_a_writer_batch_into_few_messages_with_their_digest(stream: str) -> None:
    async with MessageAuditTrail(f"{SHARED_URL}/{stream}", batch_size=500) as trail:
        futures = [await trail.enqueue_message(make_message(payload={"n": n})) for n in range(1000)]
        await asyncio.gather(*futures)
    client = await nats.connect(SHARED_URL)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        assert 2 <= info.state.messages <= 20  # 1,000 records in a handful of messages, not 1,000
        first = await js.get_msg(stream, info.state.first_seq)
        assert first.subject == f"{stream}.ops.0"
        assert first.headers[wire.DIGEST_HEADER] == wire.body_digest(first.data)
        operations = wire.decode_message(first.data, first.headers, shards=1)
        assert all(isinstance(op, wire.RecordOperation) and op.digests is not None for op in operations)
    finally:
        await client.close()


async def test_messages_that_do_not_decode_or_do_not_match_their_digest_are_quarantined(
    stream: str, database_url: str
) -> None:
    source = f"{SHARED_URL}/{stream}"
    async with MessageAuditTrail(source):
        pass
    good = _row(make_message())
    altered = _row(make_message())
    altered_body = _batch([altered]).replace(b"planner->worker", b"planner->mallor")  # content and digest disagree
    garbage = b"\x93\x02\x00\xff not a batch"
    await publish_batch(stream, "ops.0", garbage)  # decodes to nothing
    await publish_batch(stream, "ops.0", _batch([good]), {wire.DIGEST_HEADER: "sha256=" + "0" * 64})  # body altered
    await publish_batch(stream, "ops.0", _batch([good]), {})  # no digest header
    await publish_batch(stream, "ops.0", altered_body)  # the body's digest is right, the record's is not
    await publish_batch(stream, "ops.0", _batch([good], [StatusUpdate.build(good["message_id"], "DELIVERED")]))
    stats = await drain(source, database_url)
    assert (stats.quarantined, stats.records, stats.updates, stats.messages) == (4, 1, 1, 1)
    async with MessageAuditTrail(database_url) as store:
        assert [r.message_id for r in await store.query_messages()] == [good["message_id"]]
        async with store.backend.engine.connect() as conn:  # type: ignore[attr-defined]
            kept = (await conn.execute(select(quarantine_table).order_by(quarantine_table.c.id))).mappings().all()
        assert bytes(kept[0]["body"]) == garbage  # kept byte for byte
        reasons = [row["reason"] for row in kept]
        assert "not a format-2 batch" in reasons[0] or "operation" in reasons[0]
        assert "does not match its Audit-Digest" in reasons[1]
        assert "has no Audit-Digest header" in reasons[2]
        assert "does not give the digest its producer computed" in reasons[3]
        assert all(row["source"] == f"nats://127.0.0.1:4222/{stream}" for row in kept)
        report = await store.verify()
        assert report.ok and report.quarantined == 4 and "4 stream message(s) quarantined" in str(report)


async def test_a_message_quarantined_twice_is_kept_once(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as store:
        held = QuarantinedMessage("nats://h:4222/s", "stream sequence 7, subject s.ops.0", "bad", b"\x00\x01")
        await store.quarantine([held])
        await store.quarantine([held])  # redelivered after a crash between the insert and the removal
        assert await store.backend.quarantined_count() == 1  # type: ignore[attr-defined]


async def test_a_sharded_stream_is_ingested_by_ingesters_owning_their_shards(stream: str, database_url: str) -> None:
    source = f"{SHARED_URL}/{stream}?shards=4"
    sent = []
    async with MessageAuditTrail(source) as producer:
        bus = MessageBus()
        bus.register(AuditPlugin(producer, durability="buffered"))
        bus.subscribe("worker", _accept)
        for n in range(200):
            sent.append(await bus.send(make_message(to_agent="worker", payload={"n": n})))
    async with MessageAuditTrail(database_url, shards=4):
        pass

    async def one(owned: tuple[int, ...]) -> IngestStats:
        async with MessageAuditTrail(database_url) as trail:
            ingester = JetStreamIngester(source, trail, shards=owned, fetch_timeout=0.2)
            return await ingester.run(exit_when_idle=True)

    low, high = await asyncio.gather(one((0, 1)), one((2, 3)))
    expected = {k: sum(1 for r in sent if shard_of(r.message_id, 4) == k) for k in range(4)}
    assert low.records == expected[0] + expected[1] and high.records == expected[2] + expected[3]
    assert low.quarantined == high.quarantined == 0
    async with MessageAuditTrail(database_url) as store:
        assert store.shards == 4
        assert {r.status for r in await store.query_messages(AuditQuery(limit=1000))} == {MessageStatus.DELIVERED}
        report = await store.verify()
        assert report.ok and report.entries == 400, report
    client = await nats.connect(SHARED_URL)
    try:
        names = {c.name for c in await client.jetstream().consumers_info(stream)}
    finally:
        await client.close()
    assert names == {f"audit-ingest-{k}" for k in range(4)}


async def test_an_ingester_refuses_a_store_with_another_shard_count(stream: str, database_url: str) -> None:
    source = f"{SHARED_URL}/{stream}?shards=2"
    async with MessageAuditTrail(source):
        pass
    async with MessageAuditTrail(database_url) as store:  # one chain
        with pytest.raises(AuditStoreError, match="published in 2 shard"):
            await JetStreamIngester(source, store).run(exit_when_idle=True)
    with pytest.raises(AuditStoreError, match="published in 2 shard"):
        async with MessageAuditTrail(f"{SHARED_URL}/{stream}?shards=3"):
            pass


async def test_format_1_messages_of_earlier_producers_are_still_ingested_beside_batches(
    stream: str, database_url: str
) -> None:
    source = f"{SHARED_URL}/{stream}"
    async with MessageAuditTrail(source) as producer:
        await producer.log_message(first := make_message())
    older = make_message()
    await publish_raw(stream, "record", wire.encode_record(record_row(older)), "old-1")
    stats = await drain(source, database_url)
    assert (stats.records, stats.quarantined) == (2, 0)
    async with MessageAuditTrail(database_url) as store:
        assert {r.message_id for r in await store.query_messages()} == {first.message_id, older.message_id}


# -- the wire format's inputs -----------------------------------------------------------------

_texts = st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s)
_messages = st.builds(
    lambda agent, payload, ttl: Message(
        agent, agent, MessageType.EVENT, payload, correlation_id=agent, ttl_seconds=ttl
    ),
    _texts,
    st.dictionaries(
        _texts, st.integers() | _texts | st.none() | st.floats(allow_nan=False, allow_infinity=False), max_size=4
    ),
    st.none() | st.integers(min_value=0, max_value=2**31 - 1),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_messages, min_size=1, max_size=8), st.integers(min_value=1, max_value=16))
def test_batches_survive_the_wire_unchanged_digests_included(messages: list[Message], shards: int) -> None:
    rows = [_row(m) for m in messages]
    updates = [StatusUpdate.build(m.message_id, "FAILED", error_message="é\n", retry_count=2) for m in messages]
    for shard in range(shards):
        mine = [row for row in rows if shard_of(row["message_id"], shards) == shard]
        mine_updates = [u for u in updates if shard_of(u.message_id, shards) == shard]
        if not mine and not mine_updates:
            continue
        body = _batch(mine, mine_updates, shard=shard, shards=shards)
        decoded = wire.decode_message(body, _headers(body), shards=shards)
        records = [op for op in decoded if isinstance(op, wire.RecordOperation)]
        assert [op.row for op in records] == [dict(row) for row in mine]
        assert [op.digests for op in records] == [(r.record_digest, r.digest, r.hash_version) for r in mine]
        statuses = [op.update for op in decoded if isinstance(op, wire.StatusOperation)]
        assert statuses == [wire.with_operation_id(u) for u in mine_updates]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
@example(b"\x94\x02\x00\x01\x91\x91\xa1r")
@example(b"\x94\x03\x00\x01\x90")
def test_decoding_hostile_batch_bytes_gives_operations_or_a_typed_error(body: bytes) -> None:
    for headers in (_headers(body), None, {wire.DIGEST_HEADER: "sha256=x"}):
        try:
            wire.decode_message(body, headers, shards=2)
        except AuditError as exc:
            assert getattr(exc, "field", "").startswith("operation")


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.floats(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_values, max_size=5))
def test_decoding_hostile_structures_gives_operations_or_a_typed_error(document: list[Any]) -> None:
    body = msgspec.msgpack.encode([2, 0, 1, document])
    with contextlib.suppress(AuditError):
        wire.decode_batch(body, shards=1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40), st.integers(4096, 65536))
def test_a_batch_is_never_larger_than_its_bound(sizes: list[int], max_bytes: int) -> None:
    rows = [_row(make_message(payload={"t": "x" * size})) for size in sizes]
    items = [wire.record_item(row) for row in rows]
    bodies = wire.encode_batches(0, 1, items, max_bytes)
    assert all(len(body) <= max_bytes for body in bodies if len(msgspec.msgpack.decode(body)[3]) > 1)
    assert sum(len(msgspec.msgpack.decode(body)[3]) for body in bodies) == len(rows)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_the_shards_option_gives_sorted_shard_numbers_or_a_bad_parameter(text: str) -> None:
    parse = shard_list("--shards", limit=8)
    try:
        shards = parse(text)
    except typer.BadParameter as exc:
        assert "--shards" in str(exc.param_hint)
    else:
        assert shards and list(shards) == sorted(set(shards)) and all(0 <= s < 8 for s in shards)


def test_the_shards_option_reads_lists_and_ranges() -> None:
    parse = shard_list("--shards", limit=8)
    assert parse("0-2,6") == (0, 1, 2, 6) and parse(" 3 ") == (3,) and parse("1,1,0") == (0, 1)
    for bad in ("", "a", "2-1", "8", "0-9", "-1", "1,", "¹", "٣"):
        with pytest.raises(typer.BadParameter):
            parse(bad)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(-2, 2000), max_size=4)))
def test_owned_shards_are_checked(value: Any) -> None:
    try:
        owned = check_owned_shards(value)
    except (InvalidFieldError, FieldTypeError) as exc:
        assert exc.field == "shards"
    else:
        assert owned is None or list(owned) == sorted(set(value))
