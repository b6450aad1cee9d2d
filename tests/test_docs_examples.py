"""The code the docs show runs, and does what the docs say."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

import pytest

from audit_plugin import Message, MessageAuditTrail, MessageType
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.storage.registry import extension_manager

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)


async def test_the_worked_integration_example(database_url: str) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(python_blocks("writing-an-integration.md")[0], "writing-an-integration.md", "exec"), namespace)
    assert await namespace["main"](database_url) == ["hello: DELIVERED", "boom: FAILED"]


async def test_the_sink_example_sees_each_entry(trail: MessageAuditTrail, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(python_blocks("writing-an-integration.md")[1], "writing-an-integration.md", "exec"), {"trail": trail})
    message = Message("a", "b", MessageType.EVENT)
    await trail.log_message(message)
    [line] = capsys.readouterr().out.splitlines()
    sequence, kind, message_id, status, entry_hash = line.split()
    assert (kind, message_id, status) == ("record", message.message_id, "PENDING")
    assert int(sequence) >= 1 and len(entry_hash) == 64


async def test_the_worked_backend_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = types.ModuleType("audit_plugin_tenants.plugin")
    exec(compile(python_blocks("backends.md")[1], "backends.md", "exec"), plugin.__dict__)
    manager = extension_manager()
    manager.register(plugin, name="tenant")
    monkeypatch.setenv("AUDIT_TENANT_ROOT", str(tmp_path))
    async with MessageAuditTrail("tenant://acme", plugin_manager=manager) as trail:
        await trail.log_message(Message("a", "b", MessageType.EVENT))
        assert (await trail.verify()).ok
    assert (tmp_path / "acme.db").is_file()
    with pytest.raises(InvalidFieldError, match="tenant name"):
        MessageAuditTrail("tenant://../../etc/passwd", plugin_manager=manager)


async def test_the_export_sink_example(database_url: str, tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(python_blocks("sinks.md")[0], "sinks.md", "exec"), namespace)

    async def application(trail: MessageAuditTrail) -> None:
        await trail.log_message(Message("a", "b", MessageType.EVENT, {"n": 1}))

    out = tmp_path / "events.jsonl"
    stats = await namespace["run_exported"](database_url, f"jsonl://{out}", application)
    assert (stats.sent, stats.dropped, stats.failed) == (1, 0, 0)
    assert '"event":"record"' in out.read_text()
