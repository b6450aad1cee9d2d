"""SQLite backend for audit-plugin: the embedded default.

Installed as the ``sqlite`` entry point of the ``audit_plugin`` group; serves
``sqlite+aiosqlite:///path.db`` (and plain ``sqlite:///path.db``).
"""

from __future__ import annotations

from audit_plugin_sqlite.backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
