"""The documents the trail is exported as: one per record (export format 1), one per lifecycle entry (events).

A **record document** is the flat JSON object ``audit-plugin export``,
``query --json`` and the CSV outputs write (docs/cli.md, "Export format").

An **event document** is what the sinks send, one per lifecycle entry of
the hash chain, in chain order (docs/sinks.md, "The event document")::

    {"event": "record", "chain_id": "default", "sequence": 17, "at": "...Z",
     "message_id": "...", "status": "PENDING", "retry_count": 0, "error_message": null,
     "delivered_at": null, "operation_id": null, "entry_hash": "...",
     "record": {...the record document as of this entry...}}

``record`` is present (not null) on ``"record"`` events only; its status,
delivery time, retries and error are the entry's (what was recorded then),
so the in-process sink (fed by the ``audit_batch_committed`` hook) and
``export --follow`` (reading the store later) send the same document for the
same entry. Payloads encrypted at rest are never decrypted for export: they
go out as the marker ``{"$audit": "encrypted", "kid": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from audit_plugin.integrity.ledger import ChainEntry
from audit_plugin.model.markers import MARKER_KEY
from audit_plugin.model.records import AuditRecord, StatusUpdate

if TYPE_CHECKING:
    from audit_plugin.storage.committed import CommittedBatch

RECORD_FIELDS: tuple[str, ...] = (
    "message_id",
    "correlation_id",
    "reply_to",
    "from_agent",
    "to_agent",
    "message_type",
    "priority",
    "status",
    "timestamp",
    "delivered_at",
    "delivery_seconds",
    "ttl_seconds",
    "retry_count",
    "error_message",
    "trace_id",
    "span_id",
    "trace_url",
    "payload",
)
"""Fields of a record document, in CSV column order (the export format, version 1)."""

EVENT_FIELDS: tuple[str, ...] = (
    "event",
    "chain_id",
    "sequence",
    "at",
    "message_id",
    "status",
    "retry_count",
    "error_message",
    "delivered_at",
    "operation_id",
    "entry_hash",
    "record",
)
"""Fields of an event document, in order (event format, version 1)."""


def iso_time(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with microseconds and a ``Z`` suffix (what SIEM timestamp parsers expect).

    ``moment`` is UTC, as the trail returns every time.
    """
    if moment is None:
        return None
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def json_line(document: dict[str, Any]) -> str:
    """A document as one line of compact JSON (UTF-8 text as itself, no trailing newline)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def record_document(record: AuditRecord, trace_url: str | None = None) -> dict[str, Any]:
    """One record as a flat JSON-ready dict with :data:`RECORD_FIELDS`, in that order."""
    return {
        "message_id": record.message_id,
        "correlation_id": record.correlation_id,
        "reply_to": record.reply_to,
        "from_agent": record.from_agent,
        "to_agent": record.to_agent,
        "message_type": record.message_type.value,
        "priority": record.priority.value,
        "status": record.status.value,
        "timestamp": iso_time(record.timestamp),
        "delivered_at": iso_time(record.delivered_at),
        "delivery_seconds": record.delivery_seconds,
        "ttl_seconds": record.ttl_seconds,
        "retry_count": record.retry_count,
        "error_message": record.error_message,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "trace_url": trace_url,
        "payload": record.payload,
    }


def exported_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload``, or for one encrypted at rest (an envelope with its ciphertext) the marker naming its key only."""
    if payload.get(MARKER_KEY) == "encrypted" and "ct" in payload:
        return {MARKER_KEY: "encrypted", "kid": payload.get("kid")}
    return payload


def event_document(entry: ChainEntry, record: AuditRecord | None, trace_url: str | None = None) -> dict[str, Any]:
    """The event document of one lifecycle entry; ``record``: the entry's record, for a ``"record"`` entry.

    The record document carries the lifecycle fields the entry holds (its
    status, delivery time, retries and error when it was committed), and an
    encrypted payload as its marker (:func:`exported_payload`).
    """
    document = None
    if record is not None and entry.kind == "record":
        document = record_document(record, trace_url)
        delivered_at = entry.delivered_at
        document.update(
            status=entry.status or document["status"],
            delivered_at=iso_time(delivered_at),
            delivery_seconds=None if delivered_at is None else (delivered_at - record.timestamp).total_seconds(),
            retry_count=entry.retry_count if entry.retry_count is not None else 0,
            error_message=entry.error,
            payload=exported_payload(record.payload),
        )
    return {
        "event": entry.kind,
        "chain_id": entry.chain_id,
        "sequence": entry.sequence,
        "at": iso_time(entry.at),
        "message_id": entry.message_id,
        "status": entry.status,
        "retry_count": entry.retry_count,
        "error_message": entry.error,
        "delivered_at": iso_time(entry.delivered_at),
        "operation_id": entry.operation_id,
        "entry_hash": entry.entry_hash,
        "record": document,
    }


def entry_documents(
    pairs: Iterable[tuple[ChainEntry, AuditRecord | None]], trace_url: Any = None
) -> list[dict[str, Any]]:
    """Event documents of ``(entry, record)`` pairs (what ``trail.lifecycle_entries()`` returns).

    ``trace_url``: record → trace-viewer link (``trail.trace_url``), or ``None``.
    """
    documents = []
    for entry, record in pairs:
        link = trace_url(record) if trace_url is not None and record is not None else None
        documents.append(event_document(entry, record, link))
    return documents


def batch_documents(batch: CommittedBatch) -> list[dict[str, Any]]:
    """The event documents of one committed batch, in chain order.

    A trail whose store keeps no chain (a ``nats://`` producer) has no
    entries: its records and status updates become events without
    ``chain_id`` and ``sequence``.
    """
    trail_url = getattr(batch.trail, "trace_url", None)
    if batch.chained:
        records = {record.message_id: record for record in batch.records}
        return entry_documents(((entry, records.get(entry.message_id or "")) for entry in batch.entries), trail_url)
    documents = [unchained_record(record, trail_url(record) if trail_url else None) for record in batch.records]
    documents += [unchained_update(update) for update in batch.updates]
    return documents


def unchained_record(record: AuditRecord, trace_url: str | None) -> dict[str, Any]:
    document = record_document(record, trace_url)
    document["payload"] = exported_payload(record.payload)
    return {
        **dict.fromkeys(EVENT_FIELDS),
        "event": "record",
        "at": iso_time(record.timestamp),
        "message_id": record.message_id,
        "status": record.status.value,
        "retry_count": record.retry_count,
        "error_message": record.error_message,
        "delivered_at": iso_time(record.delivered_at),
        "record": document,
    }


def unchained_update(update: StatusUpdate) -> dict[str, Any]:
    return {
        **dict.fromkeys(EVENT_FIELDS),
        "event": "status",
        "at": iso_time(update.at),
        "message_id": update.message_id,
        "status": update.status.value,
        "retry_count": update.retry_count,
        "error_message": update.error_message,
        "delivered_at": iso_time(update.delivered_at),
        "operation_id": update.operation_id,
    }


def documents_size(batch: CommittedBatch) -> int:
    """How many event documents :func:`batch_documents` makes of ``batch``, without making them (cheap)."""
    if batch.chained:
        return sum(len(chain.entries) for chain in batch.appended)
    return len(batch.rows) + len(batch.updates)


def chunks(documents: Sequence[dict[str, Any]], size: int) -> Iterable[Sequence[dict[str, Any]]]:
    for start in range(0, len(documents), size):
        yield documents[start : start + size]
