"""Options shared by the subcommands: database URL, output format, query filters, time ranges."""

from __future__ import annotations

import functools
import getpass
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from audit_plugin.cli.runner import EXIT_USAGE, CliError
from audit_plugin.cli.values import bad_value, choices_text, enum_choice, whole_number
from audit_plugin.exceptions import AccessDeniedError, AmbiguousIdError, InvalidFieldError
from audit_plugin.model import validation as v
from audit_plugin.model.access import Actor, Reading, Role
from audit_plugin.model.messages import MessageStatus, MessageType
from audit_plugin.model.records import MAX_QUERY_LIMIT, AuditQuery
from audit_plugin.reading.ids import find_correlation_id
from audit_plugin.trail import MessageAuditTrail, query_filter

DATABASE_URL_ENV = "AUDIT_DATABASE_URL"

GLOBAL_OPTIONS = {"database_url": "--database-url", "as_json": "--json"}
"""Options every subcommand that has them also takes before its name: ``audit-plugin --database-url URL query``."""


def given_before_the_command(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """The value of a :data:`GLOBAL_OPTIONS` option: as given after the subcommand, else as given before it.

    One given after the subcommand's name wins; one given before it (kept
    by the main callback in the root context's ``obj``) comes next, then the
    environment variable and the default.
    """
    source = ctx.get_parameter_source(param.name or "")
    if getattr(source, "name", None) == "COMMANDLINE":  # by name: Typer may carry its own copy of Click
        return value
    before = (ctx.find_root().obj or {}).get(param.name)
    return value if before is None else before


DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        metavar="URL",
        envvar=DATABASE_URL_ENV,
        help="sqlite+aiosqlite:///path.db, postgresql+asyncpg://user@host/db, postgres://..., or a file path.",
        show_envvar=True,
        callback=given_before_the_command,
    ),
]


def json_option(help_text: str = "Machine-readable JSON on stdout.") -> Any:
    """The ``Annotated`` type of a command's ``--json`` flag (also taken before the command's name)."""
    return Annotated[bool, typer.Option("--json", help=help_text, callback=given_before_the_command)]


AsJson = json_option()
AsCsv = Annotated[bool, typer.Option("--csv", help="CSV on stdout (header row first).")]
Limit = Annotated[
    int,
    typer.Option(
        "--limit",
        metavar="N",
        parser=whole_number("--limit", minimum=1, maximum=MAX_QUERY_LIMIT),
        help=f"Most records to show (1 to {MAX_QUERY_LIMIT:,}).",
    ),
]
Offset = Annotated[
    int,
    typer.Option(
        "--offset",
        metavar="N",
        parser=whole_number("--offset", minimum=0, maximum=v.INT64_MAX),
        help="Records to skip (for paging).",
    ),
]
Since = Annotated[
    str | None,
    typer.Option("--since", metavar="TIME", help="Start: 30s, 15m, 2h, 3d, 1w ago, now, or ISO 8601 (UTC if no zone)."),
]
Until = Annotated[str | None, typer.Option("--until", metavar="TIME", help="End: same forms as --since.")]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*(?:ago)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(option: str, text: str | None, now: datetime | None = None) -> datetime | None:
    """``2h`` / ``90m`` / ``3d`` / ``1w`` (that long ago), ``now``, or ISO 8601 (naive = UTC).

    A time before year 1 or after 9999 (in UTC) is bad input naming ``option``, like an unreadable one.
    """
    if text is None:
        return None
    now = now or datetime.now(UTC)
    if text.strip().lower() == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = relative.groups()
        try:
            return now - timedelta(seconds=float(amount) * _UNIT_SECONDS[unit.lower()])
        except (OverflowError, ValueError):  # timedelta or the subtraction out of range (ValueError: infinity)
            raise typer.BadParameter(f"{text!r} reaches before year 1", param_hint=f"'{option}'") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a time: use 2h, 30m, 3d, 1w, now, or ISO like 2026-01-31 or 2026-01-31T12:00:00Z",
            param_hint=f"'{option}'",
        ) from None
    try:
        return v.to_utc(option, moment)
    except InvalidFieldError as exc:
        raise typer.BadParameter(exc.reason, param_hint=f"'{option}'") from None


def days_back(option: str, days: int, now: datetime | None = None) -> datetime:
    """The time ``days`` days before ``now``; a count reaching before year 1 is bad input naming ``option``."""
    try:
        return v.days_ago(option, days, now)
    except InvalidFieldError as exc:
        raise typer.BadParameter(exc.reason, param_hint=f"'{option}'") from None


SINCE_AFTER_UNTIL = "--since is after --until: that time window is empty"

QUERY_OPTIONS = {
    "from_agent": "--from",
    "to_agent": "--to",
    "message_type": "--type",
    "status": "--status",
    "correlation_id": "--correlation",
    "trace_id": "--trace",
    "start_time": "--since",
    "end_time": "--until",
    "limit": "--limit",
    "offset": "--offset",
}
""":class:`AuditQuery` fields and the options that set them."""


def option_error(exc: InvalidFieldError) -> Exception:
    """An :class:`AuditQuery` error reworded in option names: ``--since is after --until``."""
    option = QUERY_OPTIONS.get(exc.field.removeprefix("AuditQuery."), exc.field)
    reason = exc.reason
    for name, spelled in QUERY_OPTIONS.items():
        reason = re.sub(rf"\b{name}\b", spelled, reason)
    if option == "--since" and reason == "is after --until":
        return CliError(SINCE_AFTER_UNTIL, EXIT_USAGE)
    return bad_value(option, reason)


_KW = inspect.Parameter.KEYWORD_ONLY


def _enum_filter(flag: str, metavar: str, noun: str, enum: type[Enum], label: str) -> Any:
    """The ``Annotated`` type of a filter option taking one value of ``enum``, in any case."""
    option = typer.Option(
        flag, metavar=metavar, parser=enum_choice(flag, noun, enum), help=f"{label}: {choices_text(enum)} (any case)."
    )
    return Annotated[enum | None, option]


_FILTER_PARAMETERS = [
    inspect.Parameter(name, _KW, default=None, annotation=annotation)
    for name, annotation in (
        ("from_agent", Annotated[str | None, typer.Option("--from", metavar="AGENT", help="Sender agent.")]),
        ("to_agent", Annotated[str | None, typer.Option("--to", metavar="AGENT", help="Receiver agent.")]),
        ("message_type", _enum_filter("--type", "TYPE", "a message type", MessageType, "Message type")),
        ("status", _enum_filter("--status", "STATUS", "a status", MessageStatus, "Status")),
        (
            "correlation_id",
            Annotated[str | None, typer.Option("--correlation", metavar="ID", help="Correlation (conversation) id.")],
        ),
        (
            "trace_id",
            Annotated[str | None, typer.Option("--trace", metavar="TRACE_ID", help="OpenTelemetry trace id (32 hex).")],
        ),
    )
]
_TIME_PARAMETERS = [
    inspect.Parameter("since", _KW, default=None, annotation=Since),
    inspect.Parameter("until", _KW, default=None, annotation=Until),
]


async def resolved_filters(trail: MessageAuditTrail, filters: AuditQuery, reading: Reading | None = None) -> AuditQuery:
    """``filters`` with ``--correlation`` read as ``conversation ID`` reads an id (a unique start, a message's id...).

    An id that names no conversation is kept as given (``tail`` may be
    waiting for it); one naming several is an error listing them.
    """
    if filters.correlation_id is None:
        return filters
    try:
        correlation_id = await find_correlation_id(trail, filters.correlation_id, reading)
    except AmbiguousIdError as exc:
        raise CliError(f"--correlation {exc}", EXIT_USAGE) from None
    return replace(filters, correlation_id=correlation_id)


def query_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a Typer command every query filter option, passed to it as ``filters: AuditQuery``.

    ``query``, ``export`` and ``tail`` share the same filters; this keeps
    their names, help and parsing in one place. Relative times (``--since
    2h``) are resolved once, when the command starts; the command sets
    ``limit``/``offset`` with ``dataclasses.replace``.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [parameter for parameter in signature.parameters.values() if parameter.name != "filters"]

    @functools.wraps(command)
    def with_filters(**options: Any) -> Any:
        given = {parameter.name: options.pop(parameter.name) for parameter in _FILTER_PARAMETERS}
        trace_id = given.pop("trace_id")
        try:
            filters = AuditQuery(
                **given,
                trace_id=trace_id.lower() if trace_id else None,
                start_time=parse_time("--since", options.pop("since")),
                end_time=parse_time("--until", options.pop("until")),
            )
        except InvalidFieldError as exc:
            raise option_error(exc) from None
        return command(filters=filters, **options)

    parameters = [*_FILTER_PARAMETERS, *_TIME_PARAMETERS, *(parameter.replace(kind=_KW) for parameter in own)]
    with_filters.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_filters.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return with_filters


# -- who reads: --as, --role, --record-access ------------------------------------------------------

ROLE_ENV = "AUDIT_ROLE"
RECORD_ACCESS_ENV = "AUDIT_RECORD_ACCESS"
NOT_A_FILTER = frozenset({"database_url", "as_json", "as_csv", "output", "quiet", "html", "save_checkpoint"})
"""Options that say where output goes, not what is read: left out of the access entry's filter."""


def os_user() -> str:
    """The OS user running the command (``uid-N`` when the system has no name for it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


@dataclass(slots=True)
class CliReader:
    """Who runs a reading command, with which role, and whether its reads are recorded (``--record-access``)."""

    reading: Reading
    record: bool

    @property
    def role(self) -> Role:
        return self.reading.role

    def require(self, allowed: bool, action: str) -> None:
        """Refuse ``action`` (exit 2) unless the role allows it."""
        try:
            self.role.require(allowed, action)
        except AccessDeniedError as exc:
            raise CliError(f"{exc} (--role {self.role.value}; {ROLE_ENV} sets the default)", EXIT_USAGE) from None


_READER_PARAMETERS = [
    inspect.Parameter(
        "as_actor",
        _KW,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option("--as", metavar="NAME", help="Who reads, as recorded (default: your OS user)."),
        ],
    ),
    inspect.Parameter(
        "role",
        _KW,
        default=Role.AUDITOR,
        annotation=Annotated[
            Role,
            typer.Option(
                "--role",
                metavar="ROLE",
                envvar=ROLE_ENV,
                show_envvar=True,
                parser=enum_choice("--role", "a role", Role),
                help="reader (payload values masked) or auditor (payloads as stored, decrypted with a key; "
                "exports and proofs).",
                show_default="auditor",
            ),
        ],
    ),
    inspect.Parameter(
        "record_access",
        _KW,
        default=False,
        annotation=Annotated[
            bool,
            typer.Option(
                "--record-access",
                envvar=RECORD_ACCESS_ENV,
                show_envvar=True,
                help="Record this read in the hash chain as an access entry (who, when, filter, records).",
            ),
        ],
    ),
]


def reading_as(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command ``--as``, ``--role`` and ``--record-access``, passed to it as ``reader: CliReader``.

    The reading's filter is the command's options (what it was asked to
    read); pass ``reader`` to :func:`~audit_plugin.cli.runner.open_trail` and
    ``actor=reader.reading`` to the trail's reads.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [parameter for parameter in signature.parameters.values() if parameter.name != "reader"]

        @functools.wraps(command)
        def with_reader(**options: Any) -> Any:
            name = options.pop("as_actor")
            role, record = options.pop("role"), options.pop("record_access")
            try:
                actor = Actor(name if name is not None else os_user(), role, "cli")
            except InvalidFieldError as exc:
                raise bad_value("--as", exc.reason) from None
            reading = Reading(actor, action, access_filter(options))
            return command(reader=CliReader(reading, record), **options)

        parameters = [*(p.replace(kind=_KW) for p in own), *_READER_PARAMETERS]
        with_reader.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_reader.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return with_reader

    return decorate


def access_filter(options: dict[str, Any]) -> dict[str, Any]:
    """What a command was asked to read, for its access entry: its options that are set, the query's filters."""
    document: dict[str, Any] = {}
    for name, value in options.items():
        if name in NOT_A_FILTER or value is None or value is False:
            continue
        if isinstance(value, AuditQuery):
            document.update(query_filter(value))
        else:
            document[name] = str(value) if isinstance(value, Path) else value
    return document
