"""``audit-plugin tail``: follow records as they are written, like ``tail -f``.

Polls the store every ``--interval`` seconds for records created in the last
``--lookback`` seconds (an indexed time-range query) and prints each record
when it first appears and again whenever its status changes (PENDING →
DELIVERED...). The look-back catches records committed after their creation
time (by another process, a busy writer, a message that waited in a queue);
a record committed, or changing status, more than ``--lookback`` seconds
after its ``timestamp`` is not shown. This works the same on SQLite and
PostgreSQL; LISTEN/NOTIFY would need a trigger in the shared schema and a
dedicated connection, for a saving of one indexed query per second.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.text import Text

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
    TraceLinker,
    console,
    error_style,
    output_format,
    payload_summary,
    record_headline,
    short_time,
    trace_linker,
)
from audit_plugin.cli.runner import open_trail, run
from audit_plugin.cli.values import seconds, whole_number
from audit_plugin.model.access import Reading
from audit_plugin.model.messages import MessageStatus, short_id
from audit_plugin.model.records import MAX_QUERY_LIMIT, AuditQuery, AuditRecord
from audit_plugin.sinks.documents import record_document
from audit_plugin.trail import DEFAULT_DATABASE_URL, MessageAuditTrail

DEFAULT_LOOKBACK = 60.0
"""Seconds back each poll looks for new records and status changes."""

MAX_LOOKBACK = 365 * 86400.0
"""Longest ``--lookback`` (a year): each poll reads the whole window."""

MAX_INTERVAL = 3600.0
"""Longest ``--interval`` between polls (an hour)."""

RECORD_EVERY = 60.0
"""Seconds between the access entries of a ``tail --record-access`` that keeps printing."""


class LinePrinter:
    """One line per record event: a headline for people, a JSON object, or a CSV row."""

    def __init__(self, fmt: OutputFormat, link: TraceLinker) -> None:
        self.link = link
        self.writer = None if fmt is OutputFormat.TABLE else RecordWriter(sys.stdout, fmt, "stdout")
        sys.stdout.flush()

    def print(self, record: AuditRecord) -> None:
        if self.writer is None:
            # The short id comes early: the line is cut at the terminal's edge, and the id must survive.
            line = Text(f"{short_time(record.timestamp)}  {short_id(record.message_id)}  ", style="dim")
            line.append_text(record_headline(record))
            line.append(f"  {record.correlation_id or '-'}  ", style="dim")
            if record.error_message:
                line.append(record.error_message, style=error_style(record))
            else:
                line.append(payload_summary(record.payload, 40), style="italic")
            console.print(line, no_wrap=True, overflow="ellipsis")
        else:
            self.writer.write(record_document(record, self.link(record)))
            sys.stdout.flush()


def narrowed(filters: AuditQuery, window_start: datetime) -> AuditQuery:
    """``filters`` limited to records created since ``window_start`` (or ``--since``, if later)."""
    start = filters.start_time
    return replace(filters, start_time=window_start if start is None or window_start > start else start)


async def follow(
    trail: MessageAuditTrail,
    filters: AuditQuery,
    printer: LinePrinter,
    *,
    backlog: int,
    interval: float,
    lookback: float = DEFAULT_LOOKBACK,
    stop_after: int | None = None,
    reader: CliReader | None = None,
) -> None:
    """Print the last ``backlog`` records, then new records and status changes until stopped.

    ``stop_after`` counts every line printed, the backlog's included, so
    ``-n 2 --stop-after 2`` prints the two latest records and exits. Read
    as ``reader``'s role; with ``--record-access`` what was printed is
    recorded at most every :data:`RECORD_EVERY` seconds (the rest when the
    command ends).
    """
    seen: dict[str, tuple[MessageStatus, datetime]] = {}
    reading = reader.reading if reader is not None else None
    recorded_at = time.monotonic()

    def polled() -> Reading | None:
        return None if reading is None else Reading(reading.actor, "tail", listed=MAX_QUERY_LIMIT)

    async def poll() -> tuple[list[AuditRecord], Reading | None]:
        """Records in the look-back window that are new or changed since last seen."""
        window_start = datetime.now(UTC) - timedelta(seconds=lookback)
        fresh = []
        this_poll = polled()
        async for record in trail.stream_messages(narrowed(filters, window_start), actor=this_poll):
            known = seen.get(record.message_id)
            seen[record.message_id] = (record.status, record.timestamp)
            if known is None or known[0] is not record.status:
                fresh.append(record)
        for message_id in [key for key, (_, created) in seen.items() if created < window_start]:
            del seen[message_id]
        return fresh, this_poll

    def shown(records: list[AuditRecord], source: Reading | None) -> None:
        if reading is not None and source is not None and records:
            ids = {record.message_id for record in records}
            reading.note(ids, [message_id for message_id in source.decrypted_ids if message_id in ids])

    await poll()  # what is already there is history: only the backlog of it is shown
    first = polled()
    history = await trail.query_messages(replace(filters, limit=backlog), actor=first) if backlog else []
    printed = 0
    history = list(reversed(history))[: stop_after if stop_after is not None else None]
    for record in history:
        printer.print(record)
        printed += 1
        seen[record.message_id] = (record.status, record.timestamp)
    shown(history, first)
    while stop_after is None or printed < stop_after:
        await asyncio.sleep(interval)
        fresh, source = await poll()
        fresh = fresh[: None if stop_after is None else stop_after - printed]
        for record in fresh:
            printer.print(record)
            printed += 1
        shown(fresh, source)
        if reader is not None and reader.record and time.monotonic() - recorded_at >= RECORD_EVERY:
            await trail.record_access(reader.reading)
            recorded_at = time.monotonic()


def _seconds_option(flag: str, minimum: float, maximum: float, help_text: str) -> Any:
    """The ``Annotated`` type of an option taking seconds in ``[minimum, maximum]``."""
    parser = seconds(flag, minimum=minimum, maximum=maximum)
    return Annotated[float, typer.Option(flag, metavar="SECONDS", parser=parser, help=help_text)]


@query_filters
@reading_as("tail")
def tail(
    filters: AuditQuery,
    reader: CliReader,
    lines: Annotated[
        int,
        typer.Option(
            "--lines",
            "-n",
            metavar="N",
            parser=whole_number("--lines", minimum=0, maximum=MAX_QUERY_LIMIT),
            help="Recent records to print first.",
        ),
    ] = 10,
    interval: _seconds_option("--interval", 0.05, MAX_INTERVAL, "Seconds between polls.") = 1.0,
    lookback: _seconds_option(
        "--lookback", 1, MAX_LOOKBACK, "Seconds after creation a record can still show up."
    ) = DEFAULT_LOOKBACK,
    stop_after: Annotated[
        int | None,
        typer.Option(
            "--stop-after",
            metavar="N",
            parser=whole_number("--stop-after", minimum=1),
            help="Exit after printing N lines, the first -n included (for scripts).",
        ),
    ] = None,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: json_option("One JSON object per line (JSON Lines).") = False,
    as_csv: AsCsv = False,
) -> None:
    """Follow new records and status changes as they are written (Ctrl-C to stop).

    Takes the same filters as `query`. Polls every --interval seconds.
    """
    fmt = output_format(as_json, as_csv)

    async def watch() -> None:
        async with open_trail(database_url, reader=reader) as trail:
            printer = LinePrinter(fmt, trace_linker(trail))
            try:
                await follow(
                    trail,
                    await resolved_filters(trail, filters, reader.reading),
                    printer,
                    backlog=lines,
                    interval=interval,
                    lookback=lookback,
                    stop_after=stop_after,
                    reader=reader,
                )
            except (KeyboardInterrupt, asyncio.CancelledError):
                if reader.record:  # interrupted: what was printed is still recorded
                    await trail.record_access(reader.reading)
                raise

    run(watch())
