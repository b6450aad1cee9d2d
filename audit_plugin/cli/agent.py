"""``audit-plugin agent NAME``: an agent's recent traffic and its own numbers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.table import Table

from audit_plugin.cli.options import AsCsv, AsJson, CliReader, DatabaseUrl, days_back, reading_as
from audit_plugin.cli.output import (
    OutputFormat,
    console,
    count_text,
    output_format,
    print_json,
    print_record_documents,
    records_table,
    seconds_text,
    status_text,
    trace_linker,
)
from audit_plugin.cli.runner import EXIT_EMPTY, CliError, open_trail, run
from audit_plugin.cli.values import whole_number
from audit_plugin.model.access import Reading
from audit_plugin.model.messages import MessageStatus
from audit_plugin.model.records import AuditQuery
from audit_plugin.sinks.documents import record_document
from audit_plugin.trail import DEFAULT_DATABASE_URL, MessageAuditTrail

TOP_PEERS = 5


@dataclass(slots=True)
class Direction:
    """Counts for the messages an agent sent, or those it received."""

    by_status: Counter[str] = field(default_factory=Counter)
    peers: Counter[str] = field(default_factory=Counter)
    latency_total: float = 0.0
    delivered: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def mean_latency(self) -> float | None:
        return self.latency_total / self.delivered if self.delivered else None

    def document(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_status": dict(self.by_status),
            "mean_delivery_seconds": self.mean_latency,
            "top_peers": [{"agent": peer, "messages": n} for peer, n in self.peers.most_common(TOP_PEERS)],
        }


async def tally(trail: MessageAuditTrail, query: AuditQuery, peer_of: str, reading: Reading | None = None) -> Direction:
    """Count a direction over every matching record, streaming (flat memory on a busy agent)."""
    direction = Direction()
    async for record in trail.stream_messages(query, actor=reading):
        direction.by_status[record.status.value] += 1
        direction.peers[getattr(record, peer_of)] += 1
        if record.delivery_seconds is not None:
            direction.delivered += 1
            direction.latency_total += record.delivery_seconds
    return direction


def numbers_table(name: str, days: int, sent: Direction, received: Direction) -> Table:
    table = Table(title=f"{name}: last {count_text(days, 'day')}", title_justify="left")
    table.add_column("")
    table.add_column("sent", justify="right")
    table.add_column("received", justify="right")
    table.add_row("messages", f"{sent.total:,}", f"{received.total:,}")
    for status in MessageStatus:
        counts = (direction.by_status.get(status.value, 0) for direction in (sent, received))
        table.add_row(status_text(status), *(f"{count:,}" for count in counts))
    table.add_row("mean latency", seconds_text(sent.mean_latency), seconds_text(received.mean_latency))
    table.add_row(
        "top peers",
        *("\n".join(f"{peer} {n:,}" for peer, n in d.peers.most_common(TOP_PEERS)) for d in (sent, received)),
    )
    return table


@reading_as("agent")
def agent(
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False, hidden=True)],
    reader: CliReader,
    days: Annotated[
        int, typer.Option("--days", metavar="N", parser=whole_number("--days", minimum=0), help="How many days back.")
    ] = 7,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            metavar="N",
            parser=whole_number("--limit", minimum=1, maximum=100_000),
            help="Recent messages to list (1 to 100,000).",
        ),
    ] = 20,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
) -> None:
    """An agent's recent messages (sent and received) and its numbers over the period.

    NAME is the agent id, as in the tables' "message" column.
    """
    fmt = output_format(as_json, as_csv)

    async def show() -> None:
        since = days_back("--days", days)
        async with open_trail(database_url, reader=reader) as trail:
            reading = reader.reading
            recent = await trail.get_agent_communication_history(name, days=days, limit=limit, actor=reading)
            sent = await tally(trail, AuditQuery(from_agent=name, start_time=since), "to_agent", reading)
            received = await tally(trail, AuditQuery(to_agent=name, start_time=since), "from_agent", reading)
            link = trace_linker(trail)
        if not recent:
            raise CliError(f"no messages from or to agent {name!r} in the last {count_text(days, 'day')}", EXIT_EMPTY)
        documents = [record_document(record, link(record)) for record in recent]
        if fmt is OutputFormat.JSON:
            print_json(
                {
                    "agent": name,
                    "days": days,
                    "sent": sent.document(),
                    "received": received.document(),
                    "recent": documents,
                }
            )
        elif fmt is OutputFormat.CSV:
            print_record_documents(documents, fmt)
        else:
            console.print(numbers_table(name, days, sent, received))
            console.print(
                records_table(recent, link, title=f"Latest {count_text(len(recent), 'message')}, newest first")
            )

    run(show())
