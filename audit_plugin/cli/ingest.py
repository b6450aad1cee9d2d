"""``audit-plugin ingest``: drain a NATS JetStream stream of audit operations into a database."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from audit_plugin.cli.options import DatabaseUrl, json_option
from audit_plugin.cli.output import ProgressLine, print_json
from audit_plugin.cli.runner import EXIT_USAGE, CliError, open_trail, run
from audit_plugin.cli.values import shard_list, whole_number
from audit_plugin.integrity.shards import MAX_SHARDS
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
    shards: Annotated[
        tuple[int, ...] | None,
        typer.Option(
            "--shards",
            metavar="LIST",
            parser=shard_list("--shards", limit=MAX_SHARDS),
            help="The shards this ingester owns, e.g. 0-3 or 0,2 (default: all the stream's).",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            metavar="N",
            parser=whole_number("--batch-size", minimum=1, maximum=100_000),
            help="About how many operations to fetch and write at once (1 to 100,000).",
        ),
    ] = 5000,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Stop once the stream is drained (for scripts and tests).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress line on stderr.")] = False,
    as_json: json_option("Print the final counts as JSON on stdout.") = False,
) -> None:
    """Store the audit operations producers published to a JetStream stream (nats:// trail URL).

    Runs until interrupted (or, with --exit-when-idle, until the stream is
    drained), printing a progress line (ingested, rate, pending) on stderr:
    redrawn on a terminal, a plain line every 10 seconds in a log.
    Run as many as you like against one stream: on a sharded stream give
    each its own --shards, so their writes never wait for each other.
    """
    try:
        from audit_plugin.jetstream.ingest import IngestStats, JetStreamIngester, stream_shard_count
    except ImportError:
        raise CliError('ingest needs the nats extra: pip install "audit-plugin[nats]"', EXIT_USAGE) from None

    progress = ProgressLine()

    def show(stats: IngestStats) -> None:
        if not quiet:
            progress.show(stats.line())

    async def drain() -> None:
        count = await stream_shard_count(source)
        async with open_trail(database_url, create=True, shards=count, batch_size=batch_size) as trail:
            ingester = JetStreamIngester(source, trail, durable=durable, shards=shards, batch_size=batch_size)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, ingester.stop)
            stats = await ingester.run(exit_when_idle=exit_when_idle, on_progress=show)
        if not quiet:
            progress.done(stats.line())
        if as_json:
            print_json(
                {
                    "operations": stats.operations,
                    "records": stats.records,
                    "updates": stats.updates,
                    "redelivered": stats.redelivered,
                    "orphaned": stats.orphaned,
                    "quarantined": stats.quarantined,
                    "messages": stats.messages,
                }
            )

    run(drain())
