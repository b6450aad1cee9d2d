"""The ingester: drains a JetStream stream of audit operations into a SQL store, exactly once in effect.

A :class:`JetStreamIngester` owns shards of the stream (all of them unless
told which: ``shards=``). For each it binds to a durable pull consumer (one
shard: ``<durable>`` on every subject of the stream, as earlier versions
did; several: ``<durable>-<k>`` on ``<stream>.ops.<k>``), so its writes
take only the writer locks of its own shards' chains and ingesters owning
different shards never wait for each other. Ingesters owning the same
shards share its consumer (the server hands each message to one of them).
Each consumer's loop:

1. fetch about ``batch_size`` operations' worth of messages (a format-2
   message holds a batch of them, see :mod:`audit_plugin.jetstream.wire`);
2. decode and check each message in one pass; the records' digests are
   computed (as the store's chain needs them) and compared with the
   producer's. A message that does not decode, fails a check or whose
   digest does not match is kept in the store's quarantine (see
   :mod:`audit_plugin.storage.quarantine`), counted in ``stats.quarantined``
   and only then taken off the stream: never written, never dropped, and
   it never holds up the messages after it;
3. queue the operations on the trail's group-commit writer, which writes
   them in few transactions through the backend's bulk path, retrying a
   store outage for as long as it lasts, while the ingester tells the
   server the messages are still in progress so they are not handed to
   another ingester meanwhile;
4. acknowledge each message once all its operations are committed (never
   before). While the next batch is fetched the previous one commits.

An ingester that dies after the commit and before the acknowledgement gets
its messages redelivered (to itself or another ingester) after
``ack_wait``; writing them again changes nothing: records are stored once
per ``message_id`` and each status update once per ``operation_id``
(see :mod:`audit_plugin.model.transitions`).

A status update can arrive before its message's record (a producer in
``"buffered"`` durability publishes its record after its consumer side
published the outcome). The store then reports the message as not stored;
the ingester keeps the message unacknowledged and writes those updates
again after a short, growing delay until the record is there. An update
whose record has not arrived after ``orphan_after`` seconds in the stream is
given up: logged and counted in ``stats.orphaned`` (the same outcome as
``update_message_status`` on an unknown message), and its message acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from audit_plugin.exceptions import AuditError, AuditStoreError, InvalidFieldError
from audit_plugin.integrity.shards import MAX_SHARDS
from audit_plugin.jetstream import wire
from audit_plugin.jetstream.address import StreamAddress, parse_address
from audit_plugin.jetstream.stream import connect, ensure_stream
from audit_plugin.model import validation as v
from audit_plugin.storage.quarantine import QuarantinedMessage
from audit_plugin.telemetry.metrics import get_meter
from audit_plugin.trail import MessageAuditTrail

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

log = logging.getLogger(__name__)

DEFAULT_DURABLE = "audit-ingest"
"""Name of the durable consumer ingesters share unless told otherwise (``<name>-<k>`` per shard when sharded)."""

STORE_REFUSALS_BEFORE_QUARANTINE = 3
"""Deliveries of a message with an operation the store refused before that operation is quarantined."""

MAX_RETRY_DELAY = 5.0
"""Longest wait before updates whose record is not stored yet are written again (seconds)."""

SUBSCRIBE_PATIENCE = 60.0
"""Seconds to keep asking for a consumer when the server does not answer (a cluster electing its leader)."""

MAX_FETCH = 10_000
"""Most messages fetched at once."""

FIRST_GUESS_OPERATIONS_PER_MESSAGE = 100
"""Before any message was read, how many operations one is assumed to hold (sizes the first fetch)."""


@dataclass(slots=True)
class IngestStats:
    """What an ingester has done, and how far behind the stream it is."""

    operations: int = 0
    """Operations committed to the store and acknowledged (records and status updates)."""
    records: int = 0
    updates: int = 0
    messages: int = 0
    """Stream messages acknowledged (a format-2 message holds a batch of operations)."""
    redelivered: int = 0
    """Messages the server delivered more than once (their second write changed nothing)."""
    waiting_for_record: int = 0
    """Writes of status updates whose record was not stored yet (written again later)."""
    orphaned: int = 0
    """Status updates given up because their record never arrived (acknowledged, logged)."""
    quarantined: int = 0
    """Messages (or operations the store refused for good) kept in the store's quarantine, not written."""
    pending: int | None = None
    """Messages in the stream not yet acknowledged by this ingester's consumers (the lag); ``None`` until read."""
    rate: float = 0.0
    """Operations acknowledged per second over the last progress interval."""

    @property
    def refused(self) -> int:
        """:attr:`quarantined` under its earlier name."""
        return self.quarantined

    def line(self) -> str:
        """One progress line: ``ingested 12,000 ops (4,100/s), pending 3,500``."""
        pending = "?" if self.pending is None else f"{self.pending:,}"
        extra = "".join(
            f", {n:,} {label}" for n, label in ((self.orphaned, "orphaned"), (self.quarantined, "quarantined")) if n
        )
        return f"ingested {self.operations:,} ops ({self.rate:,.0f}/s), pending {pending}{extra}"


@dataclass(slots=True)
class _Delivery:
    """One fetched message: its operations (decoded and sealed), their futures, their outcomes."""

    message: Msg
    operations: list[wire.Operation]
    results: list[object] = field(default_factory=list)


def check_owned_shards(value: object, field_name: str = "shards") -> tuple[int, ...] | None:
    """Shard numbers an ingester owns, as a sorted tuple without repeats (``None``: all); typed errors otherwise."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise v.FieldTypeError(field_name, "shard numbers", value)
    owned = set()
    for shard in value:
        checked = v.check_int(field_name, shard, minimum=0, maximum=MAX_SHARDS - 1)
        owned.add(checked)
    if not owned:
        raise InvalidFieldError(field_name, "must name at least one shard")
    return tuple(sorted(owned))  # type: ignore[type-var]


class JetStreamIngester:
    """Moves audit operations from a JetStream stream into ``trail``'s store (see the module docs).

    :param source: ``nats://host:4222/<stream>``, the URL the producers use.
    :param trail: an initialised :class:`~audit_plugin.MessageAuditTrail` on
        a SQL store with as many shards as the stream (``shards=`` when it
        was made); its writer does the batching and retries.
    :param durable: the durable consumer's name; ingesters with the same
        name share the work of the shards they both own.
    :param shards: the shards this ingester owns (``None``: all).
    :param batch_size: about how many operations are fetched (and queued) at once.
    :param ack_wait: seconds the server waits for an acknowledgement before
        delivering a message again (used when a consumer is created).
    :param orphan_after: seconds in the stream after which a status update
        whose record never arrived is given up.
    :param meter_provider: OpenTelemetry meter provider for the ``audit_plugin.ingest.*`` metrics.
    """

    def __init__(
        self,
        source: str,
        trail: MessageAuditTrail,
        *,
        durable: str = DEFAULT_DURABLE,
        shards: Iterable[int] | None = None,
        batch_size: int = 5000,
        ack_wait: float = 30.0,
        orphan_after: float = 300.0,
        fetch_timeout: float = 1.0,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.address: StreamAddress = parse_address(source, "source")
        if not isinstance(trail, MessageAuditTrail):
            raise v.FieldTypeError("trail", "MessageAuditTrail", trail)
        v.check_text("durable", durable, max_length=58)
        if not durable.replace("-", "").replace("_", "").isalnum():
            raise InvalidFieldError("durable", "must be letters, digits, '_' or '-'")
        self.owned = check_owned_shards(shards)
        v.check_int("batch_size", batch_size, minimum=1, maximum=100_000)
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
        self.stream_shards = 1
        """The stream's shard count (read when :meth:`run` connects)."""
        self._operations_per_message = float(FIRST_GUESS_OPERATIONS_PER_MESSAGE)
        self._stopping = asyncio.Event()
        self._held: set[asyncio.Task[None]] = set()
        self._pending: dict[int, int] = {}
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
        """Ingest until :meth:`stop` (or, with ``exit_when_idle``, until the owned shards are drained).

        "Drained": a fetch found nothing and no message of the consumer is
        waiting or unacknowledged (another ingester's in-flight batch counts,
        so the last one to finish sees the stream empty). ``on_progress``
        gets the stats every ``progress_interval`` seconds.

        Raises :class:`~audit_plugin.exceptions.AuditStoreError` when the
        stream's shard count is not the trail's, or a shard named in
        ``shards`` is not one of the stream's.
        """
        client, js = await connect(self.address, name=f"audit-plugin ingester {self.durable}")
        progress: asyncio.Task[None] | None = None
        try:
            self.stream_shards = await ensure_stream(js, self.address)
            owned = self._check_shards()
            consumers = [await self._subscribe(js, shard) for shard in owned]
            progress = asyncio.create_task(self._report(consumers, on_progress, progress_interval))
            loops = [self._loop(shard, sub, exit_when_idle) for shard, sub in zip(owned, consumers, strict=True)]
            await asyncio.gather(*loops)
            if self._held:
                await asyncio.gather(*self._held)
        finally:
            if progress is not None:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
            with contextlib.suppress(nats.errors.Error, OSError):
                await client.close()
        return self.stats

    def _check_shards(self) -> tuple[int, ...]:
        shards = self.stream_shards
        if self.trail.shards != shards:
            raise AuditStoreError(
                f"stream {self.address.stream!r} is published in {shards} shard(s) but the store keeps "
                f"{self.trail.shards}: open the store with shards={shards}"
            )
        owned = self.owned if self.owned is not None else tuple(range(shards))
        outside = [shard for shard in owned if shard >= shards]
        if outside:
            raise AuditStoreError(f"shard {outside[0]} is not one of the stream's {shards} (0 to {shards - 1})")
        return owned

    async def _subscribe(self, js: Any, shard: int) -> Any:
        """The durable pull consumer of ``shard`` (one shard: every subject, the consumer earlier versions used)."""
        sharded = self.stream_shards > 1
        durable = f"{self.durable}-{shard}" if sharded else self.durable
        subject = self.address.ops_subject(shard) if sharded else self.address.subjects
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=20_000,
        )
        deadline = time.monotonic() + SUBSCRIBE_PATIENCE
        while True:
            try:
                return await js.pull_subscribe(subject, durable=durable, stream=self.address.stream, config=config)
            except nats.errors.TimeoutError:  # a cluster still electing the consumer's leader, or a busy server
                if time.monotonic() > deadline:
                    raise AuditStoreError(
                        f"JetStream at {self.address.display()} did not create consumer {durable!r} "
                        f"within {SUBSCRIBE_PATIENCE:g}s"
                    ) from None
                await asyncio.sleep(0.5)

    async def _loop(self, shard: int, subscription: Any, exit_when_idle: bool) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                wanted = max(1, min(MAX_FETCH, round(self.batch_size / self._operations_per_message)))
                try:
                    messages = await subscription.fetch(wanted, timeout=self.fetch_timeout)
                except TimeoutError:  # nothing to fetch (nats-py raises the builtin or its subclass)
                    messages = []
                except nats.errors.Error as exc:  # reconnecting: the client retries; wait and fetch again
                    log.debug("fetch failed (%s); trying again", type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                if messages:
                    task = asyncio.create_task(self._ingest(shard, messages))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    if len(in_flight) >= 2:  # one batch commits while the next is fetched and queued
                        done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        for finished in done:
                            finished.result()
                elif exit_when_idle and not in_flight and await self._drained(shard, subscription):
                    return
        finally:
            if in_flight:
                await asyncio.gather(*in_flight)

    async def _drained(self, shard: int, subscription: Any) -> bool:
        try:
            info = await subscription.consumer_info()
        except nats.errors.Error:
            return False
        self._pending[shard] = info.num_pending + info.num_ack_pending
        self.stats.pending = sum(self._pending.values())
        return self._pending[shard] == 0

    # -- one fetched batch ----------------------------------------------------------------

    async def _ingest(self, shard: int, messages: list[Msg]) -> None:
        """Write one fetched batch and acknowledge each message once all its operations are committed."""
        deliveries: list[_Delivery] = []
        refused: list[tuple[Msg, str]] = []
        operation_count = 0
        for message in messages:
            try:
                operations = self._decode(shard, message)
            except AuditError as exc:
                refused.append((message, str(exc)))
                continue
            operation_count += len(operations)
            deliveries.append(_Delivery(message, operations))
        if messages:
            observed = max(1.0, operation_count / len(messages))
            self._operations_per_message += 0.5 * (observed - self._operations_per_message)
        if refused:
            await self._quarantine([(m, reason, m.data) for m, reason in refused])
        futures = [[await self._enqueue(op) for op in delivery.operations] for delivery in deliveries]
        everything = asyncio.gather(*(f for each in futures for f in each), return_exceptions=True)
        results = iter(await self._while_in_progress(everything, [d.message for d in deliveries]))
        for delivery, each in zip(deliveries, futures, strict=True):
            delivery.results = [next(results) for _ in each]
        for delivery in deliveries:
            await self._settle(delivery)

    def _decode(self, shard: int, message: Msg) -> list[wire.Operation]:
        """The message's operations with the records sealed; a typed error if it must be quarantined."""
        if self.stream_shards > 1 and message.subject != self.address.ops_subject(shard):
            raise InvalidFieldError("operation", f"was published on {message.subject!r}, not shard {shard}'s subject")
        operations = wire.decode_message(message.data, message.headers, shards=self.stream_shards)
        sealed: list[wire.Operation] = []
        for index, operation in enumerate(operations):
            if isinstance(operation, wire.RecordOperation):
                row = self.trail.seal_row(operation.row, fallback=operation.fallback)
                carried = operation.digests
                comparable = carried is not None and row.hash_version == carried[2] and row.digest is not None
                if comparable and (row.record_digest, row.digest) != carried[:2]:  # type: ignore[index]
                    raise InvalidFieldError(
                        f"operation.ops[{index}]",
                        f"record {row['message_id']!r:.80} does not give the digest its producer computed",
                    )
                operation = wire.RecordOperation(row, operation.fallback, carried)
            sealed.append(operation)
        return sealed

    async def _enqueue(self, operation: wire.Operation) -> asyncio.Future[Any]:
        if isinstance(operation, wire.RecordOperation):
            return await self.trail.enqueue_row(operation.row, fallback=operation.fallback)
        return await self.trail.enqueue_status(operation.update)

    async def _settle(self, delivery: _Delivery) -> None:
        """Acknowledge a message whose operations are all committed; otherwise redeliver, hold or quarantine."""
        message = delivery.message
        pairs = list(zip(delivery.operations, delivery.results, strict=True))
        if any(isinstance(r, BaseException) and not isinstance(r, AuditStoreError) for _, r in pairs):
            log.warning("stream message %s not written (the writer stopped); it will be delivered again", _seq(message))
            return
        refused = [(i, r) for i, (_, r) in enumerate(pairs) if isinstance(r, AuditStoreError)]
        if refused:
            if message.metadata.num_delivered < STORE_REFUSALS_BEFORE_QUARANTINE:  # a passing state retrying cures
                await _quietly(message.nak(delay=MAX_RETRY_DELAY))
                return
            indexes = ", ".join(str(i) for i, _ in refused)
            reason = f"the store refused operation(s) {indexes}: {refused[0][1]}"
            if not await self._quarantine([(message, reason, message.data)], settle=False):
                return
        if message.metadata.num_delivered > 1:
            self.stats.redelivered += 1
        waiting = [op for op, r in pairs if isinstance(op, wire.StatusOperation) and r is False]
        if waiting and self._age(message) < self.orphan_after:
            task = asyncio.create_task(self._hold(delivery, waiting))
            self._held.add(task)
            task.add_done_callback(self._held.discard)
            return
        self._count(pairs, orphans=waiting)
        await _quietly(message.ack())

    async def _hold(self, delivery: _Delivery, waiting: list[wire.StatusOperation]) -> None:
        """Write ``waiting`` again (their records were not stored yet) until they apply or are given up; then ack."""
        message = delivery.message
        deliveries = message.metadata.num_delivered
        attempt = 0
        while waiting and self._age(message) < self.orphan_after and not self._stopping.is_set():
            self.stats.waiting_for_record += len(waiting)
            attempt += 1
            await _quietly(message.in_progress())
            await asyncio.sleep(min(MAX_RETRY_DELAY, 0.05 * 2 ** min(attempt + deliveries, 10)))
            futures = [await self.trail.enqueue_status(op.update) for op in waiting]
            results = await asyncio.gather(*futures, return_exceptions=True)
            if any(isinstance(r, BaseException) for r in results):
                return  # the writer stopped or the store refused: delivered again after ack_wait
            waiting = [op for op, stored in zip(waiting, results, strict=True) if stored is False]
        if waiting and self._stopping.is_set():
            return  # left for redelivery: another run writes them
        self._count(list(zip(delivery.operations, delivery.results, strict=True)), orphans=waiting)
        await _quietly(message.ack())

    def _count(
        self, pairs: Sequence[tuple[wire.Operation, object]], *, orphans: Sequence[wire.StatusOperation]
    ) -> None:
        for operation in orphans:
            log.warning(
                "status update of message %r given up: its record did not arrive within %gs",
                operation.update.message_id,
                self.orphan_after,
            )
        self.stats.orphaned += len(orphans)
        committed = [op for op, result in pairs if not isinstance(result, BaseException)]
        records = sum(isinstance(op, wire.RecordOperation) for op in committed)
        self.stats.records += records
        self.stats.updates += len(committed) - records - len(orphans)
        self.stats.operations += len(committed)
        self.stats.messages += 1

    async def _quarantine(self, refused: Sequence[tuple[Msg, str, bytes]], *, settle: bool = True) -> bool:
        """Keep ``refused`` messages in the store's quarantine, then (``settle``) take them off the stream.

        If the store cannot take them now, they are delivered again later
        (``False``): a refused message is never dropped.
        """
        kept = [
            QuarantinedMessage(self.address.display(), _position(message), reason, body)
            for message, reason, body in refused
        ]
        try:
            await self.trail.quarantine(kept)
        except AuditError as exc:
            log.warning("could not quarantine %d stream message(s) yet (%s); they stay in the stream", len(kept), exc)
            for message, _, _ in refused:
                await _quietly(message.nak(delay=MAX_RETRY_DELAY))
            return False
        for message, reason, _ in refused:
            self.stats.quarantined += 1
            log.error("stream message %s quarantined: %s", _seq(message), reason)
            if settle:
                await _quietly(message.term())
        return True

    def _age(self, message: Msg) -> float:
        return (datetime.now(UTC) - message.metadata.timestamp).total_seconds()

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
        self, consumers: list[Any], on_progress: Callable[[IngestStats], None] | None, interval: float
    ) -> None:
        last_count, last_time = self.stats.operations, time.monotonic()
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(nats.errors.Error):
                pending = 0
                for subscription in consumers:
                    info = await subscription.consumer_info()
                    pending += info.num_pending + info.num_ack_pending
                self.stats.pending = pending
            now = time.monotonic()
            self.stats.rate = (self.stats.operations - last_count) / (now - last_time)
            last_count, last_time = self.stats.operations, now
            if on_progress is not None:
                on_progress(self.stats)

    def _watch_metrics(self, meter_provider: MeterProvider | None) -> None:
        meter = get_meter(meter_provider)
        attributes = {"messaging.system": "nats", "messaging.destination.name": self.address.stream}
        stats = self.stats

        def observe(read: Callable[[], float | None]) -> Callable[[CallbackOptions], list[Observation]]:
            def callback(options: CallbackOptions) -> list[Observation]:
                from opentelemetry.metrics import Observation

                value = read()
                return [] if value is None else [Observation(value, attributes)]

            return callback

        meter.create_observable_gauge(
            "audit_plugin.ingest.pending",
            [observe(lambda: stats.pending)],
            unit="{message}",
            description="Stream messages not yet ingested (the consumers' lag)",
        )
        meter.create_observable_counter(
            "audit_plugin.ingest.operations",
            [observe(lambda: stats.operations)],
            unit="{operation}",
            description="Operations ingested",
        )
        meter.create_observable_gauge(
            "audit_plugin.ingest.rate",
            [observe(lambda: stats.rate)],
            unit="{operation}/s",
            description="Operations ingested per second",
        )
        meter.create_observable_counter(
            "audit_plugin.ingest.redelivered",
            [observe(lambda: stats.redelivered)],
            unit="{message}",
            description="Stream messages delivered more than once",
        )
        meter.create_observable_counter(
            "audit_plugin.ingest.quarantined",
            [observe(lambda: stats.quarantined)],
            unit="{message}",
            description="Stream messages kept in quarantine instead of stored",
        )


async def ingest(
    source: str,
    database_url: str,
    *,
    exit_when_idle: bool = False,
    on_progress: Callable[[IngestStats], None] | None = None,
    **options: Any,
) -> IngestStats:
    """Open a trail on ``database_url`` (with the stream's shard count) and run a :class:`JetStreamIngester` into it."""
    async with MessageAuditTrail(database_url, shards=await stream_shard_count(source)) as trail:
        ingester = JetStreamIngester(source, trail, **options)
        return await ingester.run(exit_when_idle=exit_when_idle, on_progress=on_progress)


async def stream_shard_count(source: str) -> int:
    """How many shards the stream at ``source`` is published in (it is created if missing, as producers do)."""
    address = parse_address(source, "source")
    client, js = await connect(address, name="audit-plugin ingester")
    try:
        return await ensure_stream(js, address)
    finally:
        with contextlib.suppress(nats.errors.Error, OSError):
            await client.close()


def _seq(message: Msg) -> str:
    with contextlib.suppress(Exception):
        return f"#{message.metadata.sequence.stream}"
    return "?"


def _position(message: Msg) -> str:
    return f"stream sequence {_seq(message).lstrip('#')}, subject {message.subject}"


async def _quietly(acknowledgement: Any) -> None:
    """Send an acknowledgement; one lost to a broken connection is redelivered and rewritten harmlessly."""
    with contextlib.suppress(nats.errors.Error, OSError):
        await acknowledgement
