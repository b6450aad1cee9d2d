"""The conformance suite's pytest plugin: a backend distribution runs the suite against itself.

Each test here runs pytest in a subprocess beside a stand-in third-party
distribution ``audit-plugin-fake`` (a package and its ``dist-info`` with an
``audit_plugin`` entry point named ``fake``), found the way installed
distributions are.
"""

from __future__ import annotations

import textwrap

import pytest

FAKE_BACKEND = '''
"""A stand-in backend distribution: its databases are SQLite files (the SQLite backend serves their URLs)."""
import contextlib
import os
import unittest

from audit_plugin.hookspecs import hookimpl

made = []


@hookimpl
def audit_test_database(backend, directory):
    if backend != "fake":
        return None
    return _database(directory)


@contextlib.asynccontextmanager
async def _database(directory):
    if os.environ.get("AUDIT_FAKE_UNAVAILABLE"):
        raise unittest.SkipTest("the fake server is not configured")
    yield f"sqlite+aiosqlite:///{directory / 'fake.db'}"
'''

SUITE = """
from audit_plugin import AuditQuery, Message, MessageType

async def test_round_trip(trail, backend_name):
    message = Message("a", "b", MessageType.EVENT, {"backend": backend_name})
    await trail.log_message(message)
    [record] = await trail.query_messages(AuditQuery())
    assert record.payload == {"backend": backend_name}

def test_backend_name_only(backend_name):
    assert backend_name

import pytest

@pytest.mark.parametrize("backend_name", ["sqlite"])
def test_pinned(backend_name):
    assert backend_name == "sqlite"
"""


@pytest.fixture
def fake_distribution(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(audit_plugin_fake=FAKE_BACKEND, test_suite=SUITE)
    info = pytester.mkdir("audit_plugin_fake-0.1.dist-info")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: audit-plugin-fake\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[audit_plugin]\nfake = audit_plugin_fake\n")
    pytester.makeini(textwrap.dedent("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"))
    return pytester


def test_a_backend_distribution_runs_the_suite_against_itself(fake_distribution: pytest.Pytester) -> None:
    result = fake_distribution.runpytest_subprocess("-p", "audit_plugin.testing", "--audit-backend", "fake", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "audit-plugin backends: fake",
            "*test_round_trip?fake? PASSED*",
            "*test_backend_name_only?fake? PASSED*",
            "*test_pinned?sqlite? PASSED*",
        ]
    )


def test_every_installed_backend_runs_by_default(fake_distribution: pytest.Pytester) -> None:
    result = fake_distribution.runpytest_subprocess("-p", "audit_plugin.testing", "-v", "-k", "round_trip")
    result.stdout.fnmatch_lines(["audit-plugin backends: fake, postgres, sqlite"])
    for name in ("fake", "sqlite"):
        result.stdout.fnmatch_lines([f"*test_round_trip?{name}? PASSED*"])


def test_a_backend_that_cannot_make_a_database_here_skips_with_its_reason(
    fake_distribution: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_FAKE_UNAVAILABLE", "1")
    result = fake_distribution.runpytest_subprocess("-p", "audit_plugin.testing", "--audit-backend", "fake", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*the fake server is not configured*"])


def test_an_unknown_backend_name_is_a_usage_error_naming_the_installed_ones(fake_distribution: pytest.Pytester) -> None:
    result = fake_distribution.runpytest_subprocess("-p", "audit_plugin.testing", "--audit-backend", "mysql")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--audit-backend mysql: no installed audit_plugin backend*(installed: fake, postgres, sqlite)*"]
    )
