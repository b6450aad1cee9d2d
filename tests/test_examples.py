"""Every example under examples/ runs as-is, as a subprocess, and leaves the records it promises."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus
from tests.cli_support import cli_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=cli_env(),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def stored(database_url: str, query: AuditQuery | None = None) -> Counter[tuple[str, str, MessageStatus]]:
    async def read() -> Counter[tuple[str, str, MessageStatus]]:
        async with MessageAuditTrail(database_url) as trail:
            records = await trail.query_messages(query or AuditQuery(limit=1000))
            return Counter((record.from_agent, record.to_agent, record.status) for record in records)

    return asyncio.run(read())


def test_quickstart(tmp_path: Path) -> None:
    out = run_example("quickstart.py", cwd=tmp_path)
    assert "planner got {'answer': 42}" in out
    assert "planner -> worker DELIVERED {'q': 'meaning?'}" in out
    assert "worker -> planner DELIVERED {'answer': 42}" in out
    assert stored(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") == {
        ("planner", "worker", MessageStatus.DELIVERED): 1,
        ("worker", "planner", MessageStatus.DELIVERED): 1,
    }


def test_custom_bus_through_the_hook_contract(database_url: str, tmp_path: Path) -> None:
    out = run_example("custom_bus.py", database_url, cwd=tmp_path)
    assert "shop got {'price': 9.5}" in out
    assert stored(database_url) == {
        ("shop", "pricing", MessageStatus.DELIVERED): 1,
        ("shop", "pricing", MessageStatus.FAILED): 1,
        ("pricing", "shop", MessageStatus.DELIVERED): 1,
        ("shop", "billing", MessageStatus.FAILED): 1,
    }
    assert "LookupError(\"no price for SKU 'unknown'\")" in out and "no such queue" in out


def test_swap_backend_runs_the_same_code_on_each_backend(database_url: str, backend_name: str, tmp_path: Path) -> None:
    out = run_example("swap_backend.py", database_url, cwd=tmp_path)
    shown_name = {"postgres": "postgresql"}.get(backend_name, backend_name)  # the backend's name, not its entry point's
    assert f"backend: {shown_name}" in out
    assert "3 delivered, 1 failed (no subscriber for agent 'nobody')" in out
    assert stored(database_url) == {
        ("client", "echo", MessageStatus.DELIVERED): 3,
        ("client", "nobody", MessageStatus.FAILED): 1,
    }


def test_swap_backend_reads_the_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'from_env.db'}"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "swap_backend.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=cli_env(AUDIT_DATABASE_URL=url),
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from_env.db").exists() and not (tmp_path / "swap_backend.db").exists()


def test_integrity_demo(tmp_path: Path) -> None:
    out = run_example("integrity_demo.py", cwd=tmp_path)
    assert "'card_number': '[REDACTED]'" in out  # redacted at capture
    assert '"$audit":"encrypted"' in out  # what the database holds
    assert "signature valid: True" in out
    assert "erase customer-42: 1 data key destroyed" in out
    assert "'$audit': 'erased'" in out
    assert "verify: OK" in out
    assert "BROKEN at entry 3" in out  # the edit behind the trail's back is found
