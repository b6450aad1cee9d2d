"""``audit-plugin conversation ID``: a conversation as a reply tree.

The tree comes from ``reply_to`` links (request → responses → follow-ups).
A message whose ``reply_to`` is missing, or points outside the conversation,
starts a new branch; branches and replies are in chronological order, so a
conversation without any links reads as a plain timeline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from audit_plugin.cli.options import AsCsv, AsJson, DatabaseUrl
from audit_plugin.cli.output import (
    OutputFormat,
    TraceLinker,
    console,
    count_text,
    output_format,
    payload_summary,
    print_record_documents,
    record_document,
    record_headline,
    short_time,
    trace_linker,
)
from audit_plugin.cli.runner import EXIT_EMPTY, EXIT_USAGE, CliError, open_trail, run
from audit_plugin.messages import short_id
from audit_plugin.records import AuditRecord
from audit_plugin.trail import DEFAULT_DATABASE_URL, MessageAuditTrail

AMBIGUOUS_SHOWN = 5
"""How many matching ids an "ambiguous prefix" error lists."""


@dataclass(slots=True, eq=False)
class ThreadNode:
    record: AuditRecord
    replies: list[ThreadNode] = field(default_factory=list)


def build_thread(records: Sequence[AuditRecord]) -> list[ThreadNode]:
    """Roots of the reply tree of ``records`` (chronological), each with its replies.

    A link that would close a cycle is ignored, so every record appears exactly once.
    """
    ordered = sorted(records, key=lambda record: (record.timestamp, record.message_id))
    nodes = {record.message_id: ThreadNode(record) for record in ordered}
    parent_of: dict[str, ThreadNode] = {}
    roots: list[ThreadNode] = []
    for node in nodes.values():
        parent = nodes.get(node.record.reply_to or "")
        ancestor = parent
        while ancestor is not None and ancestor is not node:
            ancestor = parent_of.get(ancestor.record.message_id)
        if parent is None or ancestor is node:
            roots.append(node)
        else:
            parent.replies.append(node)
            parent_of[node.record.message_id] = parent
    return roots


def walk(roots: Sequence[ThreadNode]) -> Iterator[tuple[int, ThreadNode]]:
    """Depth-first, pre-order ``(depth, node)``: the order the tree is printed in."""
    stack = [(0, node) for node in reversed(roots)]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, reply) for reply in reversed(node.replies))


def node_label(record: AuditRecord, link: TraceLinker) -> Text:
    """A record's lines in the tree; each is cut with an ellipsis at the terminal's edge, never wrapped."""
    label = record_headline(record)
    label.no_wrap = True
    label.overflow = "ellipsis"
    label.append(f"\n{short_time(record.timestamp)[11:]}  {short_id(record.message_id)}  ", style="dim")
    label.append(payload_summary(record.payload, 50), style="italic")
    if record.error_message:
        label.append(f"\n{' '.join(record.error_message.split())}", style="red")
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


async def load_conversation(trail: MessageAuditTrail, conversation_id: str) -> tuple[str, list[AuditRecord]]:
    """The records of a conversation given its correlation id, the id of any message in it, or a unique prefix."""
    records = await trail.get_conversation_history(conversation_id)
    if records:
        return conversation_id, records
    message = await trail.get_message(conversation_id)
    if message is None:
        message_id, correlation_id = await resolve_prefix(trail, conversation_id)
        if correlation_id is not None:
            return correlation_id, await trail.get_conversation_history(correlation_id)
        message = await trail.get_message(message_id)
        assert message is not None  # it was just found
    if message.correlation_id is None:
        return message.message_id, [message]
    return message.correlation_id, await trail.get_conversation_history(message.correlation_id)


async def resolve_prefix(trail: MessageAuditTrail, prefix: str) -> tuple[str, str | None]:
    """``(message_id, correlation_id)`` of the one conversation a fragment of an id names; else a one-line error.

    A prefix of a correlation id names that conversation; a prefix of a
    message id, or its end (the short id tables show), names the message (its
    conversation is then shown). The fragment must name exactly one of them,
    as git asks of a commit-hash prefix.
    """
    found = await trail.find_ids(prefix, limit=AMBIGUOUS_SHOWN + 1)
    candidates = [*found.correlation_ids, *found.message_ids]
    if not candidates:
        raise CliError(f"no conversation or message with id {prefix!r} (or starting or ending with it)", EXIT_EMPTY)
    if len(candidates) > 1:
        shown = ", ".join(candidates[:AMBIGUOUS_SHOWN]) + (", ..." if len(candidates) > AMBIGUOUS_SHOWN else "")
        raise CliError(f"{prefix!r} is ambiguous: it matches {shown}; type more of the id", EXIT_USAGE)
    if found.correlation_ids:
        return "", found.correlation_ids[0]
    return found.message_ids[0], None


def print_thread(correlation_id: str, records: Sequence[AuditRecord], link: TraceLinker, fmt: OutputFormat) -> None:
    roots = build_thread(records)
    if fmt is OutputFormat.TABLE:
        title = f"Conversation {correlation_id} — {count_text(len(records), 'message')}"
        console.print(thread_tree(title, roots, link))
    else:
        print_record_documents(thread_documents(roots, link), fmt)


def conversation(
    conversation_id: Annotated[str, typer.Argument(metavar="ID", show_default=False, hidden=True)],
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
    write_file = html_writer() if html is not None else None

    async def show() -> None:
        async with open_trail(database_url) as trail:
            correlation_id, records = await load_conversation(trail, conversation_id)
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
