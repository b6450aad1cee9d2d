"""Entry point: claims ``sqlite`` URLs for :class:`SQLiteBackend`; makes test databases for the conformance suite."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.engine import make_url

from audit_plugin.hookspecs import hookimpl
from audit_plugin.storage.sqlite.backend import SQLiteBackend

NAME = "sqlite"
"""This backend's entry-point name."""


@hookimpl
def audit_create_backend(url: str) -> SQLiteBackend | None:
    if make_url(url).get_backend_name() != "sqlite":
        return None
    return SQLiteBackend(url)


@hookimpl
def audit_test_database(backend: str, directory: Path) -> contextlib.AbstractAsyncContextManager[str] | None:
    """A new database file in the test's own temporary directory (removed with it)."""
    if backend != NAME:
        return None
    return _database_file(directory / "audit.db")


@contextlib.asynccontextmanager
async def _database_file(path: Path) -> AsyncIterator[str]:
    yield f"sqlite+aiosqlite:///{path}"
