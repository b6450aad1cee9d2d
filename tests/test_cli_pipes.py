"""The command line in pipelines and logs: a reader that goes away, progress on a stderr that is not a terminal."""

from __future__ import annotations

import asyncio
import io
import subprocess
import uuid
from pathlib import Path

import nats
import pytest

from audit_plugin import Message, MessageAuditTrail, MessageType
from audit_plugin.cli.output import ProgressLine
from tests.cli_support import CLI, cli_env, run_cli
from tests.jetstream_support import SHARED_URL, shared_server_up


def seed_many(database_url: str, count: int) -> None:
    async def write() -> None:
        async with MessageAuditTrail(database_url) as trail:
            await asyncio.gather(
                *(
                    trail.log_message(Message("a", "b", MessageType.EVENT, {"n": n, "pad": "x" * 100}))
                    for n in range(count)
                )
            )

    asyncio.run(write())


@pytest.mark.parametrize("args", [("export",), ("export", "--csv"), ("query", "--json", "--limit", "3000")])
def test_a_reader_that_goes_away_is_success_not_an_error(database_url: str, args: tuple[str, ...]) -> None:
    seed_many(database_url, 3000)  # ~500 KB of output: far more than a pipe holds, so writing meets the closed pipe
    command = [str(CLI), *args, "--database-url", database_url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), text=True) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline()  # `| head -1`
        child.stdout.close()
        code = child.wait(timeout=120)
        errors = child.stderr.read()
    assert code == 0, errors
    assert "Traceback" not in errors and "BrokenPipe" not in errors and "Exception ignored" not in errors


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_log_is_plain_periodic_lines() -> None:
    now = [0.0]
    log = io.StringIO()
    progress = ProgressLine(log, every=10, clock=lambda: now[0])
    for second in range(25):
        now[0] = float(second)
        progress.show(f"at {second}")
    progress.done("finished")
    assert log.getvalue() == "at 0\nat 10\nat 20\nfinished\n"
    terminal = Terminal()
    live = ProgressLine(terminal, every=10, clock=lambda: now[0])
    live.show("a")
    live.show("b")
    live.done("c")
    assert terminal.getvalue() == "\ra\x1b[K\rb\x1b[K\rc\x1b[K\n"  # redrawn in place, every time


@pytest.mark.skipif(not shared_server_up(), reason="no NATS JetStream server on 127.0.0.1:4222")
def test_ingest_writes_no_control_codes_to_a_log(tmp_path: Path) -> None:
    stream = f"audit_test_{uuid.uuid4().hex[:12]}"
    source = f"{SHARED_URL}/{stream}"

    async def produce() -> None:
        async with MessageAuditTrail(source) as producer:
            for n in range(20):
                await producer.log_message(Message("a", "b", MessageType.EVENT, {"n": n}))

    async def delete_stream() -> None:
        client = await nats.connect(SHARED_URL)
        try:
            await client.jetstream().delete_stream(stream)
        finally:
            await client.close()

    asyncio.run(produce())
    try:
        result = run_cli(
            "ingest", "--from", source, "--exit-when-idle", database_url=f"sqlite+aiosqlite:///{tmp_path / 'in.db'}"
        )
    finally:
        asyncio.run(delete_stream())
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert result.stderr.endswith("\n") and result.stderr.splitlines()[-1].startswith("ingested 20 ops")
