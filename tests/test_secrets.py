"""No secret is ever shown: planted passwords and tokens are looked for in every output channel.

Channels: exception messages and ``repr()``, log records (caplog), CLI
stdout and stderr, span attributes (the SDK's in-memory exporter), metric
attributes (the in-memory reader), viewer responses.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType
from audit_plugin.exceptions import AuditError, UnsupportedDatabaseURLError
from audit_plugin.jetstream.address import parse_address
from audit_plugin.masking import MASK, mask_text, mask_url
from tests.cli_support import run_cli
from tests.jetstream_support import nats_server

PASSWORD = "Planted-Pa55word-9f2c"
TOKEN = "planted-token-4b8e1d0a77"


def assert_clean(*texts: object) -> None:
    for text in texts:
        assert PASSWORD not in str(text) and TOKEN not in str(text), text


def test_mask_url_masks_passwords_tokens_and_secret_parameters() -> None:
    assert (
        mask_url(f"postgresql+asyncpg://audit:{PASSWORD}@db:5432/audit")
        == "postgresql+asyncpg://audit:***@db:5432/audit"
    )
    assert mask_url(f"nats://{TOKEN}@nats:4222/audit") == "nats://***@nats:4222/audit"
    assert mask_url(f"tls://u:{PASSWORD}@nats/s?tls_ca=/ca.pem") == "tls://u:***@nats/s?tls_ca=/ca.pem"
    assert mask_url(f"postgresql://db/x?sslmode=require&password={PASSWORD}").endswith("password=***")
    assert mask_url("postgresql://audit@db/audit") == "postgresql://audit@db/audit"  # a user alone is no secret
    assert mask_url("sqlite+aiosqlite:///var/lib/audit.db") == "sqlite+aiosqlite:///var/lib/audit.db"
    assert mask_text(f"failed: postgresql://a:{PASSWORD}@h/d (and nats://u:{PASSWORD}@n/s)").count(MASK) == 2


@given(
    user=st.text(alphabet=st.characters(whitelist_categories=("Ll", "Nd")), min_size=1, max_size=8),
    secret=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=30),
)
def test_a_password_never_survives_masking(user: str, secret: str) -> None:
    for url in (f"postgresql://{user}:{secret}@host/db", f"nats://{user}:{secret}@host:4222/s"):
        masked = mask_url(url)
        before_host = masked.rsplit("@", 1)[0]
        assert secret not in before_host.split("://", 1)[1].replace(f"{user}:", "", 1) or secret in user


async def test_a_store_that_cannot_be_opened_names_it_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql+asyncpg://audit:{PASSWORD}@127.0.0.1:1/audit?sslpassword={PASSWORD}"
    trail = MessageAuditTrail(url)
    assert_clean(repr(trail), repr(trail.backend))
    with pytest.raises(AuditError) as failed:
        await trail.initialize()
    await trail.close()
    assert "127.0.0.1:1" in str(failed.value)
    assert_clean(failed.value, repr(failed.value), *(record.getMessage() for record in caplog.records))
    unknown = UnsupportedDatabaseURLError(f"mysql://root:{PASSWORD}@db/x", "mysql", None)
    assert_clean(unknown, unknown.url)


def test_the_command_line_never_prints_a_password(tmp_path: Path) -> None:
    url = f"postgresql://audit:{PASSWORD}@127.0.0.1:1/audit"
    for args in (("query",), ("verify",), ("serve", "--port", "0"), ("access-log",)):
        result = run_cli(*args, database_url=url)
        assert result.returncode != 0
        assert_clean(result.stdout, result.stderr)
        assert "127.0.0.1" in result.stderr
    result = run_cli(
        "ingest", "--from", f"nats://u:{PASSWORD}@127.0.0.1:1/audit", "--exit-when-idle",
        database_url=f"sqlite:///{tmp_path / 'a.db'}",
    )  # fmt: skip
    assert result.returncode != 0 and "127.0.0.1" in result.stderr
    assert_clean(result.stdout, result.stderr)
    bad = run_cli("query", database_url=f"nats://u:{PASSWORD}@127.0.0.1:1/bad stream")
    assert bad.returncode == 2
    assert_clean(bad.stdout, bad.stderr)


def test_nats_addresses_keep_credentials_out_of_every_text() -> None:
    address = parse_address(f"nats://alice:{PASSWORD}@127.0.0.1:4222/audit")
    assert address.server == "nats://127.0.0.1:4222" and address.credentials.password == PASSWORD
    assert_clean(repr(address), address.display(), address.server)
    token = parse_address(f"nats://{TOKEN}@127.0.0.1/audit")
    assert token.credentials.token == TOKEN
    assert_clean(repr(token), token.display())
    for bad in (f"nats://u:{PASSWORD}@h:99999/s", f"nats://u:{PASSWORD}@h/bad name", f"http://u:{PASSWORD}@h/s"):
        with pytest.raises(AuditError) as refused:
            parse_address(bad)
        assert_clean(refused.value)


def _attributes(exporter: InMemorySpanExporter, reader: InMemoryMetricReader) -> list[str]:
    values: list[Any] = []
    for span in exporter.get_finished_spans():
        values += [*span.attributes.values(), span.name, *(e.attributes for e in span.events)]
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                values += [dict(point.attributes) for point in metric.data.data_points]
    return [str(value) for value in values]


async def test_spans_metrics_and_logs_of_a_secured_nats_trail_hold_no_credential(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    with nats_server(tmp_path / "nats", "--user", "alice", "--pass", PASSWORD) as node:
        url = f"nats://alice:{PASSWORD}@127.0.0.1:{node.port}/secrets{node.port}"
        async with MessageAuditTrail(url) as trail:
            bus = MessageBus(tracer_provider=tracer_provider, meter_provider=meter_provider)
            bus.register(AuditPlugin(trail, tracer_provider=tracer_provider, meter_provider=meter_provider))

            async def handler(message: Message) -> None:
                return None

            bus.subscribe("worker", handler)
            for _ in range(3):
                await bus.send(Message("sender", "worker", MessageType.COMMAND, {"n": 1}))
            await trail.flush()
            assert_clean(repr(trail), repr(trail.backend.address))  # type: ignore[attr-defined]
        node.kill()  # an outage: the reconnect warnings must not name the password either
    collected = _attributes(exporter, reader)
    assert collected  # spans and metrics were made
    assert_clean(*collected, *(record.getMessage() for record in caplog.records))
    tracer_provider.shutdown()
    meter_provider.shutdown()
