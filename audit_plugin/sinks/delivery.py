"""What every sink shares: the sender contract, retries with backoff, counters, and the bounded buffer.

A sink must never slow or break the trail it follows. :class:`ExportSink`
implements ``audit_batch_committed``: on the writer's task it only appends
the committed batch to its own buffer (constant time: the documents are
built later, on the sink's task) and returns. Its task sends the batches
in commit order, a chunk of documents at a time, retrying a failed send
with exponential backoff for as long as it takes.

The buffer is bounded (``buffer`` documents). When it is full because the
destination has been down for a while, the **oldest** batches are dropped
and counted (``stats.dropped``, the ``audit_plugin.export.dropped``
counter, a warning in the log): what the destination gets when it comes
back is the recent trail, which is what an operator watching it needs first,
and the gap is one contiguous range of sequence numbers that
``audit-plugin export --follow --from-sequence N`` can send again from the
store, which still holds every entry. Dropping the newest instead would
keep the start of the outage and lose everything after it until the buffer
drains.

Delivery is at least once: a send that failed after the destination took
part of it is sent again whole. Receivers de-duplicate by ``(chain_id,
sequence)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from opentelemetry import metrics

from audit_plugin.exceptions import DestinationGoneError, InvalidFieldError
from audit_plugin.hookspecs import hookimpl
from audit_plugin.model import validation as v
from audit_plugin.sinks.address import Address, JsonLinesAddress, OtlpAddress, SyslogAddress, parse_destination
from audit_plugin.sinks.documents import batch_documents, chunks, documents_size
from audit_plugin.sinks.metrics import ExportMetrics

if TYPE_CHECKING:
    from audit_plugin.storage.committed import CommittedBatch

log = logging.getLogger(__name__)

Document = dict[str, Any]

DEFAULT_BUFFER = 10_000
"""Documents a sink holds while its destination is down, before it drops the oldest."""
DEFAULT_CHUNK = 500
"""Documents per send."""
DROP_LOG_EVERY = 60.0
"""Seconds between warnings about dropped documents (the counter counts every one)."""


@runtime_checkable
class Sender(Protocol):
    """Sends documents to one destination; one module per kind (:mod:`~audit_plugin.sinks.syslog`, ...)."""

    address: Address

    async def send(self, documents: Sequence[Document]) -> None:
        """Deliver ``documents`` in order, or raise (the caller retries them); ``DestinationGoneError`` ends."""

    async def close(self) -> None:
        """Release the connection or file."""


def open_sender(destination: str | Address) -> Sender:
    """The sender for ``destination`` (a URL, see :mod:`audit_plugin.sinks.address`, or a parsed address).

    The OTLP sender needs the ``otlp`` extra; without it this raises an
    :class:`~audit_plugin.exceptions.InvalidFieldError` saying what to install.
    """
    address = parse_destination(destination) if isinstance(destination, str) else destination
    if isinstance(address, SyslogAddress):
        from audit_plugin.sinks.syslog import SyslogSender

        return SyslogSender(address)
    if isinstance(address, JsonLinesAddress):
        from audit_plugin.sinks.jsonl import JsonLinesSender

        return JsonLinesSender(address)
    if isinstance(address, OtlpAddress):
        try:
            from audit_plugin.sinks.otlp import OtlpSender
        except ImportError as exc:
            raise InvalidFieldError(
                "url", f"otlp+http:// needs the otlp extra ({exc.name} is missing): pip install 'audit-plugin[otlp]'"
            ) from None
        return OtlpSender(address)
    raise v.FieldTypeError("destination", "a destination URL or address", destination)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds between retries of a failed send: ``first``, then times ``factor`` each time, at most ``most``."""

    first: float = 0.5
    factor: float = 2.0
    most: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.most, self.first * self.factor ** max(failures - 1, 0)))


@dataclass(slots=True)
class ExportStats:
    """What a sink has done: documents sent and dropped, sends that failed, documents waiting."""

    sent: int = 0
    dropped: int = 0
    failed: int = 0
    """Sends that failed (each was retried)."""
    queued: int = 0
    last_error: str | None = None
    """Why the last failed send failed (cleared when a send succeeds)."""

    def line(self) -> str:
        """``sent 1,200, dropped 0, failed sends 3, waiting 40``: one line for people."""
        text = f"sent {self.sent:,}, dropped {self.dropped:,}, failed sends {self.failed:,}, waiting {self.queued:,}"
        return text + (f" (last error: {self.last_error})" if self.last_error else "")


class ExportCounters:
    """A sink's :class:`ExportStats` and its OpenTelemetry counters, kept together."""

    def __init__(self, address: Address, meter_provider: metrics.MeterProvider | None = None) -> None:
        self.address = address
        self.stats = ExportStats()
        self.metrics = ExportMetrics.for_provider(meter_provider)
        self.attributes = {"audit_plugin.export.destination": address.display, "audit_plugin.export.sink": address.kind}
        self._logged_at: float | None = None
        self._unlogged = 0

    def sent(self, count: int) -> None:
        self.stats.sent += count
        self.stats.last_error = None
        self.metrics.sent.add(count, self.attributes)

    def dropped(self, count: int, why: str) -> None:
        """Count ``count`` documents lost; logged at once, then at most every :data:`DROP_LOG_EVERY` seconds."""
        if count <= 0:
            return
        self.stats.dropped += count
        self.metrics.dropped.add(count, self.attributes)
        self._unlogged += count
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= DROP_LOG_EVERY:
            log.warning(
                "export to %s dropped %d entries (%s), %d in all; the store still holds them",
                self.address.display,
                self._unlogged,
                why,
                self.stats.dropped,
            )
            self._logged_at, self._unlogged = now, 0

    def failed(self, error: BaseException) -> None:
        self.stats.failed += 1
        self.stats.last_error = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        self.metrics.failed.add(1, self.attributes)

    def queued(self, change: int) -> None:
        self.stats.queued += change
        self.metrics.queued.add(change, self.attributes)


async def deliver(
    sender: Sender, documents: Sequence[Document], counters: ExportCounters, backoff: Backoff, give_up: asyncio.Event
) -> bool:
    """Send ``documents`` until the destination takes them, retrying with ``backoff``; ``False`` once ``give_up``.

    :class:`DestinationGoneError` is raised, not retried.
    """
    failures = 0
    while True:
        try:
            await sender.send(documents)
        except DestinationGoneError:
            raise
        except Exception as exc:  # any failure of the destination is retried; the trail is never disturbed
            failures += 1
            counters.failed(exc)
            if failures == 1:
                log.warning("export to %s failed (%s); retrying", counters.address.display, counters.stats.last_error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(give_up.wait(), backoff.delay(failures))
            if give_up.is_set():
                return False
            continue
        if failures:
            log.warning("export to %s works again after %d failed sends", counters.address.display, failures)
        counters.sent(len(documents))
        return True


class ExportSink:
    """Export every record and lifecycle entry a trail commits, as it commits, to one destination.

    :param destination: a destination URL (``syslog+tcp://siem:514``,
        ``otlp+http://collector:4318``, ``jsonl:///var/log/audit.jsonl``;
        see :mod:`audit_plugin.sinks.address`), a parsed address, or a
        :class:`Sender`.
    :param buffer: most documents held while the destination is down; past
        it the oldest batches are dropped and counted (see the module docs).
    :param chunk: documents per send.
    :param backoff: delays between retries of a failed send.
    :param meter_provider: where the ``audit_plugin.export.*`` counters go (default: the global one).

    ``sink.attach(trail)`` registers it on the trail's plugin manager (it then
    exports that trail's batches only); ``await sink.close()`` sends what is
    buffered and releases the destination. Its task starts with the first
    batch (or :meth:`start`), in the running event loop.
    """

    def __init__(
        self,
        destination: str | Address | Sender,
        *,
        buffer: int = DEFAULT_BUFFER,
        chunk: int = DEFAULT_CHUNK,
        backoff: Backoff | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        v.check_int("buffer", buffer, minimum=1, maximum=10_000_000)
        v.check_int("chunk", chunk, minimum=1, maximum=100_000)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise v.FieldTypeError("backoff", "Backoff", backoff)
        self.sender = destination if isinstance(destination, Sender) else open_sender(destination)
        self.buffer = buffer
        self.chunk = chunk
        self.backoff = backoff or Backoff()
        self.counters = ExportCounters(self.sender.address, meter_provider)
        self._batches: deque[tuple[CommittedBatch, int]] = deque()
        self._waiting = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._give_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._trail: Any = None

    @property
    def stats(self) -> ExportStats:
        """Documents sent, dropped, waiting; sends that failed."""
        return self.counters.stats

    def attach(self, trail: Any) -> Self:
        """Export what ``trail`` commits from now on (registers this sink on ``trail.plugin_manager``)."""
        self._trail = trail
        trail.plugin_manager.register(self)
        return self

    def start(self) -> None:
        """Start the sending task in the running event loop (done by the first batch otherwise)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"export to {self.sender.address.display}"
            )

    @hookimpl
    def audit_batch_committed(self, batch: CommittedBatch) -> None:
        """Buffer ``batch`` (constant time; drop the oldest past ``buffer``) and wake the sending task."""
        if self._closing or (self._trail is not None and batch.trail is not self._trail):
            return
        size = documents_size(batch)
        if size == 0:
            return
        self._batches.append((batch, size))
        self._waiting += size
        self.counters.queued(size)
        while self._waiting > self.buffer and self._batches:
            _, dropped = self._batches.popleft()
            self._waiting -= dropped
            self.counters.queued(-dropped)
            self.counters.dropped(dropped, f"its buffer of {self.buffer:,} was full")
        self._idle.clear()
        self._wake.set()
        self.start()

    async def _run(self) -> None:
        while True:
            if self._give_up.is_set():
                self._drop_waiting("the sink was closed before the destination came back")
            if not self._batches:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, size = self._batches.popleft()
            self._waiting -= size
            try:
                await self._send(batch)
            except DestinationGoneError as exc:
                log.error("export to %s stopped: %s", self.sender.address.display, exc)
                self.counters.dropped(size, "the destination went away")
                self._give_up.set()
                self._closing = True
            finally:
                self.counters.queued(-size)

    def _drop_waiting(self, why: str) -> None:
        self.counters.dropped(self._waiting, why)
        self.counters.queued(-self._waiting)
        self._batches.clear()
        self._waiting = 0

    async def _send(self, batch: CommittedBatch) -> None:
        try:
            documents = batch_documents(batch)
        except Exception:  # a bug in building the documents must not stop the export of later batches
            log.exception("export to %s: building the documents of a batch failed", self.sender.address.display)
            self.counters.dropped(documents_size(batch), "its documents could not be built")
            return
        sent = 0
        for part in chunks(documents, self.chunk):
            if not await deliver(self.sender, part, self.counters, self.backoff, self._give_up):
                self.counters.dropped(len(documents) - sent, "the sink was closed before the destination came back")
                return
            sent += len(part)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything buffered so far was sent (or dropped); ``TimeoutError`` after ``timeout`` seconds."""
        v.check_seconds("timeout", timeout, optional=True)
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking batches, send what is buffered (for at most ``timeout`` seconds), release the destination.

        What is still unsent when ``timeout`` ends is dropped and counted.
        Close the trail first, so its last batches are exported too.
        """
        v.check_seconds("timeout", timeout, optional=True)
        if self._trail is not None:
            with contextlib.suppress(ValueError, AssertionError):
                self._trail.plugin_manager.unregister(self)
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._give_up.set()  # the task drops what is left and ends
                await self._task
        await self.sender.close()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
