"""PostgreSQL backend for audit-plugin: the production store.

Installed as the ``postgres`` entry point of the ``audit_plugin`` group;
serves ``postgresql+asyncpg://user@host/db`` (and ``postgresql://``).
"""

from __future__ import annotations

from audit_plugin_postgres.backend import PostgresBackend

__all__ = ["PostgresBackend"]
