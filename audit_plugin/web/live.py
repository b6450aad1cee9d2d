"""Server-sent events for the live page: each new record, and each status change, as a rendered table row.

The stream polls the store (an indexed query over the last
:data:`LOOKBACK` seconds) every ``interval`` seconds, the way
``audit-plugin tail`` does, so it works the same on SQLite and PostgreSQL.
Its first poll sends what is already in the window: the page replaces rows
it already shows (by message id), so nothing committed between the page's
render and the stream's start is missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import StreamingResponse

from audit_plugin.messages import MessageStatus
from audit_plugin.records import AuditQuery
from audit_plugin.trail import MessageAuditTrail
from audit_plugin.web.rendering import render_text

LOOKBACK = 60.0
"""Seconds after its creation a record (or its status change) still appears."""
MAX_PER_POLL = 500
"""Newest records looked at per poll (the page keeps 500 rows); older status changes in a busier window are skipped."""
KEEPALIVE = 15.0
"""Seconds between comment lines that keep proxies from closing an idle stream."""


async def record_events(trail: MessageAuditTrail, interval: float) -> AsyncIterator[str]:
    """``event: record`` messages, each a JSON ``{"id", "html"}``, as records appear or change."""
    seen: dict[str, tuple[MessageStatus, datetime]] = {}
    idle = 0.0
    yield "retry: 2000\n\n"
    while True:
        window_start = datetime.now(UTC) - timedelta(seconds=LOOKBACK)
        sent = False
        recent = await trail.query_messages(AuditQuery(start_time=window_start, limit=MAX_PER_POLL))
        for record in reversed(recent):  # oldest first: the page puts each new row on top
            known = seen.get(record.message_id)
            if known is not None and known[0] is record.status:
                continue
            seen[record.message_id] = (record.status, record.timestamp)
            html = " ".join(render_text("_live_row.html", record=record).split())
            yield f"event: record\ndata: {json.dumps({'id': record.message_id, 'html': html})}\n\n"
            sent = True
        for message_id in [key for key, (_, created) in seen.items() if created < window_start]:
            del seen[message_id]
        idle = 0.0 if sent else idle + interval
        if idle >= KEEPALIVE:
            idle = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(interval)


async def events(request: Request) -> StreamingResponse:
    stream = record_events(request.app.state.trail, request.app.state.live_interval)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
