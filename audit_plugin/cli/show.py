"""``audit-plugin show ID`` (or ``message ID``): one record, its lifecycle, its place in the conversation and chain."""

from __future__ import annotations

import json
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from audit_plugin.cli.options import AsJson, DatabaseUrl
from audit_plugin.cli.output import (
    FINAL_FAILURES,
    STATUS_STYLES,
    OutputFormat,
    console,
    count_text,
    error_style,
    output_format,
    print_json,
    record_headline,
    seconds_text,
    short_time,
)
from audit_plugin.cli.runner import open_trail, run
from audit_plugin.exceptions import ChainError
from audit_plugin.model.lifecycle import LifecycleStep
from audit_plugin.model.messages import MessageStatus, short_id
from audit_plugin.model.records import AuditQuery, AuditRecord
from audit_plugin.reading.ids import find_message
from audit_plugin.sinks.documents import iso_time, record_document
from audit_plugin.trail import DEFAULT_DATABASE_URL, MessageAuditTrail

MAX_REPLIES_SCANNED = 2000
"""Most later records of the conversation read to find the record's replies."""


@dataclass(frozen=True, slots=True)
class RecordView:
    """What ``show`` prints of one record."""

    record: AuditRecord
    steps: list[LifecycleStep] | None
    """The lifecycle, oldest first; ``None`` when the store keeps none."""
    chain_id: str
    replies: list[AuditRecord]
    trace_url: str | None


def step_name(step: LifecycleStep) -> str:
    """``recorded``, ``retry 2``, ``status change`` or ``late report (kept, not applied)``."""
    if step.kind == "record":
        return "recorded"
    if step.kind == "late":
        return "late report (kept, not applied)"
    if step.retry_count and step.status is MessageStatus.PENDING:
        return f"retry {step.retry_count}"
    return "status change"


async def replies_to(trail: MessageAuditTrail, record: AuditRecord) -> list[AuditRecord]:
    """The records replying to ``record`` (they come later in its conversation)."""
    if record.correlation_id is None:
        return []
    later = AuditQuery(correlation_id=record.correlation_id, start_time=record.timestamp)
    replies = []
    async with aclosing(trail.stream_messages(later)) as records:  # type: ignore[type-var]
        scanned = 0
        async for candidate in records:
            if candidate.reply_to == record.message_id:
                replies.append(candidate)
            scanned += 1
            if scanned == MAX_REPLIES_SCANNED:
                break
    return replies


async def load_view(trail: MessageAuditTrail, text: str) -> RecordView:
    record = await find_message(trail, text)
    try:
        steps: list[LifecycleStep] | None = await trail.get_message_history(record.message_id)
    except ChainError:
        steps = None
    return RecordView(record, steps, trail.chain_id, await replies_to(trail, record), trail.trace_url(record))


def step_document(step: LifecycleStep) -> dict[str, Any]:
    return {
        "sequence": step.sequence,
        "kind": step.kind,
        "step": step_name(step),
        "status": step.status.value,
        "at": iso_time(step.at),
        "retry_count": step.retry_count,
        "error_message": step.error,
        "delivered_at": iso_time(step.delivered_at),
        "seconds": step.seconds,
        "operation_id": step.operation_id,
    }


def view_document(view: RecordView) -> dict[str, Any]:
    """``--json``: the record (export format), its lifecycle, its chain and its replies."""
    return {
        "record": record_document(view.record, view.trace_url),
        "lifecycle": None if view.steps is None else [step_document(step) for step in view.steps],
        "chain_id": view.chain_id,
        "replies": [reply.message_id for reply in view.replies],
    }


def fields_grid(view: RecordView) -> Table:
    record = view.record
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    delivered = "-"
    if record.delivered_at is not None:
        delivered = f"{short_time(record.delivered_at)} UTC ({seconds_text(record.delivery_seconds)})"
    rows: list[tuple[str, str | Text]] = [
        ("id", record.message_id),
        ("created", f"{short_time(record.timestamp)} UTC"),
        ("delivered", delivered),
        ("priority", record.priority.value),
        ("time to live", "-" if record.ttl_seconds is None else f"{record.ttl_seconds} s"),
        ("retries", str(record.retry_count)),
        ("conversation", record.correlation_id or "-"),
        ("reply to", record.reply_to or "-"),
        (
            "replies",
            "\n".join(
                f"{short_id(r.message_id)}  {r.message_type.value} {r.from_agent} → {r.to_agent}" for r in view.replies
            )
            or "-",
        ),
    ]
    if record.error_message:
        final = record.status in FINAL_FAILURES
        rows.append(("error" if final else "last retry error", Text(record.error_message, error_style(record))))
    trace = Text(record.trace_id or "not traced (sent without a sampled span)")
    if view.trace_url:
        trace.append("\n")
        trace.append(view.trace_url, style=f"link {view.trace_url}")
    rows.append(("trace", trace))
    if record.span_id:
        rows.append(("span", record.span_id))
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def lifecycle_table(view: RecordView) -> Table | Text:
    if view.steps is None:
        return Text("No lifecycle: this store keeps none.", style="dim")
    if not view.steps:
        return Text("No lifecycle entries (written before the lifecycle was kept, or removed by retention).", "dim")
    table = Table(title=f"Lifecycle, in hash chain {view.chain_id!r}", title_justify="left", show_edge=False)
    table.add_column("entry", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("then", justify="right", no_wrap=True)
    table.add_column("error", overflow="fold")
    for step in view.steps:
        table.add_row(
            f"#{step.sequence}",
            short_time(step.at),
            step_name(step),
            Text(step.status.value, style=STATUS_STYLES.get(step.status, "")),
            "" if step.seconds is None else seconds_text(step.seconds),
            Text(step.error or "", style="red" if step.kind != "record" else ""),
        )
    return table


def print_view(view: RecordView) -> None:
    record = view.record
    headline = record_headline(record)
    headline.append(f"  {short_time(record.timestamp)}", style="dim")
    entries = "" if not view.steps else f", {count_text(len(view.steps), 'entry')} in the hash chain"
    payload = Text(json.dumps(record.payload, indent=2, ensure_ascii=False), style="italic")
    console.print(
        Group(
            Text(f"Message {short_id(record.message_id)}{entries}", style="bold"),
            headline,
            fields_grid(view),
            Text(""),
            lifecycle_table(view),
            Text(""),
            Text("payload", style="bold"),
            payload,
        )
    )


def show(
    message_id: Annotated[str, typer.Argument(metavar="ID", show_default=False, hidden=True)],
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
) -> None:
    """Show one record: its fields, its lifecycle with every retry and late report, its replies, its trace link.

    ID is a message id, a unique start of one, or the last 8 characters tables print.
    """
    fmt = output_format(as_json, False)

    async def load() -> None:
        async with open_trail(database_url) as trail:
            view = await load_view(trail, message_id)
        if fmt is OutputFormat.JSON:
            print_json(view_document(view))
        else:
            print_view(view)

    run(load())
