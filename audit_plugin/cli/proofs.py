"""``audit-plugin prove``, ``check-proof`` and ``checkpoints``: portable proofs that a record is in the log.

``prove`` writes a proof bundle for one message (see
:mod:`audit_plugin.integrity.proof_bundle`); ``check-proof`` checks one with
no database (exit 0 valid, 4 anything altered, 2 a file or key it cannot
read); ``checkpoints`` signs one on demand and lists the stored signed
checkpoints, each checked for consistency with the one before it (exit 4 if
one is not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from audit_plugin.cli.integrity import EXIT_TAMPERED, _pem_key, _read
from audit_plugin.cli.options import AsJson, CliReader, DatabaseUrl, reading_as
from audit_plugin.cli.output import console, count_text, print_json
from audit_plugin.cli.runner import EXIT_EMPTY, EXIT_USAGE, CliError, open_trail, run
from audit_plugin.cli.values import whole_number
from audit_plugin.trail import DEFAULT_DATABASE_URL, MessageAuditTrail

AMBIGUOUS_SHOWN = 5

SigningKey = Annotated[
    Path | None,
    typer.Option("--signing-key", metavar="FILE", help="Ed25519 private key (PEM) to sign a fresh checkpoint with."),
]
Origin = Annotated[
    str | None,
    typer.Option(
        "--origin", metavar="NAME", help="The log's name in a checkpoint signed now (e.g. example.com/audit)."
    ),
]
PublicKey = Annotated[
    Path,
    typer.Option(
        "--public-key", metavar="FILE", help="The log's Ed25519 public key: a PEM file, or a file with its vkey."
    ),
]


def _verifier(path: Path) -> Any:
    from audit_plugin.integrity.note import NoteError
    from audit_plugin.integrity.proof_bundle import load_verifier

    try:
        return load_verifier(_read(path, "key file"))
    except (NoteError, ValueError) as exc:
        raise CliError(f"{path} is not an Ed25519 public key (PEM) or a vkey: {exc}", EXIT_USAGE) from None


async def resolve_message(trail: MessageAuditTrail, fragment: str) -> str:
    """The message id a fragment names: the id itself, a unique prefix, or its end (the short id tables show)."""
    if await trail.get_message(fragment) is not None:
        return fragment
    found = (await trail.find_ids(fragment, limit=AMBIGUOUS_SHOWN + 1)).message_ids
    if not found:
        raise CliError(f"no message with id {fragment!r} (or starting or ending with it)", EXIT_EMPTY)
    if len(found) > 1:
        shown = ", ".join(found[:AMBIGUOUS_SHOWN]) + (", ..." if len(found) > AMBIGUOUS_SHOWN else "")
        raise CliError(f"{fragment!r} is ambiguous: it matches {shown}; type more of the id", EXIT_USAGE)
    return found[0]


@reading_as("prove")
def prove(
    reader: CliReader,
    message: Annotated[str, typer.Argument(metavar="ID", show_default=False, hidden=True)],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", metavar="FILE", help="Write the bundle here (default: stdout).")
    ] = None,
    signing_key: SigningKey = None,
    origin: Origin = None,
    withhold_record: Annotated[
        bool,
        typer.Option(
            "--withhold-record", help="Leave the record's columns and payload out: prove its entries and digest only."
        ),
    ] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Write a self-contained proof that a message's record and lifecycle are in the log, unaltered.

    ID is the message id, a unique prefix, or the short id tables print. The
    bundle holds the record as stored, its lifecycle entries, their inclusion
    proofs and the newest signed checkpoint covering them; with --signing-key a
    fresh checkpoint is signed (and stored) when none covers them all yet.
    Check it anywhere with `audit-plugin check-proof FILE --public-key KEY`.
    """
    reader.require(reader.role.may_prove, "prove a record")
    signer = _pem_key(signing_key, private=True) if signing_key is not None else None

    async def write() -> None:
        from audit_plugin.storage.tree_log import ProofError

        async with open_trail(database_url, reader=reader) as trail:
            message_id = await resolve_message(trail, message)
            try:
                bundle = await trail.prove(
                    message_id,
                    signing_key=signer,
                    origin=origin,
                    include_record=not withhold_record,
                    actor=reader.reading,
                )
            except ProofError as exc:
                raise CliError(str(exc), EXIT_EMPTY) from None
        data = bundle.to_json()
        if output is None:
            typer.echo(data.decode(), nl=False)
            return
        try:
            output.write_bytes(data)
        except OSError as exc:
            raise CliError(f"cannot write {output}: {exc.strerror or exc}", EXIT_USAGE) from None
        left = (
            f"; {count_text(bundle.uncovered, 'later entry', 'later entries')} not covered yet"
            if bundle.uncovered
            else ""
        )
        console.print(
            f"wrote a proof of message {message_id} ({count_text(len(bundle.entries), 'entry', 'entries')}, "
            f"checkpoint #{bundle.checkpoint.id} of {bundle.checkpoint.origin!r}{left}) to {output}",
            soft_wrap=True,
        )

    run(write())


def check_proof(
    bundle: Annotated[Path, typer.Argument(metavar="FILE", show_default=False, hidden=True)],
    public_key: PublicKey,
    tsa_ca: Annotated[
        list[Path] | None,
        typer.Option("--tsa-ca", metavar="FILE", help="CA certificate (PEM) a time-stamp token must chain to."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Check a proof bundle without any database: exit 0 if valid, 4 if anything in it was altered.

    Checks the checkpoint's signature by the given key, the tree heads, the
    record's and each entry's digests and hashes, each inclusion proof and,
    if the bundle has one, its RFC 3161 time-stamp token (against --tsa-ca).
    """
    from audit_plugin.integrity.proof_bundle import MAX_BUNDLE_BYTES, check_bundle

    verifier = _verifier(public_key)
    roots = [_certificate(path) for path in tsa_ca or []]
    try:
        with bundle.open("rb") as handle:
            data = handle.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read bundle {bundle}: {exc.strerror or exc}", EXIT_USAGE) from None
    result = check_bundle(data, verifier, tsa_roots=roots)
    if as_json:
        print_json(
            {
                "ok": result.ok,
                "reason": result.reason,
                "message_id": result.message_id,
                "origin": result.origin,
                "tree_size": result.tree_size,
                "record_included": result.record_included,
                "entries": [
                    {"chain_id": e.chain_id, "sequence": e.sequence, "kind": e.kind, "status": e.status, "at": e.at}
                    for e in result.entries
                ],
                "timestamp": result.timestamp.isoformat() if result.timestamp else None,
                "timestamp_verified": result.timestamp_verified,
            }
        )
    elif result.ok:
        console.print(str(result), soft_wrap=True)
    if not result.ok:
        raise CliError(f"proof INVALID: {result.reason}", EXIT_TAMPERED)


def _certificate(path: Path) -> Any:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(_read(path, "certificate"))
    except ValueError as exc:
        raise CliError(f"{path} is not a PEM certificate: {exc}", EXIT_USAGE) from None


def checkpoints(
    signing_key: Annotated[
        Path | None,
        typer.Option(
            "--signing-key", metavar="FILE", help="Sign and store a checkpoint now (Ed25519 private key, PEM)."
        ),
    ] = None,
    origin: Origin = None,
    tsa_url: Annotated[
        str | None,
        typer.Option("--tsa-url", metavar="URL", help="Time-stamp the new checkpoint at this RFC 3161 authority."),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", metavar="FILE", help="Also check each signature (PEM public key or vkey)."),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", metavar="N", parser=whole_number("--limit", minimum=1), help="Newest N shown."),
    ] = 20,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
) -> None:
    """List the stored signed checkpoints, each checked for consistency with the one before (exit 4 if not).

    With --signing-key a checkpoint of every chain's Merkle tree is signed and
    stored first (add --tsa-url to time-stamp it).
    """
    if tsa_url is not None and signing_key is None:
        raise CliError("--tsa-url time-stamps a new checkpoint: pass --signing-key too", EXIT_USAGE)
    signer = _pem_key(signing_key, private=True) if signing_key is not None else None
    verifier = _verifier(public_key) if public_key is not None else None

    async def show() -> None:
        async with open_trail(database_url) as trail:
            if signer is not None:
                signed = await trail.sign_checkpoint(signer, origin=origin, tsa_url=tsa_url)
                if not as_json:
                    stamped = " (time-stamped)" if signed.timestamp else ""
                    console.print(f"signed and stored checkpoint #{signed.id}{stamped}")
            checks = await trail.check_checkpoints(verifier)
        if not checks:
            raise CliError("no signed checkpoints stored yet (sign one with --signing-key)", EXIT_EMPTY)
        shown = checks[-limit:]
        if as_json:
            print_json(
                [{**check.checkpoint.to_dict(), "id": check.checkpoint.id, "problem": check.problem} for check in shown]
            )
        else:
            console.print(_table(shown, len(checks)))
        broken = [check for check in checks if check.problem]
        if broken:
            first = broken[0]
            raise CliError(f"checkpoint #{first.checkpoint.id} is not sound: {first.problem}", EXIT_TAMPERED)

    run(show())


def _table(checks: list[Any], total: int) -> Table:
    table = Table(title=f"Signed checkpoints (newest {len(checks)} of {total})", title_justify="left")
    for header in ("#", "taken (UTC)", "origin", "chains: entries", "root", "TSA", "check"):
        table.add_column(header, overflow="fold", min_width=len(header))
    for check in reversed(checks):
        checkpoint = check.checkpoint
        body = checkpoint.body
        table.add_row(
            str(checkpoint.id),
            checkpoint.at.strftime("%Y-%m-%d %H:%M:%S"),
            body.origin,
            ", ".join(f"{head.chain_id}: {head.size:,}" for head in checkpoint.heads) or "(empty)",
            body.root.hex()[:12] + "…",
            "yes" if checkpoint.timestamp else "-",
            "consistent" if check.problem is None else f"BROKEN: {check.problem}",
        )
    return table
