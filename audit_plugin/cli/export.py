"""``audit-plugin export``: every record matching a query as JSON Lines or CSV, streamed; or, with
``--follow``, every lifecycle entry as it commits, to a log system (:mod:`audit_plugin.cli.follow`).

Records are read with ``trail.stream_messages`` (a server-side cursor, a
thousand rows per round trip) and written one at a time, so memory stays flat
however many millions of rows match. The format is specified in docs/cli.md
("Export format") for SIEM ingestion.
"""

from __future__ import annotations

import sys
from contextlib import aclosing, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from audit_plugin.cli.follow import destination, follow_command
from audit_plugin.cli.options import (
    AsCsv,
    CliReader,
    DatabaseUrl,
    json_option,
    query_filters,
    reading_as,
    resolved_filters,
)
from audit_plugin.cli.output import (
    OutputFormat,
    RecordWriter,
    count_text,
    err_console,
    output_format,
    progress_bar,
    trace_linker,
)
from audit_plugin.cli.runner import EXIT_EMPTY, EXIT_USAGE, CliError, open_trail, run
from audit_plugin.cli.values import seconds, whole_number
from audit_plugin.model.access import Reading
from audit_plugin.model.records import AuditQuery
from audit_plugin.sinks.documents import record_document
from audit_plugin.trail import DEFAULT_DATABASE_URL, MessageAuditTrail

PROGRESS_EVERY = 1000
"""Records between progress-bar updates (updating per record would cost more than writing)."""


async def export_records(
    trail: MessageAuditTrail,
    audit_query: AuditQuery,
    writer: RecordWriter,
    limit: int | None,
    *,
    to_stdout: bool,
    reading: Reading | None = None,
) -> int:
    """Stream the matching records, oldest first, to ``writer``; return how many were written.

    The progress bar goes to stderr, and only when stdout is not the same
    terminal (``to_stdout``: the data goes there): it never mixes into the data.
    """
    total = await trail.count_messages(audit_query)
    if limit is not None:
        total = min(total, limit)
    link = trace_linker(trail)
    written = 0
    with progress_bar("exporting", data_on_stdout=to_stdout) as progress:
        task = progress.add_task("export", total=total)
        async with aclosing(trail.stream_messages(audit_query, actor=reading)) as records:  # type: ignore[type-var]
            async for record in records:
                if written == limit:
                    break
                writer.write(record_document(record, link(record)))
                written += 1
                if written % PROGRESS_EVERY == 0:
                    progress.update(task, completed=written)
        progress.update(task, completed=written)
    return written


@query_filters
@reading_as("export")
def export(
    filters: AuditQuery,
    reader: CliReader,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="File to write (default: stdout).", dir_okay=False),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", metavar="N", parser=whole_number("--limit", minimum=1), help="Stop after this many records."
        ),
    ] = None,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: json_option("JSON Lines: one record object per line (default).") = False,
    as_csv: AsCsv = False,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep going: send every lifecycle entry as it commits (see docs/sinks.md)."),
    ] = False,
    to: Annotated[
        Any,
        typer.Option(
            "--to",
            metavar="URL",
            parser=destination,
            help="With --follow: syslog+tcp://HOST:514, syslog+tls://HOST:6514?ca=FILE, otlp+http://HOST:4318, "
            "jsonl:///PATH or jsonl:- (the default: stdout).",
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", metavar="FILE", help="With --follow: keep the position here, resume from it."),
    ] = None,
    from_sequence: Annotated[
        int | None,
        typer.Option(
            "--from-sequence",
            metavar="N",
            parser=whole_number("--from-sequence", minimum=0),
            help="With --follow: start after chain entry N (0: from the start; default: from now) unless --state "
            "holds a position.",
        ),
    ] = None,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            metavar="SECONDS",
            parser=seconds("--interval", minimum=0.05, maximum=3600),
            help="With --follow: seconds between polls once caught up.",
        ),
    ] = 1.0,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="With --follow: stop once caught up (for cron and scripts).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="With --follow: no counters on stderr.")] = False,
) -> None:
    """Export every record matching the filters, oldest first, as JSON Lines (default) or CSV.

    Streams with constant memory; a progress bar goes to stderr on a terminal.
    With --follow, sends every lifecycle entry (records, status changes,
    retries) as it commits to --to, resuming from --state.
    """
    reader.require(reader.role.may_export, "export records")
    follow_only = {"--to": to, "--state": state, "--from-sequence": from_sequence, "--exit-when-idle": exit_when_idle}
    if follow:
        given = [flag for flag, value in (("-o", output), ("--limit", limit), ("--csv", as_csv)) if value]
        if given or filters != AuditQuery():
            what = ", ".join(given) or "filters"
            raise CliError(f"--follow exports every lifecycle entry: it takes no {what}", EXIT_USAGE)
        run(
            follow_command(
                database_url,
                to,
                state_path=state,
                from_sequence=from_sequence,
                interval=interval,
                exit_when_idle=exit_when_idle,
                quiet=quiet,
            )
        )
        return
    if any(follow_only.values()):
        raise CliError(f"{next(flag for flag, value in follow_only.items() if value)} needs --follow", EXIT_USAGE)
    fmt = output_format(as_json, as_csv)
    fmt = OutputFormat.JSON if fmt is OutputFormat.TABLE else fmt

    async def write() -> None:
        async with open_trail(database_url, reader=reader) as trail:
            try:
                target = output.open("w", encoding="utf-8", newline="") if output else nullcontext(sys.stdout)
            except OSError as exc:
                raise CliError(f"cannot write {output}: {exc.strerror or exc}", EXIT_USAGE) from None
            with target as stream:
                writer = RecordWriter(stream, fmt, str(output or "stdout"))
                written = await export_records(
                    trail,
                    await resolved_filters(trail, filters, reader.reading),
                    writer,
                    limit,
                    to_stdout=output is None,
                    reading=reader.reading,
                )
        if not written:
            raise CliError("no records match", EXIT_EMPTY)
        kind = "CSV" if fmt is OutputFormat.CSV else "JSON Lines"
        err_console.print(
            f"exported {count_text(written, 'record')}" + (f" to {output}" if output else "") + f" ({kind})"
        )

    run(write())
