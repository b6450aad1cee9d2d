"""Running a subcommand: open the trail, run the coroutine, turn every failure into one line.

Exit codes (documented in docs/cli.md): 0 success, 1 nothing matched, 2 bad
input (option value, database URL), 3 database unreachable or failing,
4 ``verify`` found the trail tampered with, 70 a bug in audit-plugin (set ``AUDIT_PLUGIN_DEBUG=1`` for the traceback),
130 interrupted. When the reader of stdout goes away (``export | head``) the
command ends quietly with 0: the reader had what it wanted, and a pipeline
with ``set -o pipefail`` must not fail for it.
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from audit_plugin.exceptions import AuditError, UnknownIdError, driver_message
from audit_plugin.masking import mask_text, mask_url
from audit_plugin.model.records import RetentionPolicy
from audit_plugin.storage.registry import resolve_database_url
from audit_plugin.trail import MessageAuditTrail

EXIT_EMPTY = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

KEY_FILE_ENV = "AUDIT_KEY_FILE"
"""The master key file (``LocalKeyFileProvider``) the commands decrypt payloads with, for auditors."""

CONNECT_TIMEOUT = 15.0
"""Seconds to wait for the database to answer before giving up."""


class CliError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_DATABASE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int) -> NoReturn:
    """Print ``audit-plugin: message`` on stderr as one line and exit."""
    one_line = mask_text(" ".join(str(message).split()))
    print(f"audit-plugin: {one_line}", file=sys.stderr, flush=True)
    raise SystemExit(exit_code)


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a subcommand's coroutine (``main`` turns what it raises into one line and an exit code)."""
    try:
        asyncio.run(coroutine)
    except BrokenPipeError:
        if stdout_closed():
            reader_gone()
        raise  # another pipe broke (a database socket): a failure like any other


def stdout_closed() -> bool:
    """Whether nobody reads stdout any more (a pipe's reader exited): its descriptor polls as an error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor (captured output), or no poll() here
        return False


def reader_gone() -> NoReturn:
    """Stdout's reader closed the pipe: stop with 0, and let nothing more be written (or fail) at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush of stdout goes nowhere, quietly
    raise SystemExit(0)


def exit_on_error(exc: BaseException) -> NoReturn:
    """Report any failure as one readable line on stderr and exit with its code (see module docs)."""
    if isinstance(exc, CliError):
        fail(str(exc), exc.exit_code)
    if isinstance(exc, UnknownIdError):
        fail(str(exc), EXIT_EMPTY)
    if isinstance(exc, AuditError):
        # Input errors (also ValueError/TypeError) name the field; the rest are store failures.
        fail(str(exc), EXIT_USAGE if isinstance(exc, ValueError | TypeError) else EXIT_DATABASE)
    if isinstance(exc, SQLAlchemyError):
        fail(f"database error: {describe_database_error(exc)}", EXIT_DATABASE)
    if isinstance(exc, OSError | TimeoutError):
        fail(f"cannot reach the database: {exc or type(exc).__name__}", EXIT_DATABASE)
    if isinstance(exc, KeyboardInterrupt):
        raise SystemExit(EXIT_INTERRUPTED)
    if os.environ.get("AUDIT_PLUGIN_DEBUG"):
        raise exc
    fail(
        f"unexpected {type(exc).__name__}: {exc} (a bug; set AUDIT_PLUGIN_DEBUG=1 to see the traceback)",
        EXIT_INTERNAL,
    )


def describe_database_error(exc: SQLAlchemyError) -> str:
    """The driver's own message (first line), without SQLAlchemy's statement dump and links."""
    return driver_message(exc) or type(exc).__name__


def display_url(database_url: str) -> str:
    """The URL with any password (or token, or secret query parameter) masked, for messages."""
    return mask_url(database_url)


def _missing_sqlite_file(database_url: str) -> Path | None:
    try:
        parsed = make_url(resolve_database_url(database_url))
    except (ArgumentError, AuditError):
        return None  # the trail reports the bad URL
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


@asynccontextmanager
async def open_trail(
    database_url: str,
    *,
    create: bool = False,
    retention_policy: RetentionPolicy = RetentionPolicy.DAYS_90,
    reader: Any = None,
    **trail_options: Any,
) -> AsyncIterator[MessageAuditTrail]:
    """An initialised trail on ``database_url``, closed afterwards.

    Read-only subcommands pass ``create=False``: a SQLite file that does not
    exist is reported instead of silently created empty. ``trail_options``
    go to :class:`MessageAuditTrail` (e.g. ``chain_id``). With the master key
    file named by ``AUDIT_KEY_FILE``, auditors see encrypted payloads
    decrypted. ``reader`` (a :class:`~audit_plugin.cli.options.CliReader`):
    its reading is recorded as an access entry when the block ends without
    error, if it asked to be (``--record-access``).
    """
    key_file = os.environ.get(KEY_FILE_ENV)
    if key_file and "key_provider" not in trail_options:
        from audit_plugin.privacy.crypto import LocalKeyFileProvider

        trail_options["key_provider"] = LocalKeyFileProvider(key_file, create=False)
    missing = None if create else _missing_sqlite_file(database_url)
    if missing is not None:
        raise CliError(
            f"no audit database at {missing} (run `audit-plugin demo` to create one, or pass --database-url)",
            EXIT_DATABASE,
        )
    trail = MessageAuditTrail(database_url, retention_policy=retention_policy, **trail_options)
    try:
        await asyncio.wait_for(trail.initialize(), CONNECT_TIMEOUT)
    except TimeoutError:
        await trail.close()
        raise CliError(
            f"cannot reach the database at {display_url(database_url)} within {CONNECT_TIMEOUT:g}s"
        ) from None
    except BaseException:
        await trail.close()
        raise
    try:
        yield trail
        if reader is not None and reader.record:
            await trail.record_access(reader.reading)
    finally:
        await trail.close()
