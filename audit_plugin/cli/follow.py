"""``audit-plugin export --follow``: send the store's lifecycle entries, as they commit, to a log system.

The command line side of :mod:`audit_plugin.sinks.follow`: where to start
(the state file once it exists, else ``--from-sequence``, else the chain's
head now), stopping
cleanly on Ctrl-C or SIGTERM (the position is saved after every send), and
the export counters on stderr.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from audit_plugin.cli.output import ProgressLine
from audit_plugin.cli.runner import EXIT_USAGE, CliError, open_trail, reader_gone
from audit_plugin.cli.values import bad_value
from audit_plugin.exceptions import DestinationGoneError, InvalidFieldError
from audit_plugin.sinks.address import Address, parse_destination
from audit_plugin.sinks.delivery import ExportCounters, ExportStats, open_sender
from audit_plugin.sinks.follow import StateFile, follow_store

STDOUT = "jsonl:-"


def destination(value: Any) -> Any:
    """``--to``: a destination URL, checked before anything connects."""
    if not isinstance(value, str):
        return value
    try:
        return parse_destination(value, field_name="--to")
    except InvalidFieldError as exc:
        raise bad_value("--to", exc.reason) from None


async def follow_command(
    database_url: str,
    address: Address | None,
    *,
    state_path: Path | None,
    from_sequence: int | None,
    interval: float,
    exit_when_idle: bool,
    quiet: bool,
) -> None:
    """Run the follower until stopped (or idle); print the counters on stderr as it goes and at the end."""
    address = address if address is not None else parse_destination(STDOUT)
    try:
        sender = open_sender(address)
    except InvalidFieldError as exc:
        raise CliError(f"--to: {exc.reason}", EXIT_USAGE) from None
    counters = ExportCounters(address)
    progress = ProgressLine()

    def show(stats: ExportStats, position: int) -> None:
        if not quiet:
            progress.show(f"{address.display}: {stats.line()}, at entry {position:,}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with open_trail(database_url) as trail:
            state = StateFile(state_path) if state_path is not None else None
            try:
                saved = state.load(trail.chain_id) if state is not None else None
            except InvalidFieldError as exc:
                raise CliError(f"--state: {exc.reason}", EXIT_USAGE) from None
            start = saved if saved is not None else from_sequence
            if start is None:
                start = (await trail.checkpoint()).sequence  # from now on
            try:
                position = await follow_store(
                    trail,
                    sender,
                    counters,
                    after=start,
                    stop=stop,
                    state=state,
                    interval=interval,
                    exit_when_idle=exit_when_idle,
                    on_progress=show,
                )
            except DestinationGoneError:
                reader_gone()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await sender.close()
    if not quiet:
        progress.done(f"{address.display}: {counters.stats.line()}, at entry {position:,}")
