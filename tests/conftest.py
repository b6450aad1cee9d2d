"""Shared fixtures: every conformance test runs on every installed backend.

SQLite runs always, on a temporary file. PostgreSQL runs when
``AUDIT_TEST_POSTGRES_URL`` is set (e.g.
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``); each test then gets
its own freshly created database, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from audit_plugin import MessageAuditTrail

POSTGRES_URL = os.environ.get("AUDIT_TEST_POSTGRES_URL")

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(not POSTGRES_URL, reason="AUDIT_TEST_POSTGRES_URL is not set"),
    ),
]


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


class PostgresDatabases:
    """Creates and drops throwaway databases on the test server."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def create(self) -> str:
        name = f"audit_test_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(_asyncpg_dsn(self.url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return (
            make_url(self.url).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
        )

    async def drop(self, url: str) -> None:
        name = make_url(url).database
        conn = await asyncpg.connect(_asyncpg_dsn(self.url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture
async def database_url(backend_name: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty database on the parametrized backend."""
    if backend_name == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
        return
    assert POSTGRES_URL is not None
    databases = PostgresDatabases(POSTGRES_URL)
    url = await databases.create()
    try:
        yield url
    finally:
        await databases.drop(url)


@pytest_asyncio.fixture
async def trail(database_url: str) -> AsyncIterator[MessageAuditTrail]:
    """An initialised trail on an empty database, closed afterwards."""
    audit_trail = MessageAuditTrail(database_url)
    await audit_trail.initialize()
    try:
        yield audit_trail
    finally:
        await audit_trail.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The PostgreSQL server URL, for tests that only make sense there."""
    if not POSTGRES_URL:
        pytest.skip("AUDIT_TEST_POSTGRES_URL is not set")
    yield POSTGRES_URL
