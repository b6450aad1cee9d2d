"""``audit-plugin verify`` and ``audit-plugin erase`` as subprocesses on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from audit_plugin import LocalKeyFileProvider, Message, MessageAuditTrail, MessageType
from audit_plugin.storage.integrity_schema import events
from tests.cli_support import assert_one_line_error, run_cli, seed_sample


def tamper(database_url: str, sequence: int) -> None:
    async def edit() -> None:
        async with MessageAuditTrail(database_url) as trail, trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(update(events).where(events.c.sequence == sequence).values(status="DELIVERED"))

    asyncio.run(edit())


def write_keys(folder: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private = folder / "signing.pem"
    public = folder / "verify.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def test_verify_reports_ok_then_the_broken_entry(database_url: str) -> None:
    seed_sample(database_url)
    result = run_cli("verify", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: chain 'default', 11 entries (sequence 1..11)")
    report = json.loads(run_cli("verify", "--json", database_url=database_url).stdout)
    assert report["ok"] and report["entries"] == 11 and report["entries_per_second"] > 0

    tamper(database_url, 9)  # the FAILED command now claims DELIVERED
    result = run_cli("verify", database_url=database_url)
    assert_one_line_error(result, 4, "BROKEN at entry 9 (message cmd)", "lifecycle event altered")


def test_signed_checkpoint_round_trip(database_url: str, tmp_path: Path) -> None:
    seed_sample(database_url)
    private, public = write_keys(tmp_path)
    saved = tmp_path / "head.json"
    result = run_cli(
        "verify", "--save-checkpoint", str(saved), "--signing-key", str(private), database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(saved.read_text())["sequence"] == 11

    result = run_cli("verify", "--checkpoint", str(saved), "--public-key", str(public), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "matches the checkpoint" in result.stdout

    (tmp_path / "other").mkdir()
    _, stranger = write_keys(tmp_path / "other")
    result = run_cli("verify", "--checkpoint", str(saved), "--public-key", str(stranger), database_url=database_url)
    assert_one_line_error(result, 4, "signature is not valid")

    assert_one_line_error(run_cli("verify", "--public-key", str(public), database_url=database_url), 2, "--checkpoint")
    missing = run_cli("verify", "--checkpoint", str(tmp_path / "nope.json"), database_url=database_url)
    assert_one_line_error(missing, 2, "cannot read checkpoint")


def test_erase_needs_confirmation_and_shreds(database_url: str, tmp_path: Path) -> None:
    provider = LocalKeyFileProvider(tmp_path / "master.key")

    async def seed() -> str:
        async with MessageAuditTrail(database_url, key_provider=provider) as trail:
            message = Message("alice", "bob", MessageType.EVENT, {"diary": "private"})
            await trail.log_message(message)
            return message.message_id

    message_id = asyncio.run(seed())
    assert_one_line_error(run_cli("erase", "alice", database_url=database_url), 2, "--yes")
    result = run_cli("erase", "alice", "--yes", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "1 data key destroyed" in result.stdout
    assert_one_line_error(run_cli("erase", "alice", "--yes", database_url=database_url), 1, "no live data keys")

    async def read() -> dict:
        async with MessageAuditTrail(database_url, key_provider=provider) as trail:
            record = await trail.get_message(message_id)
            assert (await trail.verify()).ok
            return record.payload  # type: ignore[union-attr]

    assert asyncio.run(read())["$audit"] == "erased"
