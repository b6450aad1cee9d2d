"""``audit-plugin ingest``: drain a NATS JetStream stream of audit operations into a database."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

import typer

from audit_plugin.cli.options import DatabaseUrl
from audit_plugin.cli.output import print_json
from audit_plugin.cli.runner import EXIT_USAGE, CliError, open_trail, run
from audit_plugin.cli.values import whole_number
from audit_plugin.trail import DEFAULT_DATABASE_URL


def ingest(
    source: Annotated[
        str, typer.Option("--from", metavar="URL", help="The stream the producers publish to: nats://host:4222/STREAM.")
    ],
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    durable: Annotated[
        str,
        typer.Option("--durable", metavar="NAME", help="Consumer name; ingesters with the same name share the work."),
    ] = "audit-ingest",
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            metavar="N",
            parser=whole_number("--batch-size", minimum=1, maximum=10_000),
            help="Most operations per batch (1 to 10,000).",
        ),
    ] = 1000,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Stop once the stream is drained (for scripts and tests).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress line on stderr.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final counts as JSON on stdout.")] = False,
) -> None:
    """Store the audit operations producers published to a JetStream stream (nats:// trail URL).

    Runs until interrupted (or, with --exit-when-idle, until the stream is
    drained), printing a progress line (ingested, rate, pending) on stderr.
    Run as many as you like against one stream: they share the work.
    """
    try:
        from audit_plugin.jetstream.ingest import IngestStats, JetStreamIngester
    except ImportError:
        raise CliError('ingest needs the nats extra: pip install "audit-plugin[nats]"', EXIT_USAGE) from None

    def show(stats: IngestStats) -> None:
        if not quiet:
            print(f"\r{stats.line()}\x1b[K", end="", file=sys.stderr, flush=True)

    async def drain() -> None:
        async with open_trail(database_url, create=True) as trail:
            ingester = JetStreamIngester(source, trail, durable=durable, batch_size=batch_size)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, ingester.stop)
            stats = await ingester.run(exit_when_idle=exit_when_idle, on_progress=show)
        if not quiet:
            print(f"\r{stats.line()}\x1b[K", file=sys.stderr, flush=True)
        if as_json:
            print_json(
                {
                    "operations": stats.operations,
                    "records": stats.records,
                    "updates": stats.updates,
                    "redelivered": stats.redelivered,
                    "orphaned": stats.orphaned,
                    "refused": stats.refused,
                }
            )

    run(drain())
