"""``MessageAuditTrail``: the user-facing store of audit records.

Writes go through the group-commit :class:`~audit_plugin.writer.AuditWriter`;
reads go straight to the backend. The backend is chosen by the database URL
from the installed extensions (``audit_plugin`` entry points).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import pluggy

from audit_plugin import validation as v
from audit_plugin.backend import BUCKET_UNITS, AuditBackend, BucketUnit, LedgerStore
from audit_plugin.capture import MessageCapture, PayloadPolicy
from audit_plugin.checkpoint import Checkpoint, require_checkpoint
from audit_plugin.crypto import KeyProvider, SubjectResolver
from audit_plugin.exceptions import ChainError, InvalidFieldError, TrailStateError
from audit_plugin.ledger import DEFAULT_CHAIN_ID, Ledger
from audit_plugin.lifecycle import LifecycleStep
from audit_plugin.messages import Message, MessageStatus
from audit_plugin.privacy import PayloadProtection
from audit_plugin.records import (
    AuditQuery,
    AuditRecord,
    AuditStatistics,
    IdMatches,
    RetentionPolicy,
    StatusUpdate,
)
from audit_plugin.registry import create_backend, extension_manager, resolve_database_url
from audit_plugin.store_errors import mapped_stream, store_errors
from audit_plugin.tracing import TRACE_URL_ENV, check_trace_url_template, trace_url
from audit_plugin.verify import VerifyReport
from audit_plugin.writer import AuditWriter, OverflowPolicy, WriterStats

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///audit.db"


class MessageAuditTrail:
    """An audit trail of inter-agent messages in a SQL store.

    :param database_url: ``sqlite+aiosqlite:///path.db`` (default
        ``./audit.db``) or ``postgresql+asyncpg://user@host/db``; any scheme an
        installed backend extension serves.
    :param retention_policy: how long ``apply_retention_policy()`` keeps records: a
        :class:`RetentionPolicy`, or its name in any case (``"days_365"``).
    :param batch_size: most operations written per transaction.
    :param batch_interval: seconds the writer lingers for a batch to fill
        (default 0: write as soon as the previous transaction ends).
    :param max_queue: most operations waiting for the writer.
    :param overflow: what a full queue does: ``"block"`` (wait for space),
        ``"drop_newest"`` or ``"drop_oldest"`` (drop and count).
    :param plugin_manager: where to look for backends and ``audit_redact``
        rules; defaults to the installed ``audit_plugin`` entry points.
    :param trace_url_template: trace-viewer link for :meth:`trace_url`, e.g.
        ``http://localhost:16686/trace/{trace_id}``; read from the environment
        variable ``AUDIT_TRACE_URL_TEMPLATE`` when not given.
    :param payload_policy: size cap, depth limit and redacted field names
        (see :class:`~audit_plugin.capture.PayloadPolicy`; defaults apply).
    :param key_provider: encrypt payloads at rest (AES-GCM, one data key per
        subject, wrapped by this provider's master key); reads decrypt them.
    :param subject_of: the data subject of a message, for encryption and
        :meth:`erase_subject` (default: header ``audit-subject``, else ``from_agent``).
    :param chain_id: the hash chain this trail extends (one per database is usual).
    :param hash_chain: link every lifecycle entry into the tamper-evident hash
        chain (``False`` keeps the lifecycle but not the hashes).

    Use as ``async with MessageAuditTrail(...) as trail:`` or call
    ``initialize()`` and ``close()`` yourself.
    """

    def __init__(
        self,
        database_url: str = DEFAULT_DATABASE_URL,
        retention_policy: RetentionPolicy | str = RetentionPolicy.DAYS_90,
        *,
        batch_size: int = 1000,
        batch_interval: float = 0.0,
        max_queue: int = 100_000,
        overflow: OverflowPolicy = "block",
        plugin_manager: pluggy.PluginManager | None = None,
        trace_url_template: str | None = None,
        payload_policy: PayloadPolicy | None = None,
        key_provider: KeyProvider | None = None,
        subject_of: SubjectResolver | None = None,
        chain_id: str = DEFAULT_CHAIN_ID,
        hash_chain: bool = True,
    ) -> None:
        if not isinstance(retention_policy, RetentionPolicy | str):
            raise v.FieldTypeError("retention_policy", "RetentionPolicy or its name", retention_policy)
        retention_policy = v.check_enum("retention_policy", RetentionPolicy, retention_policy)
        self.database_url = resolve_database_url(database_url)  # postgres://, a bare path...: the async driver's URL
        self.retention_policy = retention_policy
        self.plugin_manager = plugin_manager or extension_manager()
        self.ledger = Ledger(chain_id, hashing=hash_chain)
        self.backend: AuditBackend = create_backend(self.database_url, self.plugin_manager)
        if isinstance(self.backend, LedgerStore):
            self.backend.use_ledger(self.ledger)
        self.protection = PayloadProtection(self.plugin_manager, self.backend, payload_policy, key_provider, subject_of)
        self._capture = MessageCapture(self.protection.capture, self.ledger)
        self.trace_url_template = check_trace_url_template(
            trace_url_template if trace_url_template is not None else os.environ.get(TRACE_URL_ENV) or None,
            "trace_url_template" if trace_url_template is not None else TRACE_URL_ENV,
        )
        self._batch_listeners: list[Callable[[int, float], None]] = []
        self._writer_options: dict[str, Any] = {
            "batch_size": batch_size,
            "batch_interval": batch_interval,
            "max_queue": max_queue,
            "overflow": overflow,
            "on_batch": self._batch_committed,
        }
        AuditWriter(self.backend, **self._writer_options)  # validate options now, not at initialize()
        self._writer: AuditWriter | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------

    async def initialize(self) -> None:
        """Create the table and indexes if missing and start the writer. Idempotent."""
        if self._closed:
            raise TrailStateError("this MessageAuditTrail is closed; create a new one")
        if self._writer is not None:
            return
        await self.backend.initialize()
        self._writer = AuditWriter(self.backend, **self._writer_options)
        self._writer.start()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every record and update queued so far is committed."""
        await self._require_writer().flush(timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Flush everything queued, stop the writer and release connections.

        With ``timeout`` set, raises :class:`~audit_plugin.exceptions.AuditTimeoutError`
        if the store does not take the queued records in time (they are
        reported as lost in the error, never silently discarded).
        """
        if self._closed:
            return
        v.check_seconds("timeout", timeout, optional=True)  # before closing: a bad value leaves the trail open
        self._closed = True
        try:
            if self._writer is not None:
                await self._writer.stop(timeout)
        finally:
            await self.backend.close()

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closed

    @property
    def writer(self) -> AuditWriter:
        """The group-commit writer (its ``stats``; retry delays can be tuned on it)."""
        return self._require_writer()

    @property
    def writer_stats(self) -> WriterStats:
        """Counters of the write pipeline: written, dropped, failed, abandoned, queue depth...

        Still readable after :meth:`close` (the final counts, e.g. what a
        timed-out close abandoned); before :meth:`initialize` it is an error.
        """
        if self._closed and self._writer is not None:
            return self._writer.stats
        return self._require_writer().stats

    @property
    def max_queue(self) -> int:
        """Capacity of the write queue; when full, the overflow policy applies."""
        return int(self._writer_options["max_queue"])

    def add_batch_listener(self, listener: Callable[[int, float], None]) -> None:
        """Call ``listener(operations, seconds)`` after each committed batch (metrics use this).

        Listeners run on the writer task and must be quick; one that raises is
        logged and does not disturb the writer.
        """
        self._batch_listeners.append(listener)

    def _batch_committed(self, count: int, seconds: float) -> None:
        for listener in self._batch_listeners:
            try:
                listener(count, seconds)
            except Exception:
                log.exception("audit batch listener %r failed", listener)

    def _require_writer(self) -> AuditWriter:
        if self._closed:
            raise TrailStateError("this MessageAuditTrail is closed")
        if self._writer is None:
            raise TrailStateError("call `await trail.initialize()` (or use `async with`) first")
        return self._writer

    # -- writing --------------------------------------------------------------------

    async def log_message(self, message: Message, *, trace_id: str | None = None, span_id: str | None = None) -> str:
        """Record ``message`` as PENDING; return its ``message_id`` once committed.

        Logging a message that is already stored keeps the stored row and
        returns normally. Raises a typed error naming the field for anything
        that cannot be stored, before anything is written.
        """
        future = await self.enqueue_message(message, trace_id=trace_id, span_id=span_id)
        await future
        return message.message_id

    async def enqueue_message(
        self,
        message: Message,
        *,
        status: MessageStatus = MessageStatus.PENDING,
        trace_id: str | None = None,
        span_id: str | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        """Validate and queue ``message``; return a future resolved at commit.

        Under the ``"block"`` policy this waits for space in the queue, at
        most ``timeout`` seconds (then the record is dropped and counted).
        """
        writer = self._require_writer()
        await self.protection.prepare(message)
        row = self._capture.row(message, status=status, trace_id=trace_id, span_id=span_id)
        return await writer.put(row=row, timeout=timeout)

    def enqueue_message_nowait(
        self, message: Message, *, trace_id: str | None = None, span_id: str | None = None
    ) -> asyncio.Future[Any] | None:
        """Validate and queue ``message`` without waiting.

        Returns ``None`` when that would need waiting: the queue is full under
        the ``"block"`` policy, or the message's data subject has no data key
        loaded yet (encryption). Use :meth:`enqueue_message` then.
        """
        writer = self._require_writer()
        if (writer.overflow == "block" and writer.is_full()) or not self.protection.ready(message):
            return None
        return writer.submit(row=self._capture.row(message, trace_id=trace_id, span_id=span_id))

    async def update_message_status(
        self,
        message_id: str,
        status: MessageStatus,
        delivered_at: datetime | None = None,
        error_message: str | None = None,
        retry_count: int | None = None,
        *,
        operation_id: str | None = None,
    ) -> bool:
        """Set a message's status (and, when given, delivery time, error, retries).

        Returns ``False`` if no message with ``message_id`` is stored. Fields
        left as ``None`` keep their stored value. A message whose status is
        final (DELIVERED, FAILED, EXPIRED) keeps it: a later update is kept in
        its lifecycle as a ``"late"`` step and not applied. An update whose
        ``operation_id`` the message already holds changes nothing (a
        redelivered report); see ``docs/lifecycle.md``.
        """
        update = StatusUpdate.build(
            message_id, status, delivered_at, error_message, retry_count, operation_id=operation_id
        )
        future = await self._require_writer().put(update=update)
        return bool(await future)

    async def record_retry(
        self, message_id: str, attempt: int, error_message: str | None, *, operation_id: str | None = None
    ) -> bool:
        """Append retry number ``attempt`` (1 for the first) after ``error_message`` to the lifecycle.

        The status stays PENDING with ``retry_count = attempt``; a retry of a
        message whose status is final is kept as a ``"late"`` step and not
        applied. Deduplicated by ``operation_id`` like any status update.
        Returns ``False`` if no message with ``message_id`` is stored.
        """
        update = StatusUpdate.retry(message_id, attempt, error_message, operation_id=operation_id)
        future = await self._require_writer().put(update=update)
        return bool(await future)

    async def record_outcome(
        self,
        message: Message,
        status: MessageStatus,
        *,
        delivered_at: datetime | None = None,
        error_message: str | None = None,
        retry_count: int | None = None,
        operation_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> None:
        """Record ``message``'s outcome as the consume side saw it; return once committed.

        ``message`` is stored as its record (PENDING) unless a record with its
        ``message_id`` is stored already (normally the producer's), and the
        outcome is applied to whichever record is stored, in the same
        transaction: an outcome that overtakes the producer's record, or has
        no producer's record at all, is never lost. A producer's record
        arriving later is a no-op, so it never moves a final status back.
        The status rules and ``operation_id`` are those of
        :meth:`update_message_status`.
        """
        await (
            await self.enqueue_outcome(
                message,
                status,
                delivered_at=delivered_at,
                error_message=error_message,
                retry_count=retry_count,
                operation_id=operation_id,
                trace_id=trace_id,
                span_id=span_id,
            )
        )

    async def enqueue_outcome(
        self,
        message: Message,
        status: MessageStatus,
        *,
        delivered_at: datetime | None = None,
        error_message: str | None = None,
        retry_count: int | None = None,
        operation_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        """Validate and queue :meth:`record_outcome`'s record and outcome as one operation; return its future.

        The future resolves when both are committed (``"buffered"``
        durability need not wait for it). Under the ``"block"`` policy this
        waits for queue space, at most ``timeout`` seconds.
        """
        writer = self._require_writer()
        if not isinstance(message, Message):
            raise v.FieldTypeError("message", "audit_plugin.Message", message)
        update = StatusUpdate.build(
            message.message_id, status, delivered_at, error_message, retry_count, operation_id=operation_id
        )
        await self.protection.prepare(message)
        row = self._capture.row(message, fallback=True, trace_id=trace_id, span_id=span_id)
        return await writer.put(row=row, update=update, timeout=timeout)

    def enqueue_status_nowait(self, update: StatusUpdate) -> asyncio.Future[Any] | None:
        """Queue a validated status update without waiting; ``None`` if full and blocking."""
        writer = self._require_writer()
        if writer.overflow == "block" and writer.is_full():
            return None
        return writer.submit(update=update)

    async def enqueue_status(self, update: StatusUpdate, *, timeout: float | None = None) -> asyncio.Future[Any]:
        """Queue a validated status update, waiting for space (at most ``timeout`` s); resolves at commit."""
        return await self._require_writer().put(update=update, timeout=timeout)

    # -- reading --------------------------------------------------------------------

    async def query_messages(self, query: AuditQuery | None = None) -> list[AuditRecord]:
        """Records matching ``query`` (all filters combined), newest first, one page."""
        query = query if query is not None else AuditQuery()
        if not isinstance(query, AuditQuery):
            raise v.FieldTypeError("query", "AuditQuery", query)
        self._require_writer()
        with store_errors("query_messages"):
            records = await self.backend.query(query)
        return await self.protection.open(records)

    def stream_messages(
        self, query: AuditQuery | None = None, *, oldest_first: bool = True
    ) -> AsyncIterator[AuditRecord]:
        """Every record matching ``query``'s filters (limit/offset ignored), in constant memory."""
        self._require_writer()
        records = self.backend.stream(query if query is not None else AuditQuery(), oldest_first=oldest_first)
        return self.protection.open_stream(mapped_stream("stream_messages", records))

    async def get_message(self, message_id: str) -> AuditRecord | None:
        """The record of one message, or ``None``."""
        v.check_text("message_id", message_id)
        self._require_writer()
        with store_errors("get_message"):
            record = await self.backend.get(message_id)
        return None if record is None else (await self.protection.open([record]))[0]

    async def find_ids(self, fragment: str, *, limit: int = 10) -> IdMatches:
        """Message ids starting or ending with ``fragment``, correlation ids starting with it; ``limit`` of each.

        Lets people type back the short ids tables print (the random tail of
        a message id, :func:`~audit_plugin.messages.short_id`), or any
        unambiguous start of an id, as git accepts a prefix of a commit hash.
        """
        v.check_text("fragment", fragment)
        v.check_int("limit", limit, minimum=1)
        self._require_writer()
        with store_errors("find_ids"):
            starting = await self.backend.ids_with_prefix("message_id", fragment, limit)
            ending = await self.backend.ids_with_suffix("message_id", fragment, limit)
            correlation_ids = await self.backend.ids_with_prefix("correlation_id", fragment, limit)
        return IdMatches(message_ids=sorted({*starting, *ending})[:limit], correlation_ids=correlation_ids)

    async def get_conversation_history(self, correlation_id: str) -> list[AuditRecord]:
        """Every message of a conversation, oldest first."""
        v.check_text("correlation_id", correlation_id)
        self._require_writer()
        return [record async for record in self.stream_messages(AuditQuery(correlation_id=correlation_id))]

    async def get_trace(self, trace_id: str) -> list[AuditRecord]:
        """Every message recorded in one OpenTelemetry trace, oldest first."""
        self._require_writer()
        return [record async for record in self.stream_messages(AuditQuery(trace_id=trace_id))]

    def trace_url(self, record: AuditRecord | str) -> str | None:
        """The trace-viewer link for ``record`` (or a trace id), or ``None``.

        ``None`` when no ``trace_url_template`` is configured or the record has
        no trace (it was sent without a sampled span).
        """
        if self.trace_url_template is None:
            return None
        return trace_url(record, self.trace_url_template)

    async def get_agent_communication_history(
        self, agent_id: str, days: int = 7, limit: int | None = None
    ) -> list[AuditRecord]:
        """Messages ``agent_id`` sent or received in the last ``days`` days, newest first."""
        v.check_text("agent_id", agent_id)
        since = v.days_ago("days", days)
        v.check_int("limit", limit, minimum=1, maximum=v.INT64_MAX, optional=True)
        self._require_writer()
        with store_errors("get_agent_communication_history"):
            records = await self.backend.agent_history(agent_id, since, limit)
        return await self.protection.open(records)

    async def get_statistics(
        self, start_time: datetime | None = None, end_time: datetime | None = None
    ) -> AuditStatistics:
        """Aggregates over messages created in ``[start_time, end_time]`` (all by default)."""
        start = v.to_utc("start_time", start_time, optional=True)
        end = v.to_utc("end_time", end_time, optional=True)
        self._require_writer()
        with store_errors("get_statistics"):
            return await self.backend.statistics(start, end)

    async def count_messages(self, query: AuditQuery | None = None) -> int:
        """How many records match ``query``'s filters (limit/offset ignored)."""
        query = query if query is not None else AuditQuery()
        if not isinstance(query, AuditQuery):
            raise v.FieldTypeError("query", "AuditQuery", query)
        self._require_writer()
        with store_errors("count_messages"):
            return await self.backend.count(query)

    async def get_delivery_percentiles(
        self,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        percentiles: Sequence[float] = (50, 95, 99),
    ) -> dict[float, float | None]:
        """Delivery-latency percentiles in seconds, e.g. ``{50: 0.004, 95: 0.02, 99: 0.3}``.

        Nearest-rank over DELIVERED messages created in ``[start_time,
        end_time]``: the p-th percentile is the smallest latency with at least
        p% of deliveries at or below it. ``None`` when nothing was delivered.
        """
        start = v.to_utc("start_time", start_time, optional=True)
        end = v.to_utc("end_time", end_time, optional=True)
        for p in percentiles:
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 100:
                raise InvalidFieldError("percentiles", f"each must be a number from 0 to 100, got {p!r}")
        self._require_writer()
        with store_errors("get_delivery_percentiles"):
            return await self.backend.delivery_percentiles(start, end, list(percentiles))

    async def get_message_volume(
        self, start_time: datetime | None = None, end_time: datetime | None = None, bucket: BucketUnit = "hour"
    ) -> list[tuple[datetime, int]]:
        """Messages created per ``bucket`` ("minute", "hour", "day", UTC), oldest first; empty buckets absent."""
        start = v.to_utc("start_time", start_time, optional=True)
        end = v.to_utc("end_time", end_time, optional=True)
        if bucket not in BUCKET_UNITS:
            raise InvalidFieldError("bucket", f"{bucket!r} is not one of {', '.join(BUCKET_UNITS)}")
        self._require_writer()
        with store_errors("get_message_volume"):
            return await self.backend.message_volume(start, end, bucket)

    # -- retention ------------------------------------------------------------------

    def retention_cutoff(self, now: datetime | None = None) -> datetime | None:
        """Records created before this time are past the retention policy (``None``: keep forever)."""
        max_age = self.retention_policy.max_age
        if max_age is None:
            return None
        now = v.to_utc("now", now, optional=True) or datetime.now(UTC)
        try:
            return now - max_age
        except OverflowError:  # nothing can be older than the first representable time
            return datetime.min.replace(tzinfo=UTC)

    async def apply_retention_policy(self) -> int:
        """Delete records older than the retention policy allows; return how many."""
        cutoff = self.retention_cutoff()
        self._require_writer()
        if cutoff is None:
            return 0
        with store_errors("apply_retention_policy"):
            return await self.backend.delete_older_than(cutoff)

    async def count_past_retention(self) -> int:
        """How many records ``apply_retention_policy()`` would delete now."""
        cutoff = self.retention_cutoff()
        self._require_writer()
        if cutoff is None:
            return 0
        with store_errors("count_past_retention"):
            return await self.backend.count_older_than(cutoff)

    async def apply_retention_policy_in_chunks(self, chunk_size: int = 10_000) -> AsyncIterator[int]:
        """Apply the retention policy ``chunk_size`` rows per transaction, yielding each chunk's count.

        For large deletions: each transaction is short (other writers are not
        held up), memory stays flat, and the caller can report progress.
        Stopping early leaves the remaining old records for the next run.
        """
        v.check_int("chunk_size", chunk_size, minimum=1, maximum=v.INT64_MAX)
        cutoff = self.retention_cutoff()
        self._require_writer()
        if cutoff is None:
            return
        async for deleted in mapped_stream(
            "apply_retention_policy_in_chunks", self.backend.delete_older_than_in_chunks(cutoff, chunk_size)
        ):
            yield deleted

    # -- erasure --------------------------------------------------------------------

    async def erase_subject(self, subject_id: str) -> int:
        """Crypto-shred everything recorded for ``subject_id``; return how many data keys were destroyed.

        The subject's wrapped data keys are destroyed, so its encrypted
        payloads can never be decrypted again; reads return them as
        ``{"$audit": "erased", "subject_id": ..., "erased_at": ...}``.
        Everything else (who, when, status, the lifecycle) stays, and so does
        the hash chain (it covers the ciphertext). Payloads stored in clear
        (before encryption was turned on) are not affected. Later messages of
        the subject get a new key.
        """
        self._require_writer()
        return await self.protection.erase_subject(subject_id)

    # -- integrity ------------------------------------------------------------------

    def _ledger_store(self) -> LedgerStore:
        self._require_writer()
        if not isinstance(self.backend, LedgerStore):
            name = self.backend.name
            raise ChainError(f"the lifecycle and hash chain need a store that keeps them; {name!r} does not")
        return self.backend

    async def get_message_history(self, message_id: str) -> list[LifecycleStep]:
        """The lifecycle of one message (recorded, each retry, each status change), oldest first.

        Each step carries the seconds spent in it until the next step.
        Empty if the message is unknown.
        """
        v.check_text("message_id", message_id)
        store = self._ledger_store()
        with store_errors("get_message_history"):
            return await store.message_history(message_id)

    async def verify(self, against: Checkpoint | None = None) -> VerifyReport:
        """Walk this trail's hash chain and report the first broken link, or OK with the count.

        Streams in bounded memory. Without ``against`` it cannot notice that
        the newest entries were cut off or that the whole chain was
        recomputed; pass a :class:`~audit_plugin.checkpoint.Checkpoint` kept
        elsewhere to detect both. Records queued but not yet committed are
        not covered: call :meth:`flush` first.
        """
        if against is not None:
            require_checkpoint(against, self.ledger.chain_id)
        store = self._ledger_store()
        with store_errors("verify"):
            return await store.verify_chain(against)

    async def checkpoint(self, signing_key: Any = None) -> Checkpoint:
        """Flush, then return the chain's head (sequence, hash, time), signed if ``signing_key`` is given.

        ``signing_key`` is a ``cryptography`` ``Ed25519PrivateKey``. Keep the
        checkpoint outside this database and pass it to :meth:`verify` later.
        """
        await self.flush()
        with store_errors("checkpoint"):
            head = await self._ledger_store().chain_head()
        checkpoint = Checkpoint(self.ledger.chain_id, head.sequence, head.hash, datetime.now(UTC))
        return checkpoint.signed(signing_key) if signing_key is not None else checkpoint
