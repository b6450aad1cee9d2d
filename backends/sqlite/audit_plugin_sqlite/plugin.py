"""Entry point: claims ``sqlite`` URLs for :class:`SQLiteBackend`."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from audit_plugin.hookspecs import hookimpl
from audit_plugin_sqlite.backend import SQLiteBackend


@hookimpl
def audit_create_backend(url: str) -> SQLiteBackend | None:
    if make_url(url).get_backend_name() != "sqlite":
        return None
    return SQLiteBackend(url)
