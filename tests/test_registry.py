"""Backends are found by URL through the audit_plugin entry points."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pluggy
import pytest
from sqlalchemy.engine import make_url

from audit_plugin import MessageAuditTrail, RetentionPolicy, hookspecs
from audit_plugin.exceptions import AuditStoreError, InvalidFieldError, UnsupportedDatabaseURLError
from audit_plugin.storage.registry import extension_manager, resolve_database_url
from tests.helpers import make_message


def test_installed_backends_are_registered_through_entry_points() -> None:
    names = {name for name, _ in extension_manager().list_name_plugin()}
    assert {"sqlite", "postgres"} <= names


def test_backend_is_chosen_by_url(tmp_path: Path) -> None:
    assert MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}").backend.name == "sqlite"
    assert MessageAuditTrail("postgresql+asyncpg://postgres@127.0.0.1/none").backend.name == "postgresql"


async def test_plain_sqlite_url_uses_the_async_driver(tmp_path: Path) -> None:
    async with MessageAuditTrail(f"sqlite:///{tmp_path / 'plain.db'}") as trail:
        await trail.log_message(make_message())
        assert len(await trail.query_messages()) == 1


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        (
            "postgres://user:secret@db.example.com:5432/audit",
            "postgresql+asyncpg://user:secret@db.example.com:5432/audit",
        ),
        ("postgresql://db.example.com/audit", "postgresql+asyncpg://db.example.com/audit"),
        ("postgres+asyncpg://db.example.com/audit", "postgresql+asyncpg://db.example.com/audit"),
        ("postgresql+asyncpg://db.example.com/audit", "postgresql+asyncpg://db.example.com/audit"),
        ("sqlite:///audit.db", "sqlite+aiosqlite:///audit.db"),
        ("sqlite:////var/lib/audit.db", "sqlite+aiosqlite:////var/lib/audit.db"),
        ("audit.db", "sqlite+aiosqlite:///audit.db"),
        ("/var/lib/audit.db", "sqlite+aiosqlite:////var/lib/audit.db"),
        ("./data/audit.db", "sqlite+aiosqlite:///./data/audit.db"),
        ("mysql+aiomysql://root@localhost/audit", "mysql+aiomysql://root@localhost/audit"),
    ],
)
def test_common_url_spellings_resolve_to_the_async_drivers(given: str, resolved: str) -> None:
    assert resolve_database_url(given) == resolved


async def test_a_bare_path_and_the_postgres_scheme_open_real_stores(database_url: str, backend_name: str) -> None:
    parsed = make_url(database_url)
    if backend_name == "sqlite":
        spelled = str(parsed.database)  # /tmp/.../audit.db
    else:
        spelled = parsed.set(drivername="postgres").render_as_string(hide_password=False)  # postgres://...
    async with MessageAuditTrail(spelled) as trail:
        assert trail.backend.name == ("sqlite" if backend_name == "sqlite" else "postgresql")
        await trail.log_message(make_message())
    async with MessageAuditTrail(database_url) as trail:
        assert len(await trail.query_messages()) == 1


@pytest.mark.parametrize("policy", ["DAYS_365", "days_365", "Days_365"])
def test_retention_policy_may_be_given_by_name_in_any_case(tmp_path: Path, policy: str) -> None:
    trail = MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", retention_policy=policy)
    assert trail.retention_policy is RetentionPolicy.DAYS_365


def test_an_unknown_retention_policy_name_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(InvalidFieldError, match="DAYS_30, DAYS_90, DAYS_365, FOREVER") as caught:
        MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", retention_policy="DAYS_7")
    assert caught.value.field == "retention_policy"


def test_unknown_scheme_names_the_scheme() -> None:
    with pytest.raises(UnsupportedDatabaseURLError) as caught:
        MessageAuditTrail("mysql+aiomysql://root@localhost/audit")
    assert caught.value.scheme == "mysql+aiomysql"
    assert "'mysql+aiomysql'" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("url", "package"),
    [("sqlite+aiosqlite:///x.db", "audit-plugin"), ("postgresql+asyncpg://h/db", "audit-plugin-postgres")],
)
def test_missing_backend_names_the_package_to_install(url: str, package: str) -> None:
    bare = pluggy.PluginManager("audit_plugin")
    bare.add_hookspecs(hookspecs)  # no entry points loaded: as if the backend were not installed
    with pytest.raises(UnsupportedDatabaseURLError, match=f"pip install {package}"):
        MessageAuditTrail(url, plugin_manager=bare)


@pytest.mark.parametrize(
    "url", ["postgresql:/one-slash", "", "  ", "postgresql+psycopg2://h/db", "sqlite+pysqlite:///x.db"]
)
def test_malformed_or_unsupported_driver_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(InvalidFieldError, match="database_url"):
        MessageAuditTrail(url)


def test_bad_trail_options_are_rejected(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    with pytest.raises(InvalidFieldError, match="overflow"):
        MessageAuditTrail(url, overflow="spill")  # type: ignore[arg-type]
    with pytest.raises(InvalidFieldError, match="batch_size"):
        MessageAuditTrail(url, batch_size=0)
    with pytest.raises(TypeError, match="retention_policy"):
        MessageAuditTrail(url, retention_policy=30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    ["postgresql+asyncpg://postgres@127.0.0.1:1/unreachable", "sqlite+aiosqlite:////nonexistent-dir/sub/audit.db"],
)
async def test_unreachable_store_is_a_readable_error(url: str) -> None:
    trail = MessageAuditTrail(url)
    with pytest.raises(AuditStoreError, match="cannot open the audit store at"):
        await trail.initialize()
    await trail.close()


def test_a_sqlite_file_that_cannot_be_opened_leaves_no_connection_thread_behind(tmp_path: Path) -> None:
    """aiosqlite is never asked to open it: a failed aiosqlite connect would leave a thread to fail later."""
    before = {thread.ident for thread in threading.enumerate()}
    crashed: list[threading.ExceptHookArgs] = []
    previous, threading.excepthook = threading.excepthook, crashed.append

    async def attempt() -> list[str]:
        trail = MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'audit.db'}")
        with pytest.raises(AuditStoreError, match="unable to open database file"):
            await trail.initialize()
        await trail.close()
        return [t.name for t in threading.enumerate() if t.ident not in before and "connection_worker" in t.name]

    try:
        assert asyncio.run(attempt()) == []
    finally:
        threading.excepthook = previous
    assert crashed == []
