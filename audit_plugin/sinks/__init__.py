"""Export sinks: every record and lifecycle entry, as it commits, to a log system (docs/sinks.md).

Two ways in, one document shape (:mod:`~audit_plugin.sinks.documents`):

* in the process that writes the trail, :class:`ExportSink` follows the
  ``audit_batch_committed`` hook: ``ExportSink("syslog+tcp://siem:514").attach(trail)``;
* from any other process, ``audit-plugin export --follow --to URL`` reads the
  store (:mod:`~audit_plugin.sinks.follow`) and keeps its position in a state file.

Destinations (:mod:`~audit_plugin.sinks.address`): syslog RFC 5424 over
TCP or TLS (:mod:`~audit_plugin.sinks.syslog`), OpenTelemetry logs over OTLP/HTTP
(:mod:`~audit_plugin.sinks.otlp`, extra ``otlp``), JSON Lines to a file or
standard output (:mod:`~audit_plugin.sinks.jsonl`). A destination that is
down never slows or breaks the trail: a bounded buffer, retries with backoff,
and counted drops (:mod:`~audit_plugin.sinks.delivery`, :mod:`~audit_plugin.sinks.metrics`).
"""

from __future__ import annotations

from audit_plugin.sinks.address import JsonLinesAddress, OtlpAddress, SyslogAddress, parse_destination
from audit_plugin.sinks.delivery import Backoff, ExportSink, ExportStats, Sender, open_sender
from audit_plugin.sinks.documents import batch_documents, entry_documents, event_document

__all__ = [
    "Backoff",
    "ExportSink",
    "ExportStats",
    "JsonLinesAddress",
    "OtlpAddress",
    "Sender",
    "SyslogAddress",
    "batch_documents",
    "entry_documents",
    "event_document",
    "open_sender",
    "parse_destination",
]
