"""The suite's fixtures: the conformance fixtures of :mod:`audit_plugin.testing`, PostgreSQL's server URL, and a
tracer provider whose spans an in-memory exporter keeps (``provider``, ``exporter``).

Every test that uses ``backend_name``, ``database_url`` or ``trail`` runs on
every installed backend (``--audit-backend NAME`` picks some). SQLite runs
always, on a temporary file. PostgreSQL runs when ``AUDIT_TEST_POSTGRES_URL``
is set (e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``); each
test then gets its own freshly created database, dropped afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytest_plugins = ("audit_plugin.testing", "pytester")

POSTGRES_URL = os.environ.get("AUDIT_TEST_POSTGRES_URL")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The PostgreSQL server URL, for tests that only make sense there."""
    if not POSTGRES_URL:
        pytest.skip("AUDIT_TEST_POSTGRES_URL is not set")
    yield POSTGRES_URL


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """The spans ``provider`` ended, in memory."""
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A real SDK tracer provider exporting every span to ``exporter`` as it ends."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()
