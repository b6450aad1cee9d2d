"""``audit-plugin demo``: run the scripted conversation, then show its thread and the statistics."""

from __future__ import annotations

import os
import shlex

from rich.text import Text

from audit_plugin.cli.conversation import print_thread, thread_documents
from audit_plugin.cli.demo_scenario import run_demo
from audit_plugin.cli.options import DATABASE_URL_ENV, AsCsv, AsJson, DatabaseUrl
from audit_plugin.cli.output import OutputFormat, console, output_format, print_json, trace_linker
from audit_plugin.cli.runner import display_url, open_trail, run
from audit_plugin.cli.stats import gather_report, report_document, statistics_renderables
from audit_plugin.reading.threads import build_thread
from audit_plugin.trail import DEFAULT_DATABASE_URL


def next_commands(correlation_id: str, database_url: str) -> list[str]:
    """Commands to try after the demo, each on the same database and whole on its own line.

    They carry ``--database-url`` unless it is the default or comes from
    ``AUDIT_DATABASE_URL`` (then the next command finds it there too); a
    password in it is shown as ``***``.
    """
    implicit = database_url in (DEFAULT_DATABASE_URL, os.environ.get(DATABASE_URL_ENV))
    where = "" if implicit else f" --database-url {shlex.quote(display_url(database_url))}"
    return [
        f"audit-plugin conversation {correlation_id}{where}",
        f"audit-plugin query --status failed{where}",
        f"audit-plugin stats{where}",
        f"audit-plugin tail{where}",
    ]


def demo(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
) -> None:
    """Run a short audited multi-agent conversation and show what the trail recorded.

    A planner asks two workers, they reply, one handler fails once and is
    retried, one message expires by TTL and one fails for good. Safe to run
    again on the same database: each run is a new conversation.
    """
    fmt = output_format(as_json, as_csv)

    async def show() -> None:
        async with open_trail(database_url, create=True) as trail:
            demo_run = await run_demo(trail)
            records = await trail.get_conversation_history(demo_run.correlation_id)
            report = await gather_report(trail, None, None, with_volume=False)
            link = trace_linker(trail)
        if fmt is OutputFormat.JSON:
            print_json(
                {
                    "database_url": display_url(database_url),
                    "correlation_id": demo_run.correlation_id,
                    "conversation": thread_documents(build_thread(records), link),
                    "statistics": report_document(report),
                }
            )
            return
        if fmt is OutputFormat.CSV:
            print_thread(demo_run.correlation_id, records, link, fmt)
            return
        console.print(
            Text.assemble(
                ("Audited a multi-agent conversation into ", ""),
                (display_url(database_url), "bold"),
                "\n",
            )
        )
        print_thread(demo_run.correlation_id, records, link, fmt)
        console.print()
        for renderable in statistics_renderables(report):
            console.print(renderable)
        console.print(Text("\nNext:", style="bold"))
        for command in next_commands(demo_run.correlation_id, database_url):
            console.print(Text(f"  {command}", style="dim"), soft_wrap=True)

    run(show())
