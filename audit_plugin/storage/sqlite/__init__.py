"""The SQLite backend: the embedded default, installed with the core.

Registered, like any third-party backend, as the ``sqlite`` entry point of
the ``audit_plugin`` group (the core distribution declares it); serves
``sqlite+aiosqlite:///path.db`` (and plain ``sqlite:///path.db``).
"""

from __future__ import annotations

from audit_plugin.storage.sqlite.backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
