"""The command line's readers: --role, --as, --record-access, and access-log."""

from __future__ import annotations

import getpass
import json

from tests.cli_support import assert_one_line_error, run_cli, seed_sample


def test_a_reader_sees_no_payload_values_and_may_not_export_or_verify(database_url: str) -> None:
    seed_sample(database_url)
    as_auditor = json.loads(run_cli("query", "--json", database_url=database_url).stdout)
    as_reader = json.loads(run_cli("query", "--json", "--role", "reader", database_url=database_url).stdout)
    assert [r["message_id"] for r in as_reader] == [r["message_id"] for r in as_auditor]
    assert any(r["payload"] for r in as_auditor)
    for record in as_reader:
        assert set(record["payload"]) == set(
            next(a for a in as_auditor if a["message_id"] == record["message_id"])["payload"]
        )
        assert all(value == "[REDACTED]" or isinstance(value, dict | list) for value in record["payload"].values())
    for args in (("export",), ("verify",), ("access-log",), ("prove", "abcdef12")):
        assert_one_line_error(run_cli(*args, "--role", "reader", database_url=database_url), 2, "reader role may not")
    by_env = run_cli("export", database_url=database_url, AUDIT_ROLE="reader")
    assert_one_line_error(by_env, 2, "AUDIT_ROLE")


def test_record_access_leaves_an_entry_access_log_lists(database_url: str) -> None:
    seed_sample(database_url)
    assert run_cli("query", "--status", "failed", "--record-access", database_url=database_url).returncode == 0
    assert (
        run_cli("conversation", "c1", "--record-access", "--as", "incident-42", database_url=database_url).returncode
        == 0
    )
    assert run_cli("query", database_url=database_url).returncode == 0  # not recorded: no --record-access
    listed = run_cli("access-log", "--json", database_url=database_url)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [(e["actor"], e["action"]) for e in entries] == [
        ("incident-42", "conversation"),
        (getpass.getuser(), "query"),
    ]
    assert entries[1]["filter"]["status"] == "FAILED" and entries[1]["channel"] == "cli"
    assert entries[1]["records"] == len(entries[1]["ids"]) > 0
    only = json.loads(run_cli("access-log", "--json", "--actor", "incident-42", database_url=database_url).stdout)
    assert [e["action"] for e in only] == ["conversation"]
    assert run_cli("verify", database_url=database_url).returncode == 0  # the access entries verify with the chain
    table = run_cli("access-log", database_url=database_url)
    assert "incident-42" in table.stdout and "conversation" in table.stdout


def test_bad_readers_are_refused(database_url: str) -> None:
    seed_sample(database_url)
    assert_one_line_error(run_cli("query", "--role", "admin", database_url=database_url), 2, "'admin' is not a role")
    assert_one_line_error(run_cli("query", "--as", "", database_url=database_url), 2, "--as")
    assert_one_line_error(run_cli("query", "--as", " x", database_url=database_url), 2, "--as")
    assert_one_line_error(run_cli("access-log", "--actor", "", database_url=database_url), 2, "--actor")
    assert_one_line_error(run_cli("access-log", database_url=database_url), 1, "no access entries")
