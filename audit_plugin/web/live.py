"""Server-sent events for the live page: each new record, and each status change, as a rendered table row.

The stream reads the store (an indexed query over the last
:data:`LOOKBACK` seconds) every ``interval`` seconds, the way
``audit-plugin tail`` does, so it sees every writer of the store, in any
process, on SQLite and PostgreSQL alike. When the viewer serves a trail
that also writes (``create_app(trail)`` in the application's own process),
each batch that trail commits (the ``audit_batch_committed`` hook) wakes
the stream at once instead of at the next tick. Its first read sends what
is already in the window: the page replaces rows it already shows (by
message id), so nothing committed between the page's render and the
stream's start is missed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse

from audit_plugin.hookspecs import hookimpl
from audit_plugin.model.access import Reading
from audit_plugin.model.messages import MessageStatus
from audit_plugin.model.records import AuditQuery
from audit_plugin.trail import MessageAuditTrail
from audit_plugin.web.access import actor_of
from audit_plugin.web.rendering import render_text

LOOKBACK = 60.0
"""Seconds after its creation a record (or its status change) still appears."""
MAX_PER_POLL = 500
"""Newest records looked at per poll (the page keeps 500 rows); older status changes in a busier window are skipped."""
RECORD_EVERY = 60.0
"""Seconds between the access entries of a live stream that keeps sending rows."""
KEEPALIVE = 15.0
"""Seconds between comment lines that keep proxies from closing an idle stream."""


class CommitSignal:
    """Wakes the live streams when the served trail commits a batch (an ``audit_batch_committed`` implementation)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiting: set[asyncio.Event] = set()
        self.commits = 0
        """Batches committed so far: a stream that saw this number before its read misses no commit after it."""

    @hookimpl
    def audit_batch_committed(self, batch: object) -> None:
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self.commits += 1
        for event in self._waiting:
            event.set()

    async def wait(self, timeout: float, seen: int | None = None) -> None:
        """Return at the next commit, or after ``timeout`` seconds; at once if one came since ``seen`` commits."""
        if seen is not None and self.commits != seen:
            return
        event = asyncio.Event()
        self._waiting.add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiting.discard(event)


async def record_events(
    trail: MessageAuditTrail,
    interval: float,
    commits: CommitSignal | None = None,
    reading: Reading | None = None,
    record_reads: bool = False,
) -> AsyncIterator[str]:
    """``event: record`` messages, each a JSON ``{"id", "html"}``, as records appear or change.

    Read as ``reading``'s actor; the rows sent are gathered in ``reading``
    and, with ``record_reads``, recorded as an access entry at once, then at
    most every :data:`RECORD_EVERY` seconds, and when the stream ends.
    """
    seen: dict[str, tuple[MessageStatus, datetime]] = {}
    idle = 0.0
    recorded_at = -RECORD_EVERY
    yield "retry: 2000\n\n"
    try:
        while True:
            seen_commits = commits.commits if commits is not None else None
            window_start = datetime.now(UTC) - timedelta(seconds=LOOKBACK)
            sent: list[str] = []
            poll = None if reading is None else Reading(reading.actor, "live", listed=MAX_PER_POLL)
            recent = await trail.query_messages(AuditQuery(start_time=window_start, limit=MAX_PER_POLL), actor=poll)
            for record in reversed(recent):  # oldest first: the page puts each new row on top
                known = seen.get(record.message_id)
                if known is not None and known[0] is record.status:
                    continue
                seen[record.message_id] = (record.status, record.timestamp)
                html = " ".join(render_text("_live_row.html", record=record).split())
                yield f"event: record\ndata: {json.dumps({'id': record.message_id, 'html': html})}\n\n"
                sent.append(record.message_id)
            if reading is not None and poll is not None and sent:
                shown = set(sent)
                reading.note(sent, [message_id for message_id in poll.decrypted_ids if message_id in shown])
            due = record_reads and reading is not None and time.monotonic() - recorded_at >= RECORD_EVERY
            if due and reading is not None and await trail.record_access(reading) is not None:
                recorded_at = time.monotonic()
            for message_id in [key for key, (_, created) in seen.items() if created < window_start]:
                del seen[message_id]
            idle = 0.0 if sent else idle + interval
            if idle >= KEEPALIVE:
                idle = 0.0
                yield ": keep-alive\n\n"
            if commits is None:
                await asyncio.sleep(interval)
            else:
                await commits.wait(interval, seen_commits)
    finally:
        if record_reads and reading is not None:
            with anyio.CancelScope(shield=True):  # the client went away: what it was sent is still recorded
                await trail.record_access(reading)


async def events(request: Request) -> StreamingResponse:
    state = request.app.state
    reading = Reading(actor_of(request), "live")
    stream = record_events(state.trail, state.live_interval, state.commits, reading, state.record_reads)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
