"""Options shared by the subcommands: database URL, output format, query filters, time ranges."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from audit_plugin import validation as v
from audit_plugin.cli.runner import EXIT_USAGE, CliError
from audit_plugin.cli.values import bad_value, choices_text, enum_choice, whole_number
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.messages import MessageStatus, MessageType
from audit_plugin.records import MAX_QUERY_LIMIT, AuditQuery

DATABASE_URL_ENV = "AUDIT_DATABASE_URL"

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        metavar="URL",
        envvar=DATABASE_URL_ENV,
        help="sqlite+aiosqlite:///path.db, postgresql+asyncpg://user@host/db, postgres://..., or a file path.",
        show_envvar=True,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
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
_FILTER_PARAMETERS = [
    inspect.Parameter(name, _KW, default=None, annotation=annotation)
    for name, annotation in (
        ("from_agent", Annotated[str | None, typer.Option("--from", metavar="AGENT", help="Sender agent.")]),
        ("to_agent", Annotated[str | None, typer.Option("--to", metavar="AGENT", help="Receiver agent.")]),
        (
            "message_type",
            Annotated[
                MessageType | None,
                typer.Option(
                    "--type",
                    metavar="TYPE",
                    parser=enum_choice("--type", "a message type", MessageType),
                    help=f"Message type: {choices_text(MessageType)} (any case).",
                ),
            ],
        ),
        (
            "status",
            Annotated[
                MessageStatus | None,
                typer.Option(
                    "--status",
                    metavar="STATUS",
                    parser=enum_choice("--status", "a status", MessageStatus),
                    help=f"Status: {choices_text(MessageStatus)} (any case).",
                ),
            ],
        ),
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
