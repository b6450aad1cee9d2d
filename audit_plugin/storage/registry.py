"""Finding extensions: a plugin manager loaded from the ``audit_plugin`` entry points."""

from __future__ import annotations

import re

import pluggy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from audit_plugin import hookspecs
from audit_plugin.exceptions import InvalidFieldError, UnsupportedDatabaseURLError
from audit_plugin.masking import mask_url
from audit_plugin.storage.backend import AuditBackend

KNOWN_BACKEND_PACKAGES = {
    "sqlite": "audit-plugin",
    "postgresql": "audit-plugin-postgres",
    "postgres": "audit-plugin-postgres",
    "nats": "audit-plugin[nats]",
    "tls": "audit-plugin[nats]",
}
"""Database names in URLs, and the distribution that serves each."""


def extension_manager() -> pluggy.PluginManager:
    """A plugin manager with the hookspecs and every installed extension loaded."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    return manager


ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgres+asyncpg": "postgresql+asyncpg",
}
"""Common URL schemes (``postgres://`` is what many cloud providers print) and the async driver each means."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def resolve_database_url(url: str) -> str:
    """The URL the backends are asked about: common spellings resolved to the async drivers.

    ``postgres://`` and ``postgresql://`` become ``postgresql+asyncpg://``,
    ``sqlite:///`` becomes ``sqlite+aiosqlite:///``, and a bare file path
    (``audit.db``, ``/var/lib/audit.db``: no ``scheme:`` in front) is a SQLite
    file. Anything else is returned unchanged for the installed backends to
    claim. Raises :class:`InvalidFieldError` for a blank or malformed URL.
    """
    if not isinstance(url, str):
        raise InvalidFieldError("database_url", f"expected a URL string, got {type(url).__name__}")
    if not url.strip():
        raise InvalidFieldError("database_url", "is empty (expected e.g. sqlite+aiosqlite:///audit.db)")
    if "://" not in url and not _SCHEME.match(url):
        return f"sqlite+aiosqlite:///{url}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidFieldError(
            "database_url", f"{mask_url(url)!r} is not a database URL (expected e.g. sqlite+aiosqlite:///audit.db)"
        ) from None
    driver = ASYNC_DRIVERS.get(parsed.drivername)
    return url if driver is None else parsed.set(drivername=driver).render_as_string(hide_password=False)


def create_backend(url: str, manager: pluggy.PluginManager | None = None) -> AuditBackend:
    """The backend an installed extension offers for ``url`` (after :func:`resolve_database_url`).

    Raises :class:`UnsupportedDatabaseURLError` naming the scheme and the
    package to install when no extension claims it.
    """
    url = resolve_database_url(url)
    parsed = make_url(url)
    manager = manager or extension_manager()
    backend = manager.hook.audit_create_backend(url=url)
    if backend is None:
        scheme = parsed.drivername
        raise UnsupportedDatabaseURLError(url, scheme, KNOWN_BACKEND_PACKAGES.get(parsed.get_backend_name()))
    return backend
