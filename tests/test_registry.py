"""Backends are found by URL through the audit_plugin entry points."""

from __future__ import annotations

from pathlib import Path

import pluggy
import pytest

from audit_plugin import MessageAuditTrail, hookspecs
from audit_plugin.exceptions import AuditStoreError, InvalidFieldError, UnsupportedDatabaseURLError
from audit_plugin.registry import extension_manager
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


def test_unknown_scheme_names_the_scheme() -> None:
    with pytest.raises(UnsupportedDatabaseURLError) as caught:
        MessageAuditTrail("mysql+aiomysql://root@localhost/audit")
    assert caught.value.scheme == "mysql+aiomysql"
    assert "'mysql+aiomysql'" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("url", "package"),
    [("sqlite+aiosqlite:///x.db", "audit-plugin-sqlite"), ("postgresql+asyncpg://h/db", "audit-plugin-postgres")],
)
def test_missing_backend_names_the_package_to_install(url: str, package: str) -> None:
    bare = pluggy.PluginManager("audit_plugin")
    bare.add_hookspecs(hookspecs)  # no entry points loaded: as if the backend were not installed
    with pytest.raises(UnsupportedDatabaseURLError, match=f"pip install {package}"):
        MessageAuditTrail(url, plugin_manager=bare)


@pytest.mark.parametrize("url", ["not a url", "", "postgresql+psycopg2://h/db", "sqlite+pysqlite:///x.db"])
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
