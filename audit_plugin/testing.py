"""pytest plugin: runs the conformance suite against installed backends, a backend distribution's own included.

Load it with ``-p audit_plugin.testing`` (the project's own ``tests/``
load it already). Every test that uses a database runs once per backend:

    pytest                               # every installed backend that makes test databases
    pytest --audit-backend mysql         # only the backend whose entry point is named "mysql"

A backend takes part by implementing the ``audit_test_database`` hook next to
its ``audit_create_backend`` (see :mod:`audit_plugin.hookspecs` and
``docs/backends.md``). Fixtures:

* ``backend_name``: the backend's entry-point name (tests are parametrized
  over it; a test may parametrize it itself to pin one backend);
* ``database_url``: the URL of an empty database on that backend, dropped
  after the test;
* ``trail``: an initialised :class:`~audit_plugin.MessageAuditTrail` on it,
  closed after the test.

This module imports pytest; ``import audit_plugin`` never imports it.
"""

from __future__ import annotations

import contextlib
import unittest
from collections.abc import AsyncIterator
from pathlib import Path

import pluggy
import pytest
import pytest_asyncio

from audit_plugin import MessageAuditTrail
from audit_plugin.storage.registry import extension_manager

OPTION = "--audit-backend"
_BACKENDS = pytest.StashKey[list[str]]()
_MANAGER = pytest.StashKey[pluggy.PluginManager]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("audit-plugin", "audit-plugin conformance suite")
    group.addoption(
        OPTION,
        action="append",
        dest="audit_backends",
        metavar="NAME",
        help="run the database tests on this backend (its audit_plugin entry-point name); repeatable. "
        "Default: every installed backend that implements audit_test_database.",
    )


def backends_making_databases(manager: pluggy.PluginManager) -> list[str]:
    """Entry-point names of the installed plugins that implement ``audit_test_database``, sorted."""
    return sorted({impl.plugin_name for impl in manager.hook.audit_test_database.get_hookimpls()})


def pytest_configure(config: pytest.Config) -> None:
    manager = extension_manager()
    installed = backends_making_databases(manager)
    chosen = config.getoption("audit_backends") or installed
    unknown = [name for name in chosen if name not in installed]
    if unknown:
        raise pytest.UsageError(
            f"{OPTION} {', '.join(unknown)}: no installed audit_plugin backend of that name makes test databases "
            f"(installed: {', '.join(installed) or 'none'})"
        )
    config.stash[_BACKENDS] = list(dict.fromkeys(chosen))
    config.stash[_MANAGER] = manager


def pytest_report_header(config: pytest.Config) -> str:
    return f"audit-plugin backends: {', '.join(config.stash[_BACKENDS])}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``backend_name`` over the chosen backends, unless the test pins it itself."""
    if "backend_name" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if "backend_name" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return
    metafunc.parametrize("backend_name", metafunc.config.stash[_BACKENDS])


@pytest_asyncio.fixture
async def database_url(backend_name: str, tmp_path: Path, pytestconfig: pytest.Config) -> AsyncIterator[str]:
    """The URL of an empty database on the backend under test, dropped after the test."""
    manager = pytestconfig.stash[_MANAGER]
    database = manager.hook.audit_test_database(backend=backend_name, directory=tmp_path)
    if database is None:
        pytest.fail(f"no installed audit_plugin backend named {backend_name!r} makes test databases")
    async with contextlib.AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(database)
        except unittest.SkipTest as reason:
            pytest.skip(str(reason))
        yield url


@pytest_asyncio.fixture
async def trail(database_url: str) -> AsyncIterator[MessageAuditTrail]:
    """An initialised trail on an empty database, closed afterwards."""
    audit_trail = MessageAuditTrail(database_url)
    await audit_trail.initialize()
    try:
        yield audit_trail
    finally:
        await audit_trail.close()
