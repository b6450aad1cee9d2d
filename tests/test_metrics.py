"""Metrics of the bus and the audit pipeline, with the real OpenTelemetry SDK and its in-memory reader."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy.engine import make_url

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageStatus, MessageType
from audit_plugin.exceptions import AuditStoreError
from audit_plugin.telemetry.metrics import DURATION_BUCKETS


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def collect(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Metric name -> its data points, from one collection (none at all: empty)."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def value(points: dict[str, list[Any]], name: str) -> float:
    [point] = points[name]
    return point.value


def by_attributes(points: list[Any]) -> dict[frozenset[tuple[str, Any]], Any]:
    return {frozenset(point.attributes.items()): point for point in points}


def audited_bus(trail: MessageAuditTrail, meter_provider: MeterProvider, **plugin_options: Any) -> MessageBus:
    bus = MessageBus(max_retries=1, meter_provider=meter_provider)
    bus.register(AuditPlugin(trail, meter_provider=meter_provider, **plugin_options))
    return bus


async def noop(message: Message) -> None:
    pass


async def test_messages_sent_consumed_and_processing_time(
    trail: MessageAuditTrail, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    bus = audited_bus(trail, meter_provider)

    async def broken(message: Message) -> None:
        raise ValueError("bad input")

    bus.subscribe("b", noop)
    bus.subscribe("c", broken)
    for _ in range(3):
        await bus.send(Message("a", "b", MessageType.EVENT))
    assert (await bus.send(Message("a", "c", MessageType.COMMAND))).status is MessageStatus.FAILED

    points = collect(reader)

    def key(operation: str, destination: str, error: str | None = None) -> frozenset[tuple[str, Any]]:
        attributes = {
            "messaging.system": "audit_plugin",
            "messaging.operation.name": operation,
            "messaging.destination.name": destination,
        }
        if error is not None:
            attributes["error.type"] = error
        return frozenset(attributes.items())

    sent = by_attributes(points["messaging.client.sent.messages"])
    assert {k: point.value for k, point in sent.items()} == {key("send", "b"): 3, key("send", "c", "FAILED"): 1}
    process_b, process_c_failed = key("process", "b"), key("process", "c", "ValueError")
    consumed = by_attributes(points["messaging.client.consumed.messages"])
    assert {k: point.value for k, point in consumed.items()} == {process_b: 3, process_c_failed: 2}  # 1 retry
    durations = by_attributes(points["messaging.process.duration"])
    assert durations[process_b].count == 3
    assert durations[process_c_failed].count == 2
    assert tuple(durations[process_b].explicit_bounds) == DURATION_BUCKETS
    assert 0 <= durations[process_b].sum < 1


async def test_pipeline_metrics_follow_the_writer(
    trail: MessageAuditTrail, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    bus = audited_bus(trail, meter_provider)
    bus.subscribe("b", noop)
    await asyncio.gather(*(bus.send(Message("a", "b", MessageType.EVENT)) for _ in range(20)))
    await trail.flush()

    points = collect(reader)
    stats = trail.writer_stats
    assert value(points, "audit_plugin.writer.written") == stats.written == 40  # 20 records + 20 outcomes
    assert value(points, "audit_plugin.writer.failed") == 0
    assert value(points, "audit_plugin.writer.dropped") == 0
    assert value(points, "audit_plugin.writer.retries") == 0
    assert value(points, "audit_plugin.writer.queue.depth") == 0
    assert value(points, "audit_plugin.writer.queue.limit") == trail.max_queue == 100_000
    assert value(points, "audit_plugin.writer.store.available") == 1
    assert value(points, "audit_plugin.commit.timeouts") == 0
    [batch_duration] = points["audit_plugin.writer.batch.duration"]
    [batch_size] = points["audit_plugin.writer.batch.size"]
    assert batch_duration.count == batch_size.count == stats.batches
    assert batch_size.sum == 40
    assert stats.batches < 40  # concurrent sends shared commits


async def test_dropped_records_are_counted(
    database_url: str, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    async with MessageAuditTrail(database_url, max_queue=4, overflow="drop_newest") as trail:
        bus = audited_bus(trail, meter_provider, durability="buffered")
        bus.subscribe("b", noop)
        for _ in range(10):  # nothing here yields to the writer, so the queue overflows
            await bus.send(Message("a", "b", MessageType.EVENT))
        points = collect(reader)
        assert value(points, "audit_plugin.writer.dropped") == trail.writer_stats.dropped == 16
        assert value(points, "audit_plugin.writer.queue.depth") == 4
        assert value(points, "audit_plugin.writer.queue.limit") == 4
        await trail.flush()
        assert value(collect(reader), "audit_plugin.writer.written") == 4


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


async def test_store_outage_shows_in_metrics_then_recovers(
    sqlite_file: Path, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """The table vanishes (a restored backup, a wrong migration): the writer holds and retries, metrics say so."""
    async with MessageAuditTrail(f"sqlite+aiosqlite:///{sqlite_file}") as trail:
        bus = audited_bus(trail, meter_provider, commit_timeout=0.1)
        bus.subscribe("b", noop)
        with sqlite3.connect(sqlite_file) as conn:
            conn.execute("DROP TABLE message_audit_log")
        message = Message("a", "b", MessageType.EVENT)
        assert (await bus.send(message)).status is MessageStatus.DELIVERED  # delivery goes on

        points = collect(reader)
        assert value(points, "audit_plugin.writer.store.available") == 0
        assert value(points, "audit_plugin.writer.retries") >= 1
        assert value(points, "audit_plugin.commit.timeouts") == 2  # the record and its outcome
        assert value(points, "audit_plugin.writer.queue.depth") == 2  # the record being retried, its outcome queued
        assert value(points, "audit_plugin.writer.written") == 0

        del bus
        gc.collect()  # a discarded bus and plugin: the trail's counters must not go backwards
        await trail.backend.initialize()  # the table is back
        await trail.flush(timeout=30)
        points = collect(reader)
        assert value(points, "audit_plugin.writer.store.available") == 1
        assert value(points, "audit_plugin.commit.timeouts") == 2
        assert value(points, "audit_plugin.writer.written") == 2
        assert value(points, "audit_plugin.writer.dropped") + value(points, "audit_plugin.writer.failed") == 0
        record = await trail.get_message(message.message_id)
        assert record is not None
        assert record.status is MessageStatus.DELIVERED


@pytest.mark.skipif(not os.environ.get("AUDIT_TEST_POSTGRES_URL"), reason="AUDIT_TEST_POSTGRES_URL is not set")
@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_refused_writes_are_counted_as_failed(
    database_url: str, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """PostgreSQL reports a missing table as a programming error: retrying cannot help, the writes fail."""
    async with MessageAuditTrail(database_url) as trail:
        bus = audited_bus(trail, meter_provider)
        bus.subscribe("b", noop)
        dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DROP TABLE message_audit_log")
        finally:
            await conn.close()
        with pytest.raises(AuditStoreError):  # commit mode: a record refused for good stops the delivery
            await bus.send(Message("a", "b", MessageType.EVENT))
        points = collect(reader)
        assert value(points, "audit_plugin.writer.failed") == trail.writer_stats.failed == 1
        assert value(points, "audit_plugin.writer.written") == 0


async def test_closed_trail_stops_reporting(
    sqlite_file: Path, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    trail = MessageAuditTrail(f"sqlite+aiosqlite:///{sqlite_file}")
    await trail.initialize()
    AuditPlugin(trail, meter_provider=meter_provider)
    assert "audit_plugin.writer.written" in collect(reader)
    await trail.close()
    assert "audit_plugin.writer.written" not in collect(reader)


async def test_one_series_per_trail_however_many_plugins(
    tmp_path: Path, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    async with (
        MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'first.db'}") as first,
        MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'second.db'}", max_queue=10) as second,
    ):
        for trail, plugins in ((first, 2), (second, 1)):
            for _ in range(plugins):
                bus = audited_bus(trail, meter_provider)
                bus.subscribe("b", noop)
                await bus.send(Message("a", "b", MessageType.EVENT))
        points = collect(reader)
        limits = {point.attributes["db.namespace"]: point.value for point in points["audit_plugin.writer.queue.limit"]}
        assert limits == {str(tmp_path / "first.db"): 100_000, str(tmp_path / "second.db"): 10}
        written = by_attributes(points["audit_plugin.writer.written"])
        assert {point.attributes["db.system.name"] for point in written.values()} == {"sqlite"}
        assert sorted(point.value for point in written.values()) == [2, 4]
        assert len(points["audit_plugin.commit.timeouts"]) == 2
