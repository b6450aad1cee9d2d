"""``audit-plugin verify`` and ``audit-plugin erase``: prove the trail is intact; crypto-shred a data subject.

``verify`` exits 0 when the chain is intact (and matches the checkpoint, if
one is given), 4 when it is broken or the checkpoint's signature is wrong.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from audit_plugin.cli.options import AsJson, CliReader, DatabaseUrl, reading_as
from audit_plugin.cli.output import console, count_text, print_json
from audit_plugin.cli.runner import EXIT_EMPTY, EXIT_USAGE, CliError, open_trail, run
from audit_plugin.integrity.checkpoint import Checkpoint
from audit_plugin.integrity.ledger import DEFAULT_CHAIN_ID
from audit_plugin.integrity.verify import ShardsReport, VerifyReport
from audit_plugin.trail import DEFAULT_DATABASE_URL

EXIT_TAMPERED = 4
"""``verify`` found a broken link, a missing tail, a rewrite, or a bad checkpoint signature."""

ChainId = Annotated[
    str, typer.Option("--chain-id", metavar="ID", help="The hash chain to check (one per database is usual).")
]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}", EXIT_USAGE) from None


def _pem_key(path: Path, *, private: bool) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    data = _read(path, "key file")
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except ValueError as exc:
        raise CliError(f"{path} is not a PEM key: {exc}", EXIT_USAGE) from None
    expected = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, expected):
        raise CliError(f"{path} is not an Ed25519 {'private' if private else 'public'} key", EXIT_USAGE)
    return key


@reading_as("verify")
def verify(
    reader: CliReader,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", metavar="FILE", help="A checkpoint JSON file to check the chain against."),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key", metavar="FILE", help="Ed25519 public key (PEM) the checkpoint must be signed with."
        ),
    ] = None,
    save_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--save-checkpoint", metavar="FILE", help="After a clean run, write the head here as a checkpoint."
        ),
    ] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option("--signing-key", metavar="FILE", help="Ed25519 private key (PEM) to sign the saved checkpoint."),
    ] = None,
    chain_id: ChainId = DEFAULT_CHAIN_ID,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
) -> None:
    """Walk the hash chain and report the first broken link, or OK with the count (exit 4 if broken).

    A bare chain cannot show a cut-off tail or a wholesale rewrite: pass a
    --checkpoint saved earlier (kept outside the database) to catch those.
    A trail kept in shards is walked shard by shard (concurrently), reported
    per shard, and checkpointed per shard (one line each in the file).
    """
    reader.require(reader.role.may_prove, "verify the chain")
    against = _read_checkpoints(checkpoint) if checkpoint is not None else None
    if public_key is not None and against is None:
        raise CliError("--public-key checks a checkpoint's signature: pass --checkpoint too", EXIT_USAGE)
    if signing_key is not None and save_checkpoint is None:
        raise CliError("--signing-key signs a saved checkpoint: pass --save-checkpoint too", EXIT_USAGE)
    verifier = _pem_key(public_key, private=False) if public_key is not None else None
    signer = _pem_key(signing_key, private=True) if signing_key is not None else None

    async def check() -> None:
        if against is not None and verifier is not None and not all(c.signature_valid(verifier) for c in against):
            outcome: dict[str, Any] = {"ok": False, "reason": "the checkpoint's signature is not valid for that key"}
        else:
            async with open_trail(database_url, chain_id=chain_id, reader=reader) as trail:
                started = time.perf_counter()
                report = await trail.verify(against=against, actor=reader.reading)
                seconds = time.perf_counter() - started
            outcome = {
                **_as_dict(report),
                "seconds": round(seconds, 3),
                "entries_per_second": round(report.entries / seconds) if seconds > 0 else None,
            }
            if report.ok and save_checkpoint is not None:
                saved = report.checkpoints(signer) if isinstance(report, ShardsReport) else [report.checkpoint(signer)]
                save_checkpoint.write_text("".join(each.to_json() + "\n" for each in saved))
                outcome["saved_checkpoint"] = str(save_checkpoint)
        if as_json:
            print_json(outcome)
        elif outcome["ok"]:
            shards = f", {len(outcome['shards'])} shards" if "shards" in outcome else ""
            span = "" if shards else f" (sequence {outcome['first_sequence']}..{outcome['last_sequence']})"
            console.print(
                f"OK: chain {outcome['chain_id']!r}{shards}, {outcome['entries']:,} entries{span}"
                + (", matches the checkpoint" if outcome["checkpoint_checked"] else "")
                + f", {outcome['entries_per_second'] or 0:,} entries/s",
                soft_wrap=True,
            )
            if "saved_checkpoint" in outcome:
                console.print(f"checkpoint saved to {outcome['saved_checkpoint']}")
        if outcome.get("quarantined") and not as_json:
            console.print(
                f"{count_text(outcome['quarantined'], 'stream message')} in quarantine "
                "(refused by an ingester: see message_audit_quarantine)",
                soft_wrap=True,
            )
        if not outcome["ok"]:
            broken = [shard for shard in outcome.get("shards", [outcome]) if not shard.get("ok", False)]
            lines = [_broken_line(shard, "shards" in outcome) for shard in broken]
            raise CliError("\n".join(lines), EXIT_TAMPERED)

    run(check())


def _read_checkpoints(path: Path) -> list[Checkpoint]:
    """The checkpoints in ``path``: one JSON document per line (one line for a single chain)."""
    text = _read(path, "checkpoint").decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()] or [text]
    try:
        return [Checkpoint.from_json(line) for line in lines]
    except ValueError as exc:
        raise CliError(f"{path}: {exc}", EXIT_USAGE) from None


def _as_dict(report: VerifyReport | ShardsReport) -> dict[str, Any]:
    if isinstance(report, VerifyReport):
        return dataclasses.asdict(report)
    return {
        "ok": report.ok,
        "chain_id": report.chain_id,
        "entries": report.entries,
        "checkpoint_checked": report.checkpoint_checked,
        "quarantined": report.quarantined,
        "shards": [dataclasses.asdict(shard) for shard in report.shards],
    }


def _broken_line(report: dict[str, Any], sharded: bool) -> str:
    where = report.get("broken_sequence")
    about = f" (message {report['message_id']})" if report.get("message_id") else ""
    location = f"entry {where}" if where is not None else "outside the chain"
    chain = f"chain {report['chain_id']!r}: " if sharded else ""
    return f"{chain}BROKEN at {location}{about}: {report['reason']}"


def erase(
    subject_id: Annotated[
        str,
        typer.Argument(metavar="SUBJECT", show_default=False, hidden=True),
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: erasure cannot be undone.")] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
) -> None:
    """Crypto-shred a data subject: destroy its data keys so its encrypted payloads can never be read again.

    SUBJECT is the data subject (the audit-subject header, else the sender).
    Who, when and status stay; the hash chain still verifies. Needs --yes.
    """
    if not yes:
        raise CliError(f"erasing {subject_id!r} cannot be undone; pass --yes to confirm", EXIT_USAGE)

    async def shred() -> None:
        async with open_trail(database_url) as trail:
            destroyed = await trail.erase_subject(subject_id)
        if as_json:
            print_json({"subject_id": subject_id, "keys_destroyed": destroyed})
        if not destroyed:
            raise CliError(f"no live data keys for subject {subject_id!r} (unknown, or erased already)", EXIT_EMPTY)
        if not as_json:
            console.print(f"erased subject {subject_id!r}: {count_text(destroyed, 'data key')} destroyed")

    run(shred())
