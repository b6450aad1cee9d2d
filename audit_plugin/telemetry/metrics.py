"""OpenTelemetry metrics: messages sent and consumed, and the audit pipeline's own health.

Messaging metrics (semantic conventions v1.44), attributes ``messaging.system``,
``messaging.operation.name``, ``messaging.destination.name`` and, on failure,
``error.type``:

* ``messaging.client.sent.messages`` (counter, ``{message}``): counted by the
  audit plugin when a message's outcome is known;
* ``messaging.client.consumed.messages`` (counter, ``{message}``): counted by
  the bus once per delivery attempt;
* ``messaging.process.duration`` (histogram, ``s``): one per handler run.

Audit pipeline metrics (namespace ``audit_plugin.``), read from the trail's
writer at collection time (the two histograms are recorded once per
committed batch), so they cost nothing per message; attributes ``db.system.name`` and
``db.namespace`` tell trails apart:

* ``audit_plugin.writer.written`` (observable counter): operations committed
  (records inserted and status updates applied);
* ``audit_plugin.writer.failed`` (observable counter): operations the store
  refused for good - lost, each logged;
* ``audit_plugin.writer.dropped`` (observable counter): operations the
  overflow policy dropped (``drop_newest``/``drop_oldest``, or ``block`` past
  the plugin's ``commit_timeout``) - lost;
* ``audit_plugin.writer.abandoned`` (observable counter): operations still
  unwritten when ``close(timeout=...)`` gave up - lost;
* ``audit_plugin.writer.retries`` (observable counter): batch attempts that
  failed with a transient error and were retried;
* ``audit_plugin.writer.queue.depth`` / ``audit_plugin.writer.queue.limit``
  (observable up-down counters): operations waiting, and the queue capacity;
* ``audit_plugin.writer.store.available`` (observable gauge): 1 while the
  store takes writes, 0 while the writer is retrying a failing store;
* ``audit_plugin.writer.batch.duration`` (histogram, ``s``) and
  ``audit_plugin.writer.batch.size`` (histogram): per committed batch;
* ``audit_plugin.commit.timeouts`` (observable counter): sends that went on
  without waiting for their commit (``"commit"`` durability).

Capture (counted by an integration as it records a message, attributes
``messaging.system`` and ``audit_plugin.capture.kind``):

* ``audit_plugin.capture.degraded`` (counter, ``{message}``): bodies not
  recorded as readable JSON: kept as base64 with their content type
  (``base64``), or replaced by a marker saying why (``not_captured``).

"Losing records": ``failed``, ``dropped`` or ``abandoned`` increases. "Falling behind":
``queue.depth / queue.limit`` high, ``store.available`` 0, ``retries`` or
``commit.timeouts`` increasing, ``batch.duration`` growing. docs/tracing.md
lists suggested alerts.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import pluggy
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy.engine import make_url

from audit_plugin.exceptions import TrailStateError
from audit_plugin.hookspecs import hookimpl
from audit_plugin.model.messages import DeliveryReceipt, Message, MessageStatus
from audit_plugin.telemetry.tracing import (
    ERROR_TYPE,
    INSTRUMENTATION_NAME,
    INSTRUMENTATION_VERSION,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_OPERATION_NAME,
    MESSAGING_SYSTEM,
    MESSAGING_SYSTEM_VALUE,
    PROCESS,
    SCHEMA_URL,
    SEND,
)

if TYPE_CHECKING:
    from audit_plugin.storage.backend import AuditBackend
    from audit_plugin.storage.committed import CommittedBatch
    from audit_plugin.storage.writer import WriterStats


class WatchedTrail(Protocol):
    """What the pipeline metrics read of a trail (a :class:`~audit_plugin.MessageAuditTrail`)."""

    database_url: str
    backend: AuditBackend
    plugin_manager: pluggy.PluginManager

    @property
    def closed(self) -> bool: ...

    @property
    def max_queue(self) -> int: ...

    @property
    def writer_stats(self) -> WriterStats: ...


DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""Histogram boundaries the semantic conventions recommend for durations in seconds."""

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


_WRITER_INSTRUMENTS: tuple[tuple[str, str, Callable[[WriterStats], float], str, str], ...] = (
    (
        "audit_plugin.writer.written",
        "counter",
        lambda s: s.written,
        "{operation}",
        "Audit operations committed: records inserted and status updates applied.",
    ),
    (
        "audit_plugin.writer.failed",
        "counter",
        lambda s: s.failed,
        "{operation}",
        "Audit operations the store refused for good; each is logged. Lost records.",
    ),
    (
        "audit_plugin.writer.dropped",
        "counter",
        lambda s: s.dropped,
        "{operation}",
        "Audit operations dropped because the queue was full (overflow policy). Lost records.",
    ),
    (
        "audit_plugin.writer.abandoned",
        "counter",
        lambda s: s.abandoned,
        "{operation}",
        "Audit operations still unwritten when a close() timed out. Lost records.",
    ),
    (
        "audit_plugin.commit.timeouts",
        "counter",
        lambda s: s.commit_timeouts,
        "{message}",
        "Messages sent without waiting for their audit commit because the store was too slow.",
    ),
    (
        "audit_plugin.writer.retries",
        "counter",
        lambda s: s.retries,
        "{attempt}",
        "Batch writes that failed with a transient store error and were retried.",
    ),
    (
        "audit_plugin.writer.queue.depth",
        "up_down_counter",
        lambda s: s.queue_depth,
        "{operation}",
        "Audit operations waiting to be written.",
    ),
    (
        "audit_plugin.writer.store.available",
        "gauge",
        lambda s: 1 if s.store_available else 0,
        "",
        "1 while the store accepts writes, 0 while the writer is retrying a failing store.",
    ),
)
"""Observable instruments read from ``WriterStats``: name, kind, reader, unit, description."""


def get_meter(meter_provider: metrics.MeterProvider | None) -> metrics.Meter:
    """This package's meter from ``meter_provider``, or from the global provider when ``None``."""
    return metrics.get_meter(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION, meter_provider, schema_url=SCHEMA_URL)


InstrumentsT = TypeVar("InstrumentsT")


class PerProvider(Generic[InstrumentsT]):
    """One set of instruments per meter provider, made on first use and dropped with the provider.

    OpenTelemetry refuses an instrument created twice under one meter, so
    every user of a provider must share one set. ``None`` (the global
    provider) has its own set, kept for the process's life.
    """

    def __init__(self, make: Callable[[metrics.Meter], InstrumentsT]) -> None:
        self._make = make
        self._global: InstrumentsT | None = None
        self._by_provider: weakref.WeakKeyDictionary[metrics.MeterProvider, InstrumentsT] = weakref.WeakKeyDictionary()

    def get(self, meter_provider: metrics.MeterProvider | None) -> InstrumentsT:
        """The instruments of ``meter_provider`` (``None``: the global provider)."""
        if meter_provider is None:
            if self._global is None:
                self._global = self._make(get_meter(None))
            return self._global
        found = self._by_provider.get(meter_provider)
        if found is None:
            found = self._by_provider[meter_provider] = self._make(get_meter(meter_provider))
        return found


def _messaging_attributes(message: Message, operation: str, error: str | None) -> dict[str, str]:
    attributes = {
        MESSAGING_SYSTEM: MESSAGING_SYSTEM_VALUE,
        MESSAGING_OPERATION_NAME: operation,
        MESSAGING_DESTINATION_NAME: message.to_agent,
    }
    if error is not None:
        attributes[ERROR_TYPE] = error
    return attributes


class SendMetrics:
    """``messaging.client.sent.messages``, counted once per message when its outcome is known."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Number of messages producer attempted to send to the broker.",
        )

    def record(self, message: Message, receipt: DeliveryReceipt) -> None:
        failed = receipt.status in (MessageStatus.FAILED, MessageStatus.EXPIRED)
        self.sent.add(1, _messaging_attributes(message, SEND, receipt.status.value if failed else None))


class ConsumerMetrics:
    """``messaging.client.consumed.messages`` and ``messaging.process.duration``, once per handler run."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Number of messages that were delivered to the application.",
        )
        self.duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Duration of processing operation.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def record(self, message: Message, seconds: float, error: str | None) -> None:
        attributes = _messaging_attributes(message, PROCESS, error)
        self.consumed.add(1, attributes)
        self.duration.record(seconds, attributes)


CAPTURE_KIND = "audit_plugin.capture.kind"
"""Attribute of ``audit_plugin.capture.degraded``: how the body was kept (``base64`` or ``not_captured``)."""


class CaptureMetrics:
    """``audit_plugin.capture.degraded``: bodies an integration recorded as base64 or as a marker."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.degraded = meter.create_counter(
            "audit_plugin.capture.degraded",
            unit="{message}",
            description="Message bodies recorded as base64 or as a not-captured marker instead of as readable JSON.",
        )

    @classmethod
    def for_provider(cls, meter_provider: metrics.MeterProvider | None) -> CaptureMetrics:
        """The capture metrics of ``meter_provider`` (``None``: the global one), created once per provider."""
        return _CAPTURE_METRICS.get(meter_provider)

    def record(self, system: str, kind: str) -> None:
        self.degraded.add(1, {MESSAGING_SYSTEM: system, CAPTURE_KIND: kind})


_CAPTURE_METRICS = PerProvider(CaptureMetrics)


@dataclass(eq=False)
class _WatchedTrail:
    trail: weakref.ref[WatchedTrail]
    attributes: dict[str, str]
    queue_limit: int


class _BatchRecorder:
    """Records one trail's committed batches in the batch histograms (an ``audit_batch_committed`` implementation)."""

    def __init__(self, pipeline: PipelineMetrics, trail: WatchedTrail, attributes: dict[str, str]) -> None:
        self.pipeline = pipeline
        self.trail = weakref.ref(trail)
        self.attributes = attributes

    @hookimpl
    def audit_batch_committed(self, batch: CommittedBatch) -> None:
        if batch.trail is self.trail():
            self.pipeline.batch_duration.record(batch.seconds, self.attributes)
            self.pipeline.batch_size.record(batch.operations, self.attributes)


class PipelineMetrics:
    """The audit write pipeline's health, read from ``trail.writer_stats`` when metrics are collected.

    OpenTelemetry keeps only the first callbacks of an observable instrument
    per meter, so there is one ``PipelineMetrics`` per meter provider
    (:meth:`for_provider`) and its callbacks report every trail watched
    with it, one series per trail (``db.system.name``, ``db.namespace``).
    Trails are held weakly: a closed or discarded trail simply
    stops reporting.
    """

    def __init__(self, meter: metrics.Meter) -> None:
        self._watched: dict[int, _WatchedTrail] = {}

        def observe(read: Callable[[WriterStats], float]) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                return [Observation(read(stats), watched.attributes) for stats, watched in self._live()]

            return callback

        creators = {
            "counter": meter.create_observable_counter,
            "up_down_counter": meter.create_observable_up_down_counter,
            "gauge": meter.create_observable_gauge,
        }
        for name, kind, read, unit, description in _WRITER_INSTRUMENTS:
            creators[kind](name, [observe(read)], unit=unit, description=description)
        meter.create_observable_up_down_counter(
            "audit_plugin.writer.queue.limit",
            [lambda options: [Observation(w.queue_limit, w.attributes) for _, w in self._live()]],
            unit="{operation}",
            description="Capacity of the audit queue; at the limit the overflow policy applies.",
        )
        self.batch_duration = meter.create_histogram(
            "audit_plugin.writer.batch.duration",
            unit="s",
            description="Time to commit one batch of audit operations.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.batch_size = meter.create_histogram(
            "audit_plugin.writer.batch.size",
            unit="{operation}",
            description="Audit operations committed per batch.",
            explicit_bucket_boundaries_advisory=BATCH_SIZE_BUCKETS,
        )

    @classmethod
    def for_provider(cls, meter_provider: metrics.MeterProvider | None) -> PipelineMetrics:
        """The pipeline metrics of ``meter_provider`` (``None``: the global one), created on first use."""
        return _PIPELINE_METRICS.get(meter_provider)

    def watch(self, trail: WatchedTrail) -> None:
        """Report ``trail``'s writer from now on (once per trail, however many plugins use it)."""
        key = id(trail)
        watched = self._watched.get(key)
        if watched is None or watched.trail() is not trail:
            forget = weakref.ref(trail, lambda _: self._watched.pop(key, None))
            watched = _WatchedTrail(forget, trail_attributes(trail), trail.max_queue)
            self._watched[key] = watched
            trail.plugin_manager.register(_BatchRecorder(self, trail, watched.attributes))

    def _live(self) -> list[tuple[WriterStats, _WatchedTrail]]:
        """Stats of every watched trail that is open (called on the metric reader's thread)."""
        live = []
        for watched in list(self._watched.values()):
            stats = _stats_of(watched.trail())
            if stats is not None:
                live.append((stats, watched))
        return live


_PIPELINE_METRICS = PerProvider(PipelineMetrics)


def trail_attributes(trail: WatchedTrail) -> dict[str, str]:
    """Which store a pipeline metric is about: ``db.system.name`` and ``db.namespace`` (no credentials)."""
    attributes = {"db.system.name": trail.backend.name}
    database = make_url(trail.database_url).database
    if database:
        attributes["db.namespace"] = database
    return attributes


def _stats_of(trail: Any) -> WriterStats | None:
    if trail is None or trail.closed:  # a closed trail keeps its final stats readable but reports no more
        return None
    try:
        return trail.writer_stats
    except TrailStateError:  # not initialised yet
        return None
