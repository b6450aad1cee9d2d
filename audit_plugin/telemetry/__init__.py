"""Telemetry: the OpenTelemetry spans of every audited message and the metrics of the audit pipeline.

Owns :mod:`~audit_plugin.telemetry.tracing` (PRODUCER and CONSUMER spans
after the messaging semantic conventions, trace links) and
:mod:`~audit_plugin.telemetry.metrics` (messaging metrics, the writer's
health). Only ``opentelemetry-api`` is needed; without an SDK both are no-ops.
"""

from __future__ import annotations

from audit_plugin.telemetry.metrics import PipelineMetrics
from audit_plugin.telemetry.tracing import ProcessTracer, SendTracer

__all__ = ["PipelineMetrics", "ProcessTracer", "SendTracer"]
