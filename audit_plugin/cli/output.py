"""How subcommands print: Rich tables on a terminal, ``--json`` or ``--csv`` for machines.

The record document (:mod:`audit_plugin.sinks.documents`) is the export
format (docs/cli.md, "Export format"): one flat JSON object per record, the
same fields as CSV columns, so a SIEM maps the fields once for every
subcommand and sink.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from audit_plugin.cli.runner import EXIT_USAGE, CliError, fail
from audit_plugin.model.messages import MessageStatus, short_id
from audit_plugin.model.records import AuditRecord
from audit_plugin.sinks.documents import RECORD_FIELDS, json_line
from audit_plugin.trail import MessageAuditTrail


class TrimmedLines(io.TextIOBase):
    """A text stream that drops the spaces Rich pads lines with: what a pipe or a file should get."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.partial = ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        if lines:
            self.stream.write("".join(line.rstrip() + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.stream.write(self.partial)
            self.partial = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def human_console(stream: IO[str]) -> Console:
    """A console for people: as Rich draws it on a terminal; plain, trimmed lines on a pipe or in a file."""
    if stream.isatty():
        return Console(file=stream, highlight=False)
    return Console(file=TrimmedLines(stream), highlight=False)


console = human_console(sys.stdout)
"""Human output (stdout)."""

err_console = human_console(sys.stderr)
"""Progress bars and notes (stderr), so stdout stays clean for pipes."""

STATUS_STYLES = {
    MessageStatus.PENDING: "yellow",
    MessageStatus.SENT: "cyan",
    MessageStatus.DELIVERED: "green",
    MessageStatus.FAILED: "bold red",
    MessageStatus.EXPIRED: "magenta",
}


TraceLinker = Callable[[AuditRecord], str | None]


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def output_format(as_json: bool, as_csv: bool) -> OutputFormat:
    if as_json and as_csv:
        fail("--json and --csv are mutually exclusive; pick one", EXIT_USAGE)
    return OutputFormat.JSON if as_json else OutputFormat.CSV if as_csv else OutputFormat.TABLE


def trace_linker(trail: MessageAuditTrail) -> TraceLinker:
    """Record → trace-viewer link, when a template is configured (``AUDIT_TRACE_URL_TEMPLATE``)."""
    return trail.trace_url


# -- values ---------------------------------------------------------------------


def short_time(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def seconds_text(seconds: float | None) -> str:
    """A latency for people: ``4.2 ms``, ``1.30 s``, ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


FINAL_FAILURES = frozenset({MessageStatus.FAILED, MessageStatus.EXPIRED})


def error_style(record: AuditRecord) -> str:
    """Red for why a message failed or expired; dim for a retry's error on one that went on (delivered, pending)."""
    return "red" if record.status in FINAL_FAILURES else "dim"


def status_text(status: MessageStatus | str) -> Text:
    status = MessageStatus(status)
    return Text(status.value, style=STATUS_STYLES.get(status, ""))


def count_text(count: int, noun: str, plural: str | None = None) -> str:
    """``1 record``, ``2 records``, ``1 retry``, ``3 retries``, ``1,000 messages``."""
    if count == 1:
        return f"1 {noun}"
    if plural is None:
        plural = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{count:,} {plural}"


def clip(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def payload_summary(payload: dict[str, Any], width: int = 50) -> str:
    return clip(json.dumps(payload, ensure_ascii=False, separators=(", ", ": ")), width)


# -- record documents (JSON and CSV) ------------------------------------------------------


def csv_value(value: Any) -> Any:
    """CSV cell: nested values as compact JSON text, ``None`` as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def csv_writer(stream: IO[str] = sys.stdout) -> Any:
    return csv.writer(stream, lineterminator="\n")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def print_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    writer = csv_writer()
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_value(value) for value in row])


def print_record_documents(documents: list[dict[str, Any]], fmt: OutputFormat) -> None:
    """Documents as a JSON array or CSV rows (header first; extra leading fields kept in order)."""
    if fmt is OutputFormat.JSON:
        print_json(documents)
    else:
        header = list(documents[0]) if documents else list(RECORD_FIELDS)
        print_csv(header, ([document[name] for name in header] for document in documents))


def progress_bar(verb: str, *, data_on_stdout: bool = False) -> Progress:
    """A progress bar on stderr, shown only on a terminal (pipes and logs stay clean).

    ``data_on_stdout``: the command writes its data to stdout; when that is
    the same terminal, the data is the progress and no bar is drawn over it.
    """
    shown = err_console.is_terminal and not (data_on_stdout and sys.stdout.isatty())
    return Progress(
        TextColumn(verb),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not shown,
        redirect_stdout=False,
        redirect_stderr=False,
    )


AGENT_WIDTH = 24
"""Widest agent name in a one-line headline (longer ones are cut with ``…``), so the status stays on the line."""

LOG_PROGRESS_EVERY = 10.0
"""Seconds between progress lines written to a pipe or a log (on a terminal the line is redrawn in place)."""


class ProgressLine:
    """A command's running status on stderr: one line redrawn in place on a terminal; plain lines elsewhere.

    A log or a pipe gets no carriage returns and no escape codes, only a
    whole line at most every ``every`` seconds (and always the last one).
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        every: float = LOG_PROGRESS_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty()
        self.every = every
        self.clock = clock
        self.last: float | None = None
        self.shown: str | None = None

    def show(self, text: str) -> None:
        """The status now; on a log, written only if ``every`` seconds passed since the last line."""
        if self.terminal:
            self.stream.write(f"\r{text}\x1b[K")
        else:
            now = self.clock()
            if self.last is not None and now - self.last < self.every:
                return
            self.last = now
            self.stream.write(text + "\n")
        self.shown = text
        self.stream.flush()

    def done(self, text: str) -> None:
        """The final status, ending the line (on a log, unless the last line written said the same)."""
        if not self.terminal and text == self.shown and self.last is not None:
            return
        self.stream.write(f"\r{text}\x1b[K\n" if self.terminal else text + "\n")
        self.stream.flush()


def record_headline(record: AuditRecord) -> Text:
    """``QUERY planner → worker-a  DELIVERED  2.3 ms  retries 1``: one record at a glance."""
    line = Text()
    line.append(f"{record.message_type.value} ", style="bold")
    line.append(f"{clip(record.from_agent, AGENT_WIDTH)} → {clip(record.to_agent, AGENT_WIDTH)}  ")  # status stays on
    line.append_text(status_text(record.status))
    line.append(f"  {seconds_text(record.delivery_seconds)}", style="cyan")
    if record.retry_count:
        line.append(f"  {count_text(record.retry_count, 'retry')}", style="yellow")
    return line


# -- tables -----------------------------------------------------------------------------


def trace_cell(record: AuditRecord, link: TraceLinker) -> Text:
    if not record.trace_id:
        return Text("")
    url = link(record)
    return Text(record.trace_id[:8] + "…", style=f"link {url}" if url else "dim")


WIDE_TABLE = 100
"""Columns from which a records table gives errors a column of their own."""


def records_table(records: Sequence[AuditRecord], link: TraceLinker, title: str | None = None) -> Table:
    """The standard table of records, in the order given; error and trace columns only when needed.

    Fits 80 columns: ids and agent names are cut with an ellipsis, never
    wrapped (a cut id's prefix can still be typed back: ``conversation``
    accepts any unique prefix). On a narrow terminal a record's error is a
    third line under its agents, cut to fit; from :data:`WIDE_TABLE` columns
    it has a column of its own, wrapped at words.
    """
    with_errors = any(record.error_message for record in records)
    errors_column = with_errors and console.width >= WIDE_TABLE
    with_traces = any(record.trace_id for record in records)
    narrow_errors = with_errors and not errors_column
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
        expand=narrow_errors,
    )
    table.add_column("time (UTC)", no_wrap=True)
    # Narrow with errors: the message column holds the error line and takes what the other columns leave.
    table.add_column("message", no_wrap=True, overflow="ellipsis", ratio=1 if narrow_errors else None)
    table.add_column("status", no_wrap=True, overflow="ellipsis")
    table.add_column("conversation / id", no_wrap=True, overflow="ellipsis", max_width=20)
    if errors_column:
        table.add_column("error", ratio=1)
    if with_traces:
        table.add_column("trace", no_wrap=True)
    for record in records:
        when = short_time(record.timestamp)
        status = status_text(record.status)
        status.append(f"\n{seconds_text(record.delivery_seconds)}")
        if record.retry_count:
            status.append(f" {count_text(record.retry_count, 'retry')}", style="yellow")
        message = Text.assemble((record.message_type.value, "bold"), f"\n{record.from_agent} → {record.to_agent}")
        if record.error_message and not errors_column:
            message.append(f"\n{' '.join(record.error_message.split())}", style=error_style(record))
        cells: list[Any] = [
            f"{when[:10]}\n{when[11:]}",
            message,
            status,
            Text.assemble(record.correlation_id or "-", (f"\n{short_id(record.message_id)}", "dim")),
        ]
        if errors_column:
            cells.append(Text(record.error_message or "", style=error_style(record)))
        if with_traces:
            cells.append(trace_cell(record, link))
        table.add_row(*cells)
    return table


def key_value_table(rows: Iterable[tuple[str, Any]]) -> Table:
    """Two columns, name and value, no header."""
    table = Table(show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else str(value))
    return table


class RecordWriter:
    """Writes record documents to a text stream as JSON Lines or CSV (header first)."""

    def __init__(self, stream: IO[str], fmt: OutputFormat, name: str) -> None:
        self.stream = stream
        self.name = name
        self.csv = csv_writer(stream) if fmt is OutputFormat.CSV else None
        if self.csv is not None:
            self.write_header()

    def write_header(self) -> None:
        self._guarded(self.csv.writerow, RECORD_FIELDS)  # type: ignore[union-attr]

    def write(self, document: dict[str, Any]) -> None:
        if self.csv is not None:
            self._guarded(self.csv.writerow, [csv_value(document[name]) for name in RECORD_FIELDS])
        else:
            self._guarded(self.stream.write, json_line(document) + "\n")

    def _guarded(self, write: Any, value: Any) -> None:
        try:
            write(value)
        except BrokenPipeError:
            raise  # the reader went away (export | head): the command ends quietly (runner.run)
        except OSError as exc:  # disk full, unwritable file: the output's fault, not the database's
            raise CliError(f"cannot write {self.name}: {exc.strerror or exc}", EXIT_USAGE) from None
