"""Following the store from another process: the chain's entries, in order, from a remembered position.

What ``audit-plugin export --follow`` runs. It reads the store, not a
writer's hook, so it sees every writer of the database (the application's
processes, JetStream ingesters) and nothing it has not sent is lost when it
stops: the chain numbers its entries without gaps in commit order, the
follower asks for the entries after the last one the destination took, and
writes that sequence number to its state file after every send. Restarted
with the same state file it resumes there; nothing is missed and, but for a
send interrupted half-way, nothing is sent twice.

The store is the buffer: while the destination is down the follower waits
(retrying with backoff) and reads nothing more, so it drops nothing. Only
retention can take entries away before they were read; that gap is counted
as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.sinks.delivery import Backoff, ExportCounters, ExportStats, Sender, deliver
from audit_plugin.sinks.documents import chunks, entry_documents
from audit_plugin.trail import MessageAuditTrail

log = logging.getLogger(__name__)

PAGE = 1000
"""Entries read from the store per query."""


@dataclass(frozen=True, slots=True)
class StateFile:
    """Where a follower keeps its position: ``{"chain_id": ..., "sequence": N}``, replaced atomically."""

    path: Path

    def load(self, chain_id: str) -> int | None:
        """The sequence number last sent, or ``None`` if the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InvalidFieldError("state", f"{self.path} cannot be read: {exc.strerror or exc}") from None
        try:
            state = json.loads(text)
            sequence = state["sequence"]
            stored_chain = state["chain_id"]
        except (ValueError, TypeError, KeyError):
            raise InvalidFieldError("state", f"{self.path} is not a follower's state file") from None
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            raise InvalidFieldError("state", f"{self.path} holds no sequence number")
        if stored_chain != chain_id:
            raise InvalidFieldError("state", f"{self.path} follows chain {stored_chain!r}, not {chain_id!r}")
        return sequence

    def save(self, chain_id: str, sequence: int) -> None:
        """Write the position so that a crash leaves the old file or the new one, never half of one."""
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "w", encoding="utf-8") as stream:
            json.dump({"chain_id": chain_id, "sequence": sequence}, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, self.path)


Progress = Callable[[ExportStats, int], None]


async def follow_store(
    trail: MessageAuditTrail,
    sender: Sender,
    counters: ExportCounters,
    *,
    after: int,
    stop: asyncio.Event,
    state: StateFile | None = None,
    interval: float = 1.0,
    chunk: int = 500,
    backoff: Backoff | None = None,
    exit_when_idle: bool = False,
    on_progress: Progress | None = None,
) -> int:
    """Send the trail's chain entries numbered above ``after``, in order, until ``stop`` is set; return the position.

    Polls every ``interval`` seconds once caught up (``exit_when_idle``:
    returns then instead). The position (the last sequence the destination
    took) goes to ``state`` after every send.
    """
    backoff = backoff or Backoff()
    position = after
    while not stop.is_set():
        pairs = await trail.lifecycle_entries(position, limit=PAGE)
        if not pairs:
            if exit_when_idle:
                break
            if on_progress is not None:
                on_progress(counters.stats, position)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            continue
        first = pairs[0][0].sequence
        if position and first > position + 1:
            counters.dropped(first - position - 1, f"retention pruned {position + 1}-{first - 1} before they were read")
        documents = entry_documents(pairs, trail.trace_url)
        for part in chunks(documents, chunk):
            if not await deliver(sender, part, counters, backoff, stop):
                return position  # stopped while the destination was down: resume from here
            position = part[-1]["sequence"]
            if state is not None:
                state.save(trail.chain_id, position)
        if on_progress is not None:
            on_progress(counters.stats, position)
    return position
