"""examples/my_redactor: a third-party extension distribution, installed for real and picked up by entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "my_redactor"

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, sys
    from audit_plugin import Message, MessageAuditTrail, MessageType
    from audit_plugin.storage.registry import extension_manager

    async def main(url):
        assert "my_redactor" in dict(extension_manager().list_name_plugin()), "entry point not loaded"
        async with MessageAuditTrail(url) as trail:
            message = Message("support", "billing", MessageType.COMMAND,
                              {"customer": {"email": "ada@example.org"}, "notes": ["cc bob@corp.io"], "n": 1})
            await trail.log_message(message)
            print(json.dumps((await trail.get_message(message.message_id)).payload))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_installed_extension_redacts_without_any_code_change(tmp_path: Path, database_url: str) -> None:
    target = tmp_path / "site"
    source = shutil.copytree(EXAMPLE, tmp_path / "src")  # building in place would leave build/ in the repository
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    assert (target / "my_redactor" / "__init__.py").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, database_url], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"customer": {"email": "***@example.org"}, "notes": ["cc ***@corp.io"], "n": 1}

    # Without the extension installed, the same program stores the address as sent.
    plain = subprocess.run(
        [sys.executable, "-c", PROGRAM.replace('assert "my_redactor"', 'assert "my_redactor" not'), database_url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode == 0, plain.stderr
    assert "ada@example.org" in plain.stdout
