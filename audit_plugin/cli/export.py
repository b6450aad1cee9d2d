"""``audit-plugin export``: every record matching a query as JSON Lines or CSV, streamed.

Records are read with ``trail.stream_messages`` (a server-side cursor, a
thousand rows per round trip) and written one at a time, so memory stays flat
however many millions of rows match. The format is specified in docs/cli.md
("Export format") for SIEM ingestion.
"""

from __future__ import annotations

import sys
from contextlib import aclosing, nullcontext
from pathlib import Path
from typing import Annotated

import typer

from audit_plugin.cli.options import AsCsv, DatabaseUrl, query_filters
from audit_plugin.cli.output import (
    OutputFormat,
    RecordWriter,
    count_text,
    err_console,
    output_format,
    progress_bar,
    record_document,
    trace_linker,
)
from audit_plugin.cli.runner import EXIT_EMPTY, EXIT_USAGE, CliError, open_trail, run
from audit_plugin.cli.values import whole_number
from audit_plugin.records import AuditQuery
from audit_plugin.trail import DEFAULT_DATABASE_URL, MessageAuditTrail

PROGRESS_EVERY = 1000
"""Records between progress-bar updates (updating per record would cost more than writing)."""


async def export_records(
    trail: MessageAuditTrail, audit_query: AuditQuery, writer: RecordWriter, limit: int | None, *, to_stdout: bool
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
        async with aclosing(trail.stream_messages(audit_query)) as records:  # type: ignore[type-var]
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
def export(
    filters: AuditQuery,
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
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines: one record object per line (default).")] = False,
    as_csv: AsCsv = False,
) -> None:
    """Export every record matching the filters, oldest first, as JSON Lines (default) or CSV.

    Streams with constant memory; a progress bar goes to stderr on a terminal.
    """
    fmt = output_format(as_json, as_csv)
    fmt = OutputFormat.JSON if fmt is OutputFormat.TABLE else fmt

    async def write() -> None:
        async with open_trail(database_url) as trail:
            try:
                target = output.open("w", encoding="utf-8", newline="") if output else nullcontext(sys.stdout)
            except OSError as exc:
                raise CliError(f"cannot write {output}: {exc.strerror or exc}", EXIT_USAGE) from None
            with target as stream:
                writer = RecordWriter(stream, fmt, str(output or "stdout"))
                written = await export_records(trail, filters, writer, limit, to_stdout=output is None)
        if not written:
            raise CliError("no records match", EXIT_EMPTY)
        kind = "CSV" if fmt is OutputFormat.CSV else "JSON Lines"
        err_console.print(
            f"exported {count_text(written, 'record')}" + (f" to {output}" if output else "") + f" ({kind})"
        )

    run(write())
