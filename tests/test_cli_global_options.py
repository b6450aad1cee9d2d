"""``--database-url`` and ``--json`` before the subcommand as well as after it, with a clear order of precedence."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from audit_plugin import Message, MessageAuditTrail, MessageType
from audit_plugin.cli import main
from tests.cli_support import assert_one_line_error, run_cli, seed_sample


def run_in_process(argv: list[str], env_url: str | None) -> tuple[int, str, str]:
    """``audit-plugin ARGV`` in this process (fast enough for many examples): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.pop("AUDIT_DATABASE_URL", None)
    if env_url is not None:
        os.environ["AUDIT_DATABASE_URL"] = env_url
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        os.environ.pop("AUDIT_DATABASE_URL", None)
        if saved is not None:
            os.environ["AUDIT_DATABASE_URL"] = saved
    return code, out.getvalue(), err.getvalue()


def seed_records(url: str, count: int) -> None:
    async def write() -> None:
        async with MessageAuditTrail(url) as trail:
            for n in range(count):
                await trail.log_message(Message("a", "b", MessageType.EVENT, {"n": n}))

    asyncio.run(write())


STORES = {"before": 1, "after": 2, "env": 3}
"""Each store and how many records it holds, so a count says which store a command read."""


def test_options_before_the_command_rank_after_its_own_and_before_the_environment(tmp_path: Path) -> None:
    urls = {name: f"sqlite+aiosqlite:///{tmp_path / name}.db" for name in STORES}
    for name, count in STORES.items():
        seed_records(urls[name], count)

    @settings(max_examples=40, deadline=None)
    @given(
        before=st.booleans(),
        after=st.booleans(),
        env=st.booleans(),
        json_where=st.sampled_from(["before", "after", "both"]),
        spelled=st.sampled_from(["split", "equals"]),
    )
    def check(before: bool, after: bool, env: bool, json_where: str, spelled: str) -> None:
        def url_option(url: str) -> list[str]:
            return [f"--database-url={url}"] if spelled == "equals" else ["--database-url", url]

        argv = [
            *(url_option(urls["before"]) if before else []),
            *(["--json"] if json_where in ("before", "both") else []),
            "stats",
            *(url_option(urls["after"]) if after else []),
            *(["--json"] if json_where in ("after", "both") else []),
        ]
        code, out, err = run_in_process(argv, urls["env"] if env else None)
        expected = "after" if after else "before" if before else "env" if env else None
        if expected is None:  # the default ./audit.db, absent here
            assert code == 3 and "no audit database" in err, (argv, err)
            return
        assert code == 0, (argv, err)
        assert json.loads(out)["total_messages"] == STORES[expected], argv

    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        check()
    finally:
        os.chdir(cwd)


def test_a_global_option_a_command_does_not_take_is_named(database_url: str) -> None:
    seed_sample(database_url)
    assert_one_line_error(run_cli("--json", "serve"), 2, "serve takes no --json")
    before = run_cli("--database-url", database_url, "--json", "query", "--limit", "1")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)[0]["message_id"] == "p"
    assert "--database-url and --json go before or after" in " ".join(run_cli("-h").stdout.split())
