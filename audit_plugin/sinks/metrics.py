"""The sinks' OpenTelemetry counters: entries sent and dropped, sends that failed, entries waiting.

Attributes: ``audit_plugin.export.destination`` (the destination URL without
credentials or parameters, e.g. ``syslog+tls://siem:6514``) and
``audit_plugin.export.sink`` (``syslog``, ``otlp``, ``jsonl``).

* ``audit_plugin.export.sent`` (counter, ``{entry}``): lifecycle entries the destination accepted;
* ``audit_plugin.export.dropped`` (counter, ``{entry}``): entries a sink gave up on (its buffer was
  full while the destination was down, it was closed before they went out, or retention pruned
  them before ``export --follow`` read them); the store still holds what was not pruned;
* ``audit_plugin.export.failed`` (counter, ``{attempt}``): sends that failed and were retried;
* ``audit_plugin.export.queue.depth`` (up-down counter, ``{entry}``): entries waiting in a sink's buffer.

"Export falling behind": ``queue.depth`` growing, ``failed`` increasing. "Export losing
entries": ``dropped`` increasing.
"""

from __future__ import annotations

from opentelemetry import metrics

from audit_plugin.telemetry.metrics import PerProvider


class ExportMetrics:
    """The four instruments, one set per meter provider (:meth:`for_provider`)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.sent = meter.create_counter(
            "audit_plugin.export.sent", unit="{entry}", description="Lifecycle entries a sink delivered."
        )
        self.dropped = meter.create_counter(
            "audit_plugin.export.dropped",
            unit="{entry}",
            description="Lifecycle entries a sink gave up on (buffer full while the destination was down, closed "
            "before they went out, or pruned before they were read). Missing from the destination.",
        )
        self.failed = meter.create_counter(
            "audit_plugin.export.failed",
            unit="{attempt}",
            description="Sends to a destination that failed and were retried.",
        )
        self.queued = meter.create_up_down_counter(
            "audit_plugin.export.queue.depth",
            unit="{entry}",
            description="Lifecycle entries waiting in a sink's buffer.",
        )

    @classmethod
    def for_provider(cls, meter_provider: metrics.MeterProvider | None) -> ExportMetrics:
        """The instruments of ``meter_provider`` (``None``: the global provider), created on first use."""
        return _EXPORT_METRICS.get(meter_provider)


_EXPORT_METRICS = PerProvider(ExportMetrics)
