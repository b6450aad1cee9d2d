"""Entry point: claims ``postgresql`` URLs for :class:`PostgresBackend`."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from audit_plugin.hookspecs import hookimpl
from audit_plugin_postgres.backend import PostgresBackend


@hookimpl
def audit_create_backend(url: str) -> PostgresBackend | None:
    if make_url(url).get_backend_name() != "postgresql":
        return None
    return PostgresBackend(url)
