"""``audit-plugin prove``, ``check-proof`` and ``checkpoints`` as subprocesses; hostile bundles."""

from __future__ import annotations

import asyncio
import functools
import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from audit_plugin.integrity.proof_bundle import check_bundle
from tests.cli_support import assert_one_line_error, run_cli, seed_sample
from tests.test_cli_integrity import write_keys


def test_prove_then_check_without_the_database(database_url: str, tmp_path: Path) -> None:
    seed_sample(database_url)
    private, public = write_keys(tmp_path)
    bundle = tmp_path / "cmd.proof.json"
    missing = run_cli("prove", "cmd", "-o", str(bundle), database_url=database_url)
    assert_one_line_error(missing, 1, "no stored checkpoint covers")
    result = run_cli(
        "prove",
        "cmd",
        "-o",
        str(bundle),
        "--signing-key",
        str(private),
        "--origin",
        "ex.test/a",
        database_url=database_url,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote a proof of message cmd (2 entries, checkpoint #1 of 'ex.test/a')" in result.stdout
    checked = run_cli("check-proof", str(bundle), "--public-key", str(public), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("OK: message cmd: the record and 2 lifecycle entries")
    report = json.loads(run_cli("check-proof", str(bundle), "--public-key", str(public), "--json").stdout)
    assert report["ok"] and [e["status"] for e in report["entries"]] == ["PENDING", "FAILED"]

    document = json.loads(bundle.read_text())
    document["entries"][-1]["status"] = "DELIVERED"
    bundle.write_text(json.dumps(document))
    assert_one_line_error(run_cli("check-proof", str(bundle), "--public-key", str(public)), 4, "INVALID", "entry 9")

    (tmp_path / "other").mkdir()
    _, stranger = write_keys(tmp_path / "other")
    assert_one_line_error(run_cli("check-proof", str(tmp_path / "nope"), "--public-key", str(public)), 2, "cannot read")
    assert_one_line_error(run_cli("check-proof", str(bundle), "--public-key", str(bundle)), 2, "not an Ed25519")
    result = run_cli("prove", "cm", database_url=database_url)  # stdout, a prefix of "cmd"
    assert result.returncode == 0 and json.loads(result.stdout)["message_id"] == "cmd"
    stdout_bundle = tmp_path / "stdout.json"
    stdout_bundle.write_text(result.stdout)
    assert_one_line_error(run_cli("check-proof", str(stdout_bundle), "--public-key", str(stranger)), 4, "signature")
    assert_one_line_error(run_cli("prove", "zzz-none", database_url=database_url), 1, "no message")


def test_checkpoints_lists_and_checks(database_url: str, tmp_path: Path) -> None:
    seed_sample(database_url)
    private, public = write_keys(tmp_path)
    assert_one_line_error(run_cli("checkpoints", database_url=database_url), 1, "no signed checkpoints")
    for _ in range(2):
        result = run_cli("checkpoints", "--signing-key", str(private), database_url=database_url)
        assert result.returncode == 0, result.stderr
    result = run_cli("checkpoints", "--public-key", str(public), "--json", database_url=database_url)
    listed = json.loads(result.stdout)
    assert [c["id"] for c in listed] == [1, 2] and all(c["problem"] is None for c in listed)
    assert listed[0]["heads"][0]["size"] == 11 and listed[0]["note"].startswith("audit-plugin/trail\n11\n")
    table = run_cli("checkpoints", database_url=database_url)
    assert "consistent" in table.stdout and "default: 11" in table.stdout
    assert_one_line_error(run_cli("checkpoints", "--tsa-url", "http://127.0.0.1:9/", database_url=database_url), 2)


def _valid_bundle(tmp_path: Path, database_url: str) -> tuple[bytes, object]:
    from cryptography.hazmat.primitives import serialization

    seed_sample(database_url)
    private, public = write_keys(tmp_path)
    bundle = tmp_path / "b.json"
    assert (
        run_cli("prove", "cmd", "-o", str(bundle), "--signing-key", str(private), database_url=database_url).returncode
        == 0
    )
    return bundle.read_bytes(), serialization.load_pem_public_key(public.read_bytes())


def test_hostile_bundles_give_a_reason_never_a_traceback(database_url: str, tmp_path: Path) -> None:
    data, key = _valid_bundle(tmp_path, database_url)
    assert check_bundle(data, key).ok
    document = json.loads(data)
    hostile = [
        data[: len(data) // 2],
        b"",
        b"[]",
        b'"text"',
        b"{" * 5000,
        json.dumps({**document, "version": 2}).encode(),
        json.dumps({**document, "entries": "x"}).encode(),
        json.dumps({**document, "entries": [None]}).encode(),
        json.dumps({**document, "chains": [{**document["chains"][0], "size": 10**40}]}).encode(),
        json.dumps({**document, "chains": [{**document["chains"][0], "size": -1}]}).encode(),
        json.dumps({**document, "chains": [{**document["chains"][0], "size": 1.5}]}).encode(),
        json.dumps({**document, "checkpoint": {"note": "x\u0000y\n\n"}}).encode(),
        json.dumps({**document, "record": {**document["record"], "payload_json": "{\u0000}"}}).encode(),
        json.dumps({**document, "entries": [{**document["entries"][0], "retry_count": 10**30}]}).encode(),
        json.dumps({**document, "entries": [{**document["entries"][0], "proof": ["00"] * 100}]}).encode(),
        json.dumps({**document, "entries": [{**document["entries"][0], "hash_version": 9}]}).encode(),
        json.dumps({**document, "checkpoint": {**document["checkpoint"], "timestamp": "%%%"}}).encode(),
        data.replace(b'"message_id": "cmd"', b'"message_id": 7', 1),
    ]
    for item in hostile:
        result = check_bundle(item, key)
        assert not result.ok and result.reason and "\n" not in result.reason, item[:80]
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\x00\xff" * 10)
    assert_one_line_error(run_cli("check-proof", str(bad), "--public-key", str(tmp_path / "verify.pem")), 4, "INVALID")


@functools.cache
def made_bundle() -> tuple[bytes, object]:
    """One valid bundle, made once (in process, on a temporary SQLite file) for the property test."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit_plugin import Message, MessageAuditTrail, MessageStatus, MessageType

    key = Ed25519PrivateKey.generate()

    async def make(folder: str) -> bytes:
        async with MessageAuditTrail(f"sqlite+aiosqlite:///{folder}/audit.db") as trail:
            message = Message("a", "b", MessageType.QUERY, {"q": [1, 2.5, "ü"]}, correlation_id="c")
            await trail.log_message(message)
            await trail.update_message_status(message.message_id, MessageStatus.DELIVERED)
            return (await trail.prove(message.message_id, signing_key=key)).to_json()

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(make(folder)), key.public_key()


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_any_changed_byte_of_a_bundle_is_refused_or_harmless(data: st.DataObject) -> None:
    bundle, key = made_bundle()
    position = data.draw(st.integers(0, len(bundle) - 1))
    changed = bytearray(bundle)
    changed[position] = data.draw(st.integers(0, 255).filter(lambda b: b != bundle[position]))
    result = check_bundle(bytes(changed), key)
    assert result.ok or (result.reason and "\n" not in result.reason)
    if result.ok:  # only what nothing covers may change: JSON layout, or the checkpoint's unsigned "at"
        original, altered = json.loads(bundle), json.loads(bytes(changed))
        original["checkpoint"].pop("at")
        altered["checkpoint"].pop("at")
        assert altered == original
