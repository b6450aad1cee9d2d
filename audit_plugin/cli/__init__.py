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

from audit_plugin.cli import agent, conversation, demo, export, ingest, integrity, query, retention, serve, stats, tail
from audit_plugin.cli.runner import EXIT_USAGE, exit_on_error, fail

app = typer.Typer(
    name="audit-plugin",
    help="Look at a multi-agent message audit trail: who told whom what, when, and what failed.",
    epilog="Run 'audit-plugin COMMAND -h' for a command's options. Docs: docs/cli.md",
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
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Look at a multi-agent message audit trail: who told whom what, when, and what failed."""


COMMANDS = {
    demo.demo: "Run an audited multi-agent conversation and show it.",
    query.query: "Records matching every filter given, newest first.",
    conversation.conversation: "A conversation as a reply tree.",
    agent.agent: "An agent's recent messages and its numbers.",
    stats.stats: "Totals, latency percentiles, volume over time.",
    retention.retention: "Delete records past a retention policy.",
    export.export: "Every matching record as JSON Lines or CSV.",
    tail.tail: "Follow new records and status changes.",
    integrity.verify: "Check the hash chain (exit 4 if tampered with).",
    integrity.erase: "Crypto-shred a data subject's payloads.",
    serve.serve: "Serve the read-only web view of the trail.",
    ingest.ingest: "Store what producers published to a JetStream stream.",
}
"""Each subcommand and its one-line summary in ``audit-plugin -h``."""

for command, summary in COMMANDS.items():
    app.command(command.__name__, short_help=summary)(command)


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
