"""The pages: each reads through :class:`~audit_plugin.trail.MessageAuditTrail`'s public API and renders a template.

Handlers only read. Input arrives as query parameters and is turned into
typed values (:mod:`audit_plugin.web.filters`) before the trail sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from audit_plugin.exceptions import AmbiguousIdError, ChainError, InvalidFieldError, UnknownIdError
from audit_plugin.integrity.checkpoint import Checkpoint
from audit_plugin.model import validation as v
from audit_plugin.model.access import Reading
from audit_plugin.model.messages import MessageStatus
from audit_plugin.model.records import AuditQuery, AuditRecord
from audit_plugin.reading.ids import ConversationRef, find_conversation, find_message
from audit_plugin.reading.threads import build_thread, walk
from audit_plugin.storage.tree_log import ProofError
from audit_plugin.trail import MessageAuditTrail
from audit_plugin.web.access import audited, reading_of
from audit_plugin.web.agent_numbers import agent_numbers
from audit_plugin.web.diagram import MAX_DIAGRAM_MESSAGES, sequence_diagram
from audit_plugin.web.filters import parse_int, parse_search
from audit_plugin.web.rendering import render

HOME_CONVERSATIONS = 10
HOME_RECORDS = 20
HOME_SCAN = 200
"""Latest records scanned for the home page's latest conversations."""
AGENT_CAP = 2000
"""Most messages an agent page reads for its numbers (the newest of the period)."""
AGENT_DAYS = 1
"""The agent page's default period: the last day, per hour."""
AGENT_RECENT = 25
MAX_CONVERSATION_TABLE = 2000
LIVE_BACKLOG = 50
PARALLEL_READS = 4
"""Reads a page runs at once: below SQLAlchemy's default pool size (5), so no connection is opened per request."""

T = TypeVar("T")


def trail_of(request: Request) -> MessageAuditTrail:
    return request.app.state.trail  # type: ignore[no-any-return]


def required(request: Request, name: str) -> str:
    value = request.query_params.get(name, "")
    v.check_text(name, value)  # empty or unstorable text: a 400 naming the parameter
    return value


class NotFound(LookupError):
    """Nothing stored under what the URL names; shown as a 404 page."""


async def side_by_side(calls: list[Coroutine[Any, Any, T]], width: int = PARALLEL_READS) -> list[T]:
    """Await independent reads ``width`` at a time, results in order (more would open connections beyond the pool)."""
    gate = asyncio.Semaphore(width)

    async def gated(call: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(gated(call) for call in calls)))


@audited("home")
async def home(request: Request) -> Response:
    trail = trail_of(request)
    latest = await trail.query_messages(AuditQuery(limit=HOME_SCAN), actor=reading_of(request))
    newest: dict[str, AuditRecord] = {}
    for record in latest:
        if record.correlation_id is not None and len(newest) < HOME_CONVERSATIONS:
            newest.setdefault(record.correlation_id, record)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    counts = [AuditQuery(correlation_id=cid) for cid in newest]
    counts += [AuditQuery(correlation_id=cid, status=MessageStatus.FAILED) for cid in newest]
    counts += [AuditQuery(start_time=hour_ago, status=status) for status in MessageStatus]
    totals = await side_by_side([trail.count_messages(query) for query in counts])
    n = len(newest)
    conversations = [
        {
            "id": cid,
            "last": record,
            "total": totals[index],
            "failed": totals[n + index],
            "agents": sorted({r.from_agent for r in latest if r.correlation_id == cid} | {record.to_agent}),
        }
        for index, (cid, record) in enumerate(newest.items())
    ]
    last_hour = dict(zip([status.value for status in MessageStatus], totals[2 * n :], strict=True))
    return render(request, "home.html", conversations=conversations, records=latest[:HOME_RECORDS], last_hour=last_hour)


@audited("search")
async def search(request: Request) -> Response:
    parsed = parse_search(request.query_params)
    rows = await trail_of(request).query_messages(parsed.query, actor=reading_of(request))
    page, more = rows[: parsed.page_size], len(rows) > parsed.page_size
    path = request.url.path
    return render(
        request,
        "search.html",
        search=parsed,
        records=page,
        next_url=parsed.next_page_url(path, page[-1]) if more else None,
        first_url=parsed.first_page_url(path) if "cursor" in request.query_params else None,
        statuses=list(MessageStatus),
    )


async def first_records(
    trail: MessageAuditTrail, query: AuditQuery, most: int, reading: Reading | None = None
) -> list[AuditRecord]:
    """The oldest ``most`` records matching ``query``'s filters, streamed (a huge conversation is not loaded whole)."""
    records: list[AuditRecord] = []
    async with aclosing(trail.stream_messages(query, actor=reading)) as stream:
        async for record in stream:
            records.append(record)
            if len(records) == most:
                break
    return records


async def load_conversation(
    trail: MessageAuditTrail, found: ConversationRef, reading: Reading | None = None
) -> tuple[str, list[AuditRecord], int]:
    """The conversation ``found`` names: its id, its first :data:`MAX_CONVERSATION_TABLE` records (oldest first)
    and how many it has."""
    if found.lone is not None:
        return found.id, [found.lone], 1
    query = AuditQuery(correlation_id=found.id)
    records = await first_records(trail, query, MAX_CONVERSATION_TABLE, reading)
    total = len(records)
    if total == MAX_CONVERSATION_TABLE:
        total = await trail.count_messages(query)
    return found.id, records, total


def ambiguous(request: Request, exc: AmbiguousIdError) -> Response:
    """The page for an id that names several conversations or messages: each match, as a link."""
    return render(
        request,
        "ambiguous.html",
        status_code=300,
        fragment=exc.fragment,
        correlation_ids=exc.correlation_ids,
        message_ids=exc.message_ids,
        more=exc.more,
    )


def conversation_context(
    correlation_id: str, records: list[AuditRecord], *, standalone: bool, total: int | None = None
) -> dict[str, Any]:
    """What the conversation template needs (shared by the page and the self-contained file).

    In the self-contained file a message links to its details further down
    the same file; on the page, to its own page.
    """
    number = {record.message_id: index for index, record in enumerate(records, start=1)}
    hrefs = {
        r.message_id: f"#m-{number[r.message_id]}" if standalone else f"/message?{urlencode({'id': r.message_id})}"
        for r in records
    }
    agents = list(dict.fromkeys(a for r in records for a in (r.from_agent, r.to_agent)))
    failed = sum(r.status is MessageStatus.FAILED for r in records)
    return {
        "correlation_id": correlation_id,
        "records": records[:MAX_CONVERSATION_TABLE],
        "total": total if total is not None else len(records),
        "agents": agents,
        "failed": failed,
        "diagram": sequence_diagram(records),
        "diagram_capped": len(records) > MAX_DIAGRAM_MESSAGES,
        "max_diagram": MAX_DIAGRAM_MESSAGES,
        "thread": [(min(depth, 12), node.record) for depth, node in walk(build_thread(records))],
        "number": number,
        "hrefs": hrefs,
        "diagram_links": [hrefs[r.message_id] for r in records[:MAX_DIAGRAM_MESSAGES]],
        "standalone": standalone,
        "started": records[0].timestamp if records else None,
        "ended": records[-1].timestamp if records else None,
    }


@audited("conversation")
async def conversation(request: Request) -> Response:
    trail = trail_of(request)
    try:
        found = await find_conversation(trail, required(request, "id"), reading_of(request))
    except UnknownIdError as exc:
        raise NotFound(str(exc)) from None
    except AmbiguousIdError as exc:
        return ambiguous(request, exc)
    correlation_id, records, total = await load_conversation(trail, found, reading_of(request))
    context = conversation_context(correlation_id, records, standalone=False, total=total)
    return render(request, "conversation.html", **context)


@audited("message")
async def message(request: Request) -> Response:
    trail = trail_of(request)
    reading = reading_of(request)
    try:
        record = await find_message(trail, required(request, "id"), reading)
    except UnknownIdError as exc:
        raise NotFound(str(exc)) from None
    except AmbiguousIdError as exc:
        return ambiguous(request, exc)
    message_id = record.message_id
    steps = await trail.get_message_history(message_id)
    replies = []
    if record.correlation_id is not None:  # replies come later in the same conversation
        later = AuditQuery(correlation_id=record.correlation_id, start_time=record.timestamp)
        replies = [
            r for r in await first_records(trail, later, MAX_CONVERSATION_TABLE, reading) if r.reply_to == message_id
        ]
    return render(
        request,
        "message.html",
        record=record,
        steps=steps,
        trace_url=trail.trace_url(record),
        chain_id=trail.chain_id,
        replies=replies,
    )


@audited("agent")
async def agent(request: Request) -> Response:
    trail = trail_of(request)
    name = required(request, "name")
    days = AGENT_DAYS
    if request.query_params.get("days", "").strip():
        days = parse_int("days", request.query_params["days"], minimum=1, maximum=3650)
    records = await trail.get_agent_communication_history(name, days=days, limit=AGENT_CAP, actor=reading_of(request))
    numbers = agent_numbers(name, records, days=days, cap=AGENT_CAP)
    return render(request, "agent.html", numbers=numbers, days=days, records=records[:AGENT_RECENT])


@audited("live")
async def live(request: Request) -> Response:
    records = await trail_of(request).query_messages(AuditQuery(limit=LIVE_BACKLOG), actor=reading_of(request))
    return render(request, "live.html", records=records)


def checkpoint_of(request: Request) -> Checkpoint | None:
    text = request.query_params.get("checkpoint", "").strip()
    if not text:
        return None
    try:
        return Checkpoint.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidFieldError(
            "checkpoint", f"is not a checkpoint as `audit-plugin verify` writes it ({exc})"
        ) from None


@audited("integrity")
async def integrity(request: Request) -> Response:
    trail = trail_of(request)
    against = checkpoint_of(request)
    report = None
    if request.query_params.get("run") or against is not None:
        report = await trail.verify(against, actor=reading_of(request))
    head = await trail.checkpoint()
    return render(
        request,
        "integrity.html",
        head=head,
        signed=await signed_checkpoints(trail),
        report=report,
        against=against,
        checkpoint_text=request.query_params.get("checkpoint", ""),
    )


SIGNED_CHECKPOINTS_SHOWN = 20


async def signed_checkpoints(trail: MessageAuditTrail) -> list[Any]:
    """The newest stored signed checkpoints (none when the store keeps no Merkle trees)."""
    try:
        return await trail.tree_checkpoints(SIGNED_CHECKPOINTS_SHOWN)
    except ChainError:
        return []


@audited("prove")
async def proof(request: Request) -> Response:
    """A proof bundle of one message against the newest stored checkpoint, as a download (the viewer signs nothing).

    Auditors only: the bundle holds the record's payload as stored.
    """
    trail = trail_of(request)
    message_id = required(request, "id")
    try:
        bundle = await trail.prove(message_id, actor=reading_of(request))
    except ProofError as exc:
        raise NotFound(str(exc)) from None
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in message_id)[-64:]
    return Response(
        bundle.to_json(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}.proof.json"'},
    )
