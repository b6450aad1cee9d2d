"""OpenTelemetry logs over OTLP/HTTP: each event document as one log record, sent by the SDK's OTLP exporter.

Needs the ``otlp`` extra (``opentelemetry-sdk``,
``opentelemetry-exporter-otlp-proto-http``). A log record:

* ``body``: the whole event document (a map), so a collector pipeline
  sees the same fields as syslog and JSON Lines receivers;
* ``event_name``: ``audit_plugin.lifecycle.<event>`` (``record``, ``status``, ``late``, ``retention``);
* ``timestamp``: the entry's time; ``observed_timestamp``: when it was sent;
* ``severity``: ERROR for FAILED, WARN for EXPIRED, INFO otherwise;
* trace context: a record event of a traced message carries its
  ``trace_id`` and ``span_id``, so the back end links the log to the trace;
* attributes, after the messaging and GenAI semantic conventions:
  ``messaging.system`` (``audit_plugin``), ``messaging.message.id``,
  ``messaging.message.conversation_id`` and ``gen_ai.conversation.id``
  (the correlation id), ``messaging.destination.name`` (the receiving
  agent), ``gen_ai.agent.name`` (the sending agent); and
  ``audit_plugin.event``, ``audit_plugin.chain.id``,
  ``audit_plugin.chain.sequence``, ``audit_plugin.chain.entry_hash``,
  ``audit_plugin.message.status``, ``audit_plugin.message.type``,
  ``audit_plugin.message.retry_count``, ``audit_plugin.message.error``;
* resource: ``service.name`` (``audit-plugin`` unless ``service_name=``).

The exporter is called directly (no ``BatchLogRecordProcessor``): the
sink's own buffer batches and retries, so a collector that is down is
counted and backed off like any destination. The exporter's request runs
in a worker thread (it is blocking ``requests`` code).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from audit_plugin.sinks.address import OtlpAddress
from audit_plugin.telemetry.tracing import INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION, MESSAGING_SYSTEM_VALUE

SEVERITIES = {"FAILED": (SeverityNumber.ERROR, "ERROR"), "EXPIRED": (SeverityNumber.WARN, "WARN")}
INFO = (SeverityNumber.INFO, "INFO")


class OtlpExportError(RuntimeError):
    """The OTLP receiver refused the logs or did not answer (the exporter logged why)."""


class _Collected(LogRecordProcessor):
    """Hands the records the SDK's logger made back to the sender, which exports them itself."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def on_emit(self, log_record: Any) -> None:
        self.records.append(log_record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def nanoseconds(iso: str | None) -> int | None:
    if not iso:
        return None
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def attributes(document: dict[str, Any]) -> dict[str, Any]:
    """The log record's attributes (see the module docs); absent values are left out."""
    record = document.get("record") or {}
    pairs = {
        "messaging.system": MESSAGING_SYSTEM_VALUE,
        "messaging.message.id": document.get("message_id"),
        "messaging.message.conversation_id": record.get("correlation_id"),
        "messaging.destination.name": record.get("to_agent"),
        "gen_ai.agent.name": record.get("from_agent"),
        "gen_ai.conversation.id": record.get("correlation_id"),
        "audit_plugin.event": document.get("event"),
        "audit_plugin.chain.id": document.get("chain_id"),
        "audit_plugin.chain.sequence": document.get("sequence"),
        "audit_plugin.chain.entry_hash": document.get("entry_hash"),
        "audit_plugin.message.status": document.get("status"),
        "audit_plugin.message.type": record.get("message_type"),
        "audit_plugin.message.retry_count": document.get("retry_count"),
        "audit_plugin.message.error": document.get("error_message"),
    }
    return {name: value for name, value in pairs.items() if value is not None}


def trace_context(document: dict[str, Any]) -> Any:
    """A context holding the record's span, so the log record carries its trace id.

    Untraced: a context holding no valid span, never the sending task's own
    (which would tie the log to whatever span happens to be current).
    """
    record = document.get("record") or {}
    trace_id, span_id = record.get("trace_id"), record.get("span_id")
    if not trace_id or not span_id:
        return UNTRACED
    span = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(span))


UNTRACED = trace.set_span_in_context(trace.INVALID_SPAN)


class OtlpSender:
    """Sends event documents as OpenTelemetry log records to one OTLP/HTTP logs endpoint."""

    def __init__(self, address: OtlpAddress) -> None:
        self.address = address
        self.exporter = OTLPLogExporter(
            endpoint=address.endpoint,
            headers=dict(address.headers),
            timeout=address.timeout,
            certificate_file=str(address.ca) if address.ca else None,
        )
        self.provider = LoggerProvider(
            resource=Resource.create({"service.name": address.service_name}), shutdown_on_exit=False
        )
        self.collected = _Collected()
        self.provider.add_log_record_processor(self.collected)
        self.logger = self.provider.get_logger(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION)

    def log_records(self, documents: Sequence[dict[str, Any]]) -> list[Any]:
        """The SDK's log records of ``documents``, ready for the exporter."""
        self.collected.records = []
        observed = time.time_ns()
        for document in documents:
            number, text = SEVERITIES.get(document.get("status") or "", INFO)
            self.logger.emit(
                LogRecord(
                    timestamp=nanoseconds(document.get("at")),
                    observed_timestamp=observed,
                    severity_number=number,
                    severity_text=text,
                    body=document,
                    attributes=attributes(document),
                    event_name=f"audit_plugin.lifecycle.{document.get('event')}",
                    context=trace_context(document),
                )
            )
        records, self.collected.records = self.collected.records, []
        return records

    async def send(self, documents: Sequence[dict[str, Any]]) -> None:
        records = self.log_records(documents)
        result = await asyncio.to_thread(self.exporter.export, records)
        if result is not LogRecordExportResult.SUCCESS:
            raise OtlpExportError(f"the OTLP receiver at {self.address.endpoint} did not take the logs")

    async def close(self) -> None:
        await asyncio.to_thread(self.exporter.shutdown)
        self.provider.shutdown()
