"""Throwaway databases for the conformance suite, on the server ``AUDIT_TEST_POSTGRES_URL`` names.

For example ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``: each test
gets a database of its own, created on that server and dropped (connections
and all) afterwards, so suites run in parallel do not meet.
"""

from __future__ import annotations

import contextlib
import os
import unittest
import uuid
from collections.abc import AsyncIterator

import asyncpg
from sqlalchemy.engine import make_url

SERVER_URL_ENV = "AUDIT_TEST_POSTGRES_URL"


@contextlib.asynccontextmanager
async def throwaway_database() -> AsyncIterator[str]:
    """Create an empty database, yield its ``postgresql+asyncpg`` URL, drop it on exit.

    Raises :class:`unittest.SkipTest` when ``AUDIT_TEST_POSTGRES_URL`` is not set.
    """
    server = os.environ.get(SERVER_URL_ENV)
    if not server:
        raise unittest.SkipTest(f"{SERVER_URL_ENV} is not set")
    name = f"audit_test_{uuid.uuid4().hex[:16]}"
    await _run_on_server(server, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    finally:
        await _run_on_server(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _run_on_server(server: str, statement: str) -> None:
    dsn = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
