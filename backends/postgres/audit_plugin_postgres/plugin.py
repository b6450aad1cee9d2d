"""Entry point: claims ``postgresql`` URLs for :class:`PostgresBackend`; makes databases for the conformance suite."""

from __future__ import annotations

import contextlib
from pathlib import Path

from sqlalchemy.engine import make_url

from audit_plugin.hookspecs import hookimpl
from audit_plugin_postgres.backend import PostgresBackend

NAME = "postgres"
"""This backend's entry-point name."""


@hookimpl
def audit_create_backend(url: str) -> PostgresBackend | None:
    if make_url(url).get_backend_name() != "postgresql":
        return None
    return PostgresBackend(url)


@hookimpl
def audit_test_database(backend: str, directory: Path) -> contextlib.AbstractAsyncContextManager[str] | None:
    """A new database on the server ``AUDIT_TEST_POSTGRES_URL`` names, dropped afterwards."""
    if backend != NAME:
        return None
    from audit_plugin_postgres.testing import throwaway_database

    return throwaway_database()
