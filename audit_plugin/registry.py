"""Finding extensions: a plugin manager loaded from the ``audit_plugin`` entry points."""

from __future__ import annotations

import pluggy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from audit_plugin import hookspecs
from audit_plugin.backend import AuditBackend
from audit_plugin.exceptions import InvalidFieldError, UnsupportedDatabaseURLError

KNOWN_BACKEND_PACKAGES = {
    "sqlite": "audit-plugin-sqlite",
    "postgresql": "audit-plugin-postgres",
    "postgres": "audit-plugin-postgres",
}
"""Database names in URLs, and the distribution that serves each."""


def extension_manager() -> pluggy.PluginManager:
    """A plugin manager with the hookspecs and every installed extension loaded."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    return manager


def create_backend(url: str, manager: pluggy.PluginManager | None = None) -> AuditBackend:
    """The backend an installed extension offers for ``url``.

    Raises :class:`UnsupportedDatabaseURLError` naming the scheme and the
    package to install when no extension claims it.
    """
    if not isinstance(url, str):
        raise InvalidFieldError("database_url", f"expected a URL string, got {type(url).__name__}")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidFieldError(
            "database_url", f"{url!r} is not a database URL (expected e.g. sqlite+aiosqlite:///audit.db)"
        ) from None
    manager = manager or extension_manager()
    backend = manager.hook.audit_create_backend(url=url)
    if backend is None:
        scheme = parsed.drivername
        raise UnsupportedDatabaseURLError(url, scheme, KNOWN_BACKEND_PACKAGES.get(parsed.get_backend_name()))
    return backend
