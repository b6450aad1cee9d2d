"""The ingester: drains a JetStream stream of audit operations into a SQL store, exactly once in effect.

One :class:`JetStreamIngester` binds to a durable pull consumer of the
stream (any number of ingesters, in any processes, share one consumer: the
server hands each message to one of them) and loops:

1. fetch a batch of messages;
2. decode each (a typed check of every field: anything malformed is logged,
   counted in ``stats.refused`` and terminated, never written);
3. queue the operations on the trail's group-commit writer, which writes
   them in one transaction through the backend's bulk path (``write_batch``),
   retrying a store outage for as long as it lasts, while the ingester tells
   the server the messages are still in progress so they are not handed to
   another ingester meanwhile;
4. acknowledge each message once its operation is committed.

An ingester that dies after the commit and before the acknowledgement gets
its batch redelivered (to itself or another ingester) after ``ack_wait``;
writing it again changes nothing: records are stored once per
``message_id`` and each status update once per ``operation_id``
(see :mod:`audit_plugin.transitions`).

A status update can arrive before its message's record (two ingesters, or a
record still in another ingester's transaction). The store then reports the
message as not stored; the update is not acknowledged but redelivered after
a short, growing delay until the record is there. An update whose record
has not arrived after ``orphan_after`` seconds in the stream is given up:
acknowledged, logged and counted in ``stats.orphaned`` (the same outcome as
``update_message_status`` on an unknown message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from audit_plugin import validation as v
from audit_plugin.exceptions import AuditError, AuditStoreError, InvalidFieldError
from audit_plugin.jetstream import wire
from audit_plugin.jetstream.address import StreamAddress, parse_address
from audit_plugin.jetstream.stream import connect, ensure_stream
from audit_plugin.metrics import get_meter
from audit_plugin.trail import MessageAuditTrail

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

log = logging.getLogger(__name__)

DEFAULT_DURABLE = "audit-ingest"
"""Name of the durable consumer ingesters share unless told otherwise."""

STORE_REFUSALS_BEFORE_TERM = 3
"""Deliveries of an operation the store refused before it is terminated (as refused for good)."""

MAX_RETRY_DELAY = 5.0
"""Longest wait before an update whose record is not stored yet is delivered again (seconds)."""


@dataclass(slots=True)
class IngestStats:
    """What an ingester has done, and how far behind the stream it is."""

    operations: int = 0
    """Operations committed to the store and acknowledged (records and status updates)."""
    records: int = 0
    updates: int = 0
    redelivered: int = 0
    """Messages the server delivered more than once (their second write changed nothing)."""
    waiting_for_record: int = 0
    """Deliveries of status updates whose record was not stored yet (delivered again later)."""
    orphaned: int = 0
    """Status updates given up because their record never arrived (acknowledged, logged)."""
    refused: int = 0
    """Messages that are not valid operations, or that the store refused for good (terminated, logged)."""
    pending: int | None = None
    """Operations in the stream not yet acknowledged by any ingester (the lag); ``None`` until first read."""
    rate: float = 0.0
    """Operations acknowledged per second over the last progress interval."""

    def line(self) -> str:
        """One progress line: ``ingested 12,000 ops (4,100/s), pending 3,500``."""
        pending = "?" if self.pending is None else f"{self.pending:,}"
        extra = "".join(
            f", {n:,} {label}" for n, label in ((self.orphaned, "orphaned"), (self.refused, "refused")) if n
        )
        return f"ingested {self.operations:,} ops ({self.rate:,.0f}/s), pending {pending}{extra}"


class JetStreamIngester:
    """Moves audit operations from a JetStream stream into ``trail``'s store (see the module docs).

    :param source: ``nats://host:4222/<stream>``, the URL the producers use.
    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail` on
        a SQL store; its writer does the batching and retries.
    :param durable: the durable consumer's name; ingesters with the same
        name share the work.
    :param batch_size: most messages fetched (and written) at once.
    :param ack_wait: seconds the server waits for an acknowledgement before
        delivering a message again (used when the consumer is created).
    :param orphan_after: seconds in the stream after which a status update
        whose record never arrived is given up.
    :param meter_provider: OpenTelemetry meter provider for
        ``audit_plugin.ingest.pending`` and ``audit_plugin.ingest.operations``.
    """

    def __init__(
        self,
        source: str,
        trail: MessageAuditTrail,
        *,
        durable: str = DEFAULT_DURABLE,
        batch_size: int = 1000,
        ack_wait: float = 30.0,
        orphan_after: float = 300.0,
        fetch_timeout: float = 1.0,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.address: StreamAddress = parse_address(source, "source")
        if not isinstance(trail, MessageAuditTrail):
            raise v.FieldTypeError("trail", "MessageAuditTrail", trail)
        v.check_text("durable", durable, max_length=64)
        if not durable.replace("-", "").replace("_", "").isalnum():
            raise InvalidFieldError("durable", "must be letters, digits, '_' or '-'")
        v.check_int("batch_size", batch_size, minimum=1, maximum=10_000)
        for name, value in (("ack_wait", ack_wait), ("orphan_after", orphan_after), ("fetch_timeout", fetch_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidFieldError(name, f"must be a positive number of seconds, got {value!r}")
        self.trail = trail
        self.durable = durable
        self.batch_size = batch_size
        self.ack_wait = float(ack_wait)
        self.orphan_after = float(orphan_after)
        self.fetch_timeout = float(fetch_timeout)
        self.stats = IngestStats()
        self._stopping = asyncio.Event()
        self._watch_metrics(meter_provider)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batches in hand are written and acknowledged."""
        self._stopping.set()

    async def run(
        self,
        *,
        exit_when_idle: bool = False,
        on_progress: Callable[[IngestStats], None] | None = None,
        progress_interval: float = 1.0,
    ) -> IngestStats:
        """Ingest until :meth:`stop` (or, with ``exit_when_idle``, until the stream is drained).

        "Drained": a fetch found nothing and no message of the consumer is
        waiting or unacknowledged (another ingester's in-flight batch counts,
        so the last one to finish sees the stream empty). ``on_progress``
        gets the stats every ``progress_interval`` seconds.
        """
        client, js = await connect(self.address, name=f"audit-plugin ingester {self.durable}")
        progress: asyncio.Task[None] | None = None
        try:
            await ensure_stream(js, self.address)
            config = ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                max_ack_pending=max(20_000, 4 * self.batch_size),
            )
            subscription = await js.pull_subscribe(
                self.address.subjects, durable=self.durable, stream=self.address.stream, config=config
            )
            progress = asyncio.create_task(self._report(subscription, on_progress, progress_interval))
            await self._loop(subscription, exit_when_idle)
        finally:
            if progress is not None:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
            with contextlib.suppress(nats.errors.Error, OSError):
                await client.close()
        return self.stats

    async def _loop(self, subscription: Any, exit_when_idle: bool) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                try:
                    messages = await subscription.fetch(self.batch_size, timeout=self.fetch_timeout)
                except TimeoutError:  # nothing to fetch (nats-py raises the builtin or its subclass)
                    messages = []
                except nats.errors.Error as exc:  # reconnecting: the client retries; wait and fetch again
                    log.debug("fetch failed (%s); trying again", type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                if messages:
                    task = asyncio.create_task(self._ingest(messages))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    if len(in_flight) >= 2:  # one batch commits while the next is fetched and queued
                        done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        for finished in done:
                            finished.result()
                elif exit_when_idle and not in_flight and await self._drained(subscription):
                    return
        finally:
            if in_flight:
                await asyncio.gather(*in_flight)

    async def _drained(self, subscription: Any) -> bool:
        try:
            info = await subscription.consumer_info()
        except nats.errors.Error:
            return False
        self.stats.pending = info.num_pending + info.num_ack_pending
        return self.stats.pending == 0

    async def _ingest(self, messages: list[Msg]) -> None:
        """Write one fetched batch and acknowledge what was committed."""
        writer = self.trail.writer
        queued: list[tuple[Msg, wire.Operation, asyncio.Future[Any]]] = []
        for message in messages:
            try:
                operation = wire.decode(message.data)
            except AuditError as exc:
                await self._refuse(message, exc)
                continue
            if isinstance(operation, wire.RecordOperation):
                row = self.trail.ledger.ledgered(operation.row, fallback=operation.fallback)
                future = await writer.put(row=row)
            else:
                future = await writer.put(update=operation.update)
            queued.append((message, operation, future))
        committed = asyncio.gather(*(future for _, _, future in queued), return_exceptions=True)
        results = await self._while_in_progress(committed, [message for message, _, _ in queued])
        for (message, operation, _), result in zip(queued, results, strict=True):
            await self._settle(message, operation, result)

    async def _settle(self, message: Msg, operation: wire.Operation, result: object) -> None:
        if isinstance(result, AuditStoreError):
            if message.metadata.num_delivered < STORE_REFUSALS_BEFORE_TERM:  # a store in a state retrying cures
                await _quietly(message.nak(delay=MAX_RETRY_DELAY))
                return
            await self._refuse(message, result)
            return
        if isinstance(result, BaseException):  # the writer stopped (trail closed): leave it for redelivery
            log.warning(
                "operation in stream message %s not written (%s); it will be delivered again", _seq(message), result
            )
            return
        deliveries = message.metadata.num_delivered
        if deliveries > 1:
            self.stats.redelivered += 1
        if isinstance(operation, wire.StatusOperation) and result is False:
            age = (datetime.now(UTC) - message.metadata.timestamp).total_seconds()
            if age < self.orphan_after:
                self.stats.waiting_for_record += 1
                await _quietly(message.nak(delay=min(MAX_RETRY_DELAY, 0.1 * 2 ** min(deliveries, 10))))
                return
            self.stats.orphaned += 1
            log.warning(
                "status update of message %r given up: its record did not arrive within %gs",
                operation.update.message_id,
                self.orphan_after,
            )
        elif isinstance(operation, wire.StatusOperation):
            self.stats.updates += 1
        else:
            self.stats.records += 1
        self.stats.operations += 1
        await _quietly(message.ack())

    async def _refuse(self, message: Msg, exc: BaseException) -> None:
        self.stats.refused += 1
        log.error("stream message %s refused and terminated: %s", _seq(message), exc)
        await _quietly(message.term())

    async def _while_in_progress(self, committed: asyncio.Future[list[Any]], messages: list[Msg]) -> list[Any]:
        """Wait for ``committed``, telling the server every ``ack_wait / 3`` s that ``messages`` are being worked on.

        So a store outage does not make the server hand the batch to another ingester meanwhile.
        """
        while True:
            done, _ = await asyncio.wait([committed], timeout=self.ack_wait / 3)
            if done:
                return committed.result()
            for message in messages:
                await _quietly(message.in_progress())

    async def _report(
        self, subscription: Any, on_progress: Callable[[IngestStats], None] | None, interval: float
    ) -> None:
        last_count, last_time = self.stats.operations, time.monotonic()
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(nats.errors.Error):
                info = await subscription.consumer_info()
                self.stats.pending = info.num_pending + info.num_ack_pending
            now = time.monotonic()
            self.stats.rate = (self.stats.operations - last_count) / (now - last_time)
            last_count, last_time = self.stats.operations, now
            if on_progress is not None:
                on_progress(self.stats)

    def _watch_metrics(self, meter_provider: MeterProvider | None) -> None:
        meter = get_meter(meter_provider)
        attributes = {"messaging.system": "nats", "messaging.destination.name": self.address.stream}
        stats = self.stats

        def pending(options: CallbackOptions) -> list[Observation]:
            from opentelemetry.metrics import Observation

            return [] if stats.pending is None else [Observation(stats.pending, attributes)]

        def operations(options: CallbackOptions) -> list[Observation]:
            from opentelemetry.metrics import Observation

            return [Observation(stats.operations, attributes)]

        def rate(options: CallbackOptions) -> list[Observation]:
            from opentelemetry.metrics import Observation

            return [Observation(stats.rate, attributes)]

        meter.create_observable_gauge(
            "audit_plugin.ingest.pending",
            [pending],
            unit="{operation}",
            description="Operations in the stream not yet ingested",
        )
        meter.create_observable_counter(
            "audit_plugin.ingest.operations", [operations], unit="{operation}", description="Operations ingested"
        )
        meter.create_observable_gauge(
            "audit_plugin.ingest.rate", [rate], unit="{operation}/s", description="Operations ingested per second"
        )


async def ingest(
    source: str,
    database_url: str,
    *,
    exit_when_idle: bool = False,
    on_progress: Callable[[IngestStats], None] | None = None,
    **options: Any,
) -> IngestStats:
    """Open a trail on ``database_url`` and run a :class:`JetStreamIngester` from ``source`` into it."""
    async with MessageAuditTrail(database_url) as trail:
        ingester = JetStreamIngester(source, trail, **options)
        return await ingester.run(exit_when_idle=exit_when_idle, on_progress=on_progress)


def _seq(message: Msg) -> str:
    with contextlib.suppress(Exception):
        return f"#{message.metadata.sequence.stream}"
    return "?"


async def _quietly(acknowledgement: Any) -> None:
    """Send an acknowledgement; one lost to a broken connection is redelivered and rewritten harmlessly."""
    with contextlib.suppress(nats.errors.Error, OSError):
        await acknowledgement
