"""The ``audit-plugin`` command line: look at an audit trail without writing SQL or Python.

Every subcommand takes ``--database-url`` (or ``AUDIT_DATABASE_URL``, default
``sqlite+aiosqlite:///audit.db``), prints tables on a terminal and
``--json`` / ``--csv`` for machines. Failures are one line on stderr and a
non-zero exit code (see :mod:`audit_plugin.cli.runner`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from audit_plugin.cli import agent, conversation, demo, export, integrity, query, retention, serve, stats, tail
from audit_plugin.cli.runner import EXIT_USAGE, exit_on_error, fail

app = typer.Typer(
    name="audit-plugin",
    help="Look at a multi-agent message audit trail: who told whom what, when, and what failed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (
    demo.demo,
    query.query,
    conversation.conversation,
    agent.agent,
    stats.stats,
    retention.retention,
    export.export,
    tail.tail,
    integrity.verify,
    integrity.erase,
    serve.serve,
):
    app.command(command.__name__)(command)


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
            if not message:  # e.g. no subcommand: the help was printed instead
                raise SystemExit(getattr(exc, "exit_code", EXIT_USAGE)) from None
            fail(message, getattr(exc, "exit_code", EXIT_USAGE))
        exit_on_error(exc)
    sys.exit(code if isinstance(code, int) else 0)


def _is_usage_error(exc: BaseException) -> bool:
    """Typer's (and Click's) own errors: unknown option, bad value, missing argument..."""
    return callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)
