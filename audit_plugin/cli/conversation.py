"""``audit-plugin conversation ID``: a conversation as a reply tree (see :mod:`audit_plugin.reading.threads`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from audit_plugin.cli.options import AsCsv, AsJson, CliReader, DatabaseUrl, reading_as
from audit_plugin.cli.output import (
    OutputFormat,
    TraceLinker,
    console,
    count_text,
    error_style,
    output_format,
    payload_summary,
    print_record_documents,
    record_headline,
    short_time,
    trace_linker,
)
from audit_plugin.cli.runner import EXIT_USAGE, CliError, open_trail, run
from audit_plugin.model.access import Reading
from audit_plugin.model.messages import short_id
from audit_plugin.model.records import AuditRecord
from audit_plugin.reading.ids import find_conversation
from audit_plugin.reading.threads import ThreadNode, build_thread, walk
from audit_plugin.sinks.documents import record_document
from audit_plugin.trail import DEFAULT_DATABASE_URL, MessageAuditTrail


def node_label(record: AuditRecord, link: TraceLinker) -> Text:
    """A record's lines in the tree; each is cut with an ellipsis at the terminal's edge, never wrapped."""
    label = record_headline(record)
    label.no_wrap = True
    label.overflow = "ellipsis"
    label.append(f"\n{short_time(record.timestamp)[11:]}  {short_id(record.message_id)}  ", style="dim")
    label.append(payload_summary(record.payload, 50), style="italic")
    if record.error_message:
        label.append(f"\n{' '.join(record.error_message.split())}", style=error_style(record))
    url = link(record)
    if url:
        label.append("\ntrace ", style="dim")
        label.append(url, style=f"link {url}")
    return label


def thread_tree(title: str, roots: Sequence[ThreadNode], link: TraceLinker) -> Tree:
    tree = Tree(Text(title, style="bold"), guide_style="dim")
    branches = [tree]  # branches[depth] is where a node of that depth is added
    for depth, node in walk(roots):
        del branches[depth + 1 :]
        branches.append(branches[depth].add(node_label(node.record, link)))
    return tree


def thread_documents(roots: Sequence[ThreadNode], link: TraceLinker) -> list[dict[str, Any]]:
    """The tree flattened in print order: each record document with its ``depth`` (0 = starts a branch)."""
    return [{"depth": depth, **record_document(node.record, link(node.record))} for depth, node in walk(roots)]


async def load_conversation(
    trail: MessageAuditTrail, conversation_id: str, reading: Reading | None = None
) -> tuple[str, list[AuditRecord]]:
    """The records of the conversation ``conversation_id`` names (see :mod:`audit_plugin.reading.ids`)."""
    found = await find_conversation(trail, conversation_id, reading)
    if found.lone is not None:
        return found.id, [found.lone]
    return found.id, await trail.get_conversation_history(found.id, actor=reading)


def print_thread(correlation_id: str, records: Sequence[AuditRecord], link: TraceLinker, fmt: OutputFormat) -> None:
    roots = build_thread(records)
    if fmt is OutputFormat.TABLE:
        title = f"Conversation {correlation_id} — {count_text(len(records), 'message')}"
        console.print(thread_tree(title, roots, link))
    else:
        print_record_documents(thread_documents(roots, link), fmt)


@reading_as("conversation")
def conversation(
    conversation_id: Annotated[str, typer.Argument(metavar="ID", show_default=False, hidden=True)],
    reader: CliReader,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Write the web view's conversation page (diagram, reply tree, table, payloads) as one "
            "self-contained HTML file instead (needs audit-plugin[web]).",
        ),
    ] = None,
) -> None:
    """Show a conversation as a reply tree, with status, latency and agents per message.

    ID is the conversation's correlation id or the id of any message in it;
    a unique prefix of either (the short ids tables print) is enough.
    """
    fmt = output_format(as_json, as_csv)
    if html is not None:
        reader.require(reader.role.may_export, "export a conversation as a file")
    write_file = html_writer() if html is not None else None

    async def show() -> None:
        async with open_trail(database_url, reader=reader) as trail:
            correlation_id, records = await load_conversation(trail, conversation_id, reader.reading)
            if write_file is None:
                print_thread(correlation_id, records, trace_linker(trail), fmt)
                return
            assert html is not None
            try:
                html.write_text(write_file(trail, correlation_id, records), encoding="utf-8")
            except OSError as exc:
                raise CliError(f"cannot write {html}: {exc.strerror or exc}", EXIT_USAGE) from None
            console.print(f"wrote conversation {correlation_id} ({len(records)} messages) to {html}")

    run(show())


def html_writer() -> Any:
    """The web extra's self-contained page writer, or a clear error when the extra is not installed."""
    try:
        from audit_plugin.web.export import conversation_file
    except ImportError as exc:
        raise CliError(
            f"--html needs the web extra ({exc.name} is missing): pip install 'audit-plugin[web]'", EXIT_USAGE
        ) from None
    return conversation_file
