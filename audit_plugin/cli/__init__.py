"""The ``audit-plugin`` command line: look at an audit trail without writing SQL or Python.

Every subcommand takes ``--database-url`` (or ``AUDIT_DATABASE_URL``, default
``sqlite+aiosqlite:///audit.db``), prints tables on a terminal and
``--json`` / ``--csv`` for machines. Failures are one line on stderr and a
non-zero exit code (see :mod:`audit_plugin.cli.runner`).
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from audit_plugin.cli import (
    access_log,
    agent,
    conversation,
    demo,
    export,
    ingest,
    integrity,
    proofs,
    query,
    retention,
    serve,
    show,
    stats,
    tail,
)
from audit_plugin.cli.options import GLOBAL_OPTIONS
from audit_plugin.cli.runner import EXIT_USAGE, exit_on_error, fail

app = typer.Typer(
    name="audit-plugin",
    help="Look at a multi-agent message audit trail: who told whom what, when, and what failed.",
    epilog="Run 'audit-plugin COMMAND -h' for a command's options; --database-url and --json go before or after "
    "COMMAND. Docs: docs/cli.md",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click help: wraps at words, no type placeholders, same on a pipe
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _print_version(value: bool) -> None:
    if value:
        print(f"audit-plugin {importlib.metadata.version('audit-plugin')}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url", metavar="URL", help="The store, for any command (as COMMAND's own --database-url)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output, for any command that has --json.")] = False,
) -> None:
    """Look at a multi-agent message audit trail: who told whom what, when, and what failed."""
    given = {"database_url": database_url, "as_json": as_json or None}
    command = ctx.command.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    if command is not None:
        takes = {parameter.name for parameter in command.params}
        for name, flag in GLOBAL_OPTIONS.items():
            if given[name] is not None and name not in takes:
                fail(f"{ctx.invoked_subcommand} takes no {flag}", EXIT_USAGE)
    ctx.obj = given


COMMANDS = {
    demo.demo: "Run an audited multi-agent conversation and show it.",
    query.query: "Records matching every filter given, newest first.",
    conversation.conversation: "A conversation as a reply tree.",
    show.show: "One record: fields, lifecycle, replies, trace link (alias: message).",
    agent.agent: "An agent's recent messages and its numbers.",
    stats.stats: "Totals, latency percentiles, volume over time.",
    retention.retention: "Delete records past a retention policy.",
    export.export: "Every matching record as JSON Lines or CSV.",
    tail.tail: "Follow new records and status changes.",
    integrity.verify: "Check the hash chain (exit 4 if tampered with).",
    integrity.erase: "Crypto-shred a data subject's payloads.",
    proofs.prove: "Write a proof bundle for one message.",
    proofs.check_proof: "Check a proof bundle, no database (exit 4 if altered).",
    proofs.checkpoints: "Sign, list and check the Merkle tree checkpoints.",
    serve.serve: "Serve the read-only web view of the trail.",
    ingest.ingest: "Store what producers published to a JetStream stream.",
    access_log.access_log: "Who read the trail: the recorded reads.",
}
"""Each subcommand and its one-line summary in ``audit-plugin -h``."""


def command_name(command: object) -> str:
    """The subcommand a function is registered as: its name, with ``-`` for ``_`` (``check_proof``: ``check-proof``)."""
    return getattr(command, "__name__", "").replace("_", "-")


for command, summary in COMMANDS.items():
    app.command(command_name(command), short_help=summary)(command)
app.command("message", hidden=True, help=show.show.__doc__)(show.show)  # `show` by the name the viewer uses


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``audit-plugin`` script; exits with the subcommand's code."""
    command = typer.main.get_command(app)
    try:
        code = command.main(list(argv) if argv is not None else None, prog_name="audit-plugin", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:  # every failure becomes one line, never a traceback
        if _is_usage_error(exc):
            message = exc.format_message()  # type: ignore[attr-defined]
            if not message or type(exc).__name__ == "NoArgsIsHelpError":  # no subcommand: show the help
                print(message, end="\n" if message else "")
                raise SystemExit(getattr(exc, "exit_code", EXIT_USAGE)) from None
            fail(message, getattr(exc, "exit_code", EXIT_USAGE))
        exit_on_error(exc)
    sys.exit(code if isinstance(code, int) else 0)


def _is_usage_error(exc: BaseException) -> bool:
    """Typer's (and Click's) own errors: unknown option, bad value, missing argument..."""
    return callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)
