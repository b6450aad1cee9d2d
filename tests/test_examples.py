"""Every example under examples/ runs after exactly the install the README shows for it, and does what it says.

See :mod:`tests.example_installs` for how "exactly that install" is enforced.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from pathlib import Path

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus
from tests.example_installs import EXAMPLES, README, documented_installs
from tests.example_installs import run_example as run_installed


def run_example(name: str, *args: str, cwd: Path, **env: str) -> str:
    result = run_installed(name, *args, cwd=cwd, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_readme_lists_every_example_with_what_to_install() -> None:
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    installs = documented_installs()
    assert set(installs) == scripts
    assert installs["quickstart.py"] == ()
    assert installs["integrity_demo.py"] == ("[crypto]",)
    assert installs["tracing_console.py"] == ("[examples]",)
    assert installs["a2a_agents.py"] == ("[a2a]", "a2a-sdk[http-server]", "uvicorn")
    assert installs["faststream_agents.py"] == ("[faststream]", "faststream[redis]")
    assert installs["mcp_agents.py"] == ("[mcp]",)
    assert installs["pydantic_ai_agents.py"] == ("[pydantic-ai]",)
    assert installs["openai_agents_handoff.py"] == ("[openai-agents]",)


def test_the_readme_runs_scripts_with_the_venv_python() -> None:
    text = README.read_text()
    assert not re.findall(r"(?<![/\w])python3? (?:examples|benchmarks)/", text)  # `python x.py` fails outside the venv
    assert "`.venv/bin/python examples/NAME.py`" in text  # how the examples table says to run each


def test_the_readme_quickstart_is_the_example() -> None:
    [block] = re.findall(r"## Quickstart in Python\n.*?```python\n(.*?)```", README.read_text(), re.DOTALL)
    program = (EXAMPLES / "quickstart.py").read_text()
    assert program.endswith(block) and program.index(block) > program.index("from __future__ import annotations")


def test_the_guard_bites_an_example_run_without_its_extra(tmp_path: Path) -> None:
    result = run_installed("tracing_console.py", cwd=tmp_path, extras=())
    assert result.returncode != 0
    assert "No module named 'opentelemetry.sdk" in result.stderr
    assert "not installed by: pip install -e . -e backends/postgres" in result.stderr


def test_tracing_console(tmp_path: Path) -> None:
    env = {key: "" for key in os.environ if key.startswith("OTEL_")}
    out = run_example("tracing_console.py", cwd=tmp_path, **env)
    assert len(re.findall(r" span [0-9a-f]{16}  parent ", out)) == 9  # the step, 4 sends, 4 handler runs
    assert len(re.findall(r"http://localhost:16686/trace/\w+\?uiFind=\w+", out)) == 4


def stored(database_url: str, query: AuditQuery | None = None) -> Counter[tuple[str, str, MessageStatus]]:
    async def read() -> Counter[tuple[str, str, MessageStatus]]:
        async with MessageAuditTrail(database_url) as trail:
            records = await trail.query_messages(query or AuditQuery(limit=1000))
            return Counter((record.from_agent, record.to_agent, record.status) for record in records)

    return asyncio.run(read())


def test_quickstart(tmp_path: Path) -> None:
    out = run_example("quickstart.py", cwd=tmp_path)
    assert out.splitlines()[:4] == [
        "planner got {'answer': 42}",
        "status: DELIVERED",
        "  planner -> worker  QUERY  DELIVERED",
        "  worker -> planner  RESPONSE  DELIVERED",
    ]
    assert stored(f"sqlite+aiosqlite:///{tmp_path / 'quickstart.db'}") == {
        ("planner", "worker", MessageStatus.DELIVERED): 1,
        ("worker", "planner", MessageStatus.DELIVERED): 1,
    }
    assert not (tmp_path / "audit.db").exists()  # the demo's database is left alone
    again = run_example("quickstart.py", cwd=tmp_path)
    assert again.count(" -> ") == 2  # only this run's conversation
    assert sum(stored(f"sqlite+aiosqlite:///{tmp_path / 'quickstart.db'}").values()) == 4


def test_custom_bus_through_the_hook_contract(database_url: str, tmp_path: Path) -> None:
    out = run_example("custom_bus.py", database_url, cwd=tmp_path)
    assert "shop got {'price': 9.5}" in out
    assert stored(database_url) == {
        ("shop", "pricing", MessageStatus.DELIVERED): 1,
        ("shop", "pricing", MessageStatus.FAILED): 1,
        ("pricing", "shop", MessageStatus.DELIVERED): 1,
        ("shop", "billing", MessageStatus.FAILED): 1,
    }
    assert "FAILED    LookupError: no price for SKU 'unknown'" in out and "no such queue" in out


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
    run_example("swap_backend.py", cwd=tmp_path, AUDIT_DATABASE_URL=url)
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
    assert "None" not in out and all(line == line.rstrip() for line in out.splitlines())
