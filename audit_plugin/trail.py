"""``MessageAuditTrail``: the user-facing store of audit records.

Writes go through the group-commit :class:`~audit_plugin.storage.writer.AuditWriter`;
reads go straight to the backend. The backend is chosen by the database URL
from the installed extensions (``audit_plugin`` entry points).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

import pluggy

from audit_plugin.exceptions import ChainError, InvalidFieldError, TrailStateError
from audit_plugin.integrity.checkpoint import Checkpoint, require_checkpoint
from audit_plugin.integrity.ledger import DEFAULT_CHAIN_ID, ChainEntry, Ledger, LedgeredRow
from audit_plugin.integrity.proof_bundle import ProofBundle
from audit_plugin.integrity.shards import ShardedChains, shard_checkpoints
from audit_plugin.integrity.tree_checkpoint import (
    DEFAULT_ORIGIN,
    CheckpointPolicy,
    TreeCheckpoint,
    check_origin,
    check_signing_key,
)
from audit_plugin.integrity.verify import ShardsReport, VerifyReport
from audit_plugin.masking import mask_url
from audit_plugin.model import validation as v
from audit_plugin.model.access import AccessEntry, Actor, Reading, check_actor_name
from audit_plugin.model.lifecycle import LifecycleStep
from audit_plugin.model.messages import Message, MessageStatus
from audit_plugin.model.records import (
    MAX_QUERY_LIMIT,
    AuditQuery,
    AuditRecord,
    AuditStatistics,
    IdMatches,
    RetentionPolicy,
    StatusUpdate,
)
from audit_plugin.privacy.capture import MessageCapture, PayloadPolicy
from audit_plugin.privacy.crypto import KeyProvider, SubjectResolver
from audit_plugin.privacy.protection import PayloadProtection
from audit_plugin.storage.backend import (
    BUCKET_UNITS,
    AuditBackend,
    BucketUnit,
    ChainFeed,
    LedgerStore,
    QuarantineStore,
    SupportsTrees,
)
from audit_plugin.storage.committed import CommittedBatch
from audit_plugin.storage.errors import mapped_stream, store_errors
from audit_plugin.storage.quarantine import QuarantinedMessage
from audit_plugin.storage.registry import create_backend, extension_manager, resolve_database_url
from audit_plugin.storage.tree_log import CheckpointCheck, TreeLog
from audit_plugin.storage.writer import AuditWriter, OverflowPolicy, WriterStats, check_writer_options
from audit_plugin.telemetry.tracing import TRACE_URL_ENV, check_trace_url_template, trace_url

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///audit.db"


class OutcomeFields(TypedDict, total=False):
    """The keywords of :meth:`MessageAuditTrail.record_outcome`: the outcome and the record's trace ids."""

    delivered_at: datetime | None
    error_message: str | None
    retry_count: int | None
    operation_id: str | None
    trace_id: str | None
    span_id: str | None


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
        (see :class:`~audit_plugin.privacy.capture.PayloadPolicy`; defaults apply).
    :param key_provider: encrypt payloads at rest (AES-GCM, one data key per
        subject, wrapped by this provider's master key); reads decrypt them.
    :param subject_of: the data subject of a message, for encryption and
        :meth:`erase_subject` (default: header ``audit-subject``, else ``from_agent``).
    :param chain_id: the hash chain this trail extends (one per database is usual).
    :param shards: keep the chain in this many independent chains (shards,
        by message id: see :mod:`audit_plugin.integrity.shards`), so writers
        of different shards never wait for each other; fixed when the store's
        chain is first written. ``None`` (the default): as many as the store
        has, one for a new store.
    :param hash_chain: link every lifecycle entry into the tamper-evident hash
        chain (``False`` keeps the lifecycle but not the hashes).
    :param checkpoint_policy: sign and store a checkpoint of the Merkle trees
        over the chains on a schedule and at close (see
        :class:`~audit_plugin.integrity.tree_checkpoint.CheckpointPolicy`);
        without it, checkpoints are signed on demand (:meth:`sign_checkpoint`).
    :param merkle_tree: keep the Merkle tree over this trail's chain after each
        commit (``False``: not by this trail; a later trail, or ``prove()``,
        catches it up from the chain).

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
        shards: int | None = None,
        hash_chain: bool = True,
        checkpoint_policy: CheckpointPolicy | None = None,
        merkle_tree: bool = True,
    ) -> None:
        if not isinstance(retention_policy, RetentionPolicy | str):
            raise v.FieldTypeError("retention_policy", "RetentionPolicy or its name", retention_policy)
        retention_policy = v.check_enum("retention_policy", RetentionPolicy, retention_policy)
        self.database_url = resolve_database_url(database_url)  # postgres://, a bare path...: the async driver's URL
        self.retention_policy = retention_policy
        self.plugin_manager = plugin_manager or extension_manager()
        self.chains = ShardedChains(chain_id, shards=shards, hashing=hash_chain)
        """The trail's chains, one per shard (a store with one chain: just ``chain_id``)."""
        self.backend: AuditBackend = create_backend(self.database_url, self.plugin_manager)
        if isinstance(self.backend, LedgerStore):
            self.backend.use_ledger(self.chains)
        elif shards is not None:
            raise InvalidFieldError(
                "shards", f"the {self.backend.name!r} store keeps no chain (a nats:// URL takes ?shards=N)"
            )
        if checkpoint_policy is not None and not isinstance(checkpoint_policy, CheckpointPolicy):
            raise v.FieldTypeError("checkpoint_policy", "CheckpointPolicy", checkpoint_policy)
        self._tree_log: TreeLog | None = None
        if not isinstance(merkle_tree, bool):
            raise v.FieldTypeError("merkle_tree", "bool", merkle_tree)
        if isinstance(self.backend, SupportsTrees) and hash_chain and merkle_tree:
            self._tree_log = TreeLog(self.backend.tree_storage(), self.chains.chain_ids, checkpoint_policy)
        elif checkpoint_policy is not None:
            raise InvalidFieldError(
                "checkpoint_policy", "needs a store that keeps Merkle trees, hash_chain=True and merkle_tree=True"
            )
        self.protection = PayloadProtection(self.plugin_manager, self.backend, payload_policy, key_provider, subject_of)
        self._capture = MessageCapture(self.protection.capture, self.chains)
        self.trace_url_template = check_trace_url_template(
            trace_url_template if trace_url_template is not None else os.environ.get(TRACE_URL_ENV) or None,
            "trace_url_template" if trace_url_template is not None else TRACE_URL_ENV,
        )
        check_writer_options(batch_size, batch_interval, max_queue, overflow)
        self._writer_options: dict[str, Any] = {
            "batch_size": batch_size,
            "batch_interval": batch_interval,
            "max_queue": max_queue,
            "overflow": overflow,
            "on_batch": self._batch_committed,
        }
        self._writer: AuditWriter | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"MessageAuditTrail({mask_url(self.database_url)!r}, chain_id={self.chain_id!r})"

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
        if self._tree_log is not None:
            self._tree_log.start(self.chains.chain_ids)  # the store's shards, now they are known

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
            try:
                if self._tree_log is not None:
                    await self._tree_log.stop()
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

    def note_commit_timeout(self) -> None:
        """Count a sender that stopped waiting for its commit (in ``writer_stats.commit_timeouts``)."""
        if self._writer is not None:  # counted after close() too: the final stats stay readable
            self._writer.stats.commit_timeouts += 1

    @property
    def ledger(self) -> Ledger:
        """The ledger of the trail's chain (of its first shard, when it has several)."""
        return self.chains.ledgers[0]

    @ledger.setter
    def ledger(self, ledger: Ledger) -> None:
        self.chains = ShardedChains.of(ledger)
        self._capture.ledger = self.chains

    @property
    def chain_id(self) -> str:
        """The hash chain this trail extends (with several shards, their common id: each shard's is ``<id>/<k>``)."""
        return self.chains.base_id

    @property
    def shards(self) -> int:
        """How many chains (shards) the trail's lifecycle is kept in (the store's, once initialised)."""
        return self.chains.shards

    @property
    def max_queue(self) -> int:
        """Capacity of the write queue; when full, the overflow policy applies."""
        return int(self._writer_options["max_queue"])

    def _batch_committed(self, rows: Sequence[dict[str, Any]], updates: Sequence[StatusUpdate], seconds: float) -> None:
        """The writer committed a batch: tell the ``audit_batch_committed`` implementations, if there are any."""
        appended = self.chains.take_appended()
        if self._tree_log is not None:
            for chain in appended:
                self._tree_log.note(chain)
        hook = self.plugin_manager.hook.audit_batch_committed
        if not hook.get_hookimpls():
            return
        try:
            hook(batch=CommittedBatch(self, rows, updates, appended, seconds, isinstance(self.backend, LedgerStore)))
        except Exception:
            log.exception("an audit_batch_committed implementation failed")

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

    async def record_outcome(self, message: Message, status: MessageStatus, **outcome: Unpack[OutcomeFields]) -> None:
        """Record ``message``'s outcome as the consume side saw it; return once committed.

        ``message`` is stored as its record (PENDING) unless a record with its
        ``message_id`` is stored already (normally the producer's), and the
        outcome is applied to whichever record is stored, in the same
        transaction: an outcome that overtakes the producer's record, or has
        no producer's record at all, is never lost. A producer's record
        arriving later is a no-op, so it never moves a final status back.
        The status rules and ``operation_id`` are those of
        :meth:`update_message_status`; the keywords are those of
        :meth:`enqueue_outcome` (``delivered_at``, ``error_message``,
        ``retry_count``, ``operation_id``, ``trace_id``, ``span_id``).
        """
        await (await self.enqueue_outcome(message, status, **outcome))

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

    async def enqueue_row(
        self, row: Mapping[str, Any], *, fallback: bool = False, timeout: float | None = None
    ) -> asyncio.Future[Any]:
        """Queue a record built and checked elsewhere, as a ``message_audit_log`` row; resolves at commit.

        For transports that carry records already captured by the trail
        that sent them (the JetStream ingester: see :mod:`audit_plugin.jetstream`):
        the payload is stored as it arrived; only its lifecycle entry is made
        here. ``fallback``: the row is a consumer's copy that yields to a
        record stored first (as :meth:`enqueue_outcome` makes).
        """
        writer = self._require_writer()
        if not isinstance(row, LedgeredRow):
            row = self.seal_row(row, fallback=fallback)
        return await writer.put(row=row, timeout=timeout)  # type: ignore[arg-type]

    def seal_row(self, row: Mapping[str, Any], *, fallback: bool = False) -> LedgeredRow:
        """``row`` with its record entry's digests, as :meth:`enqueue_row` queues it (a fallback row's come later).

        A transport that carries the producer's digests compares them with
        these before queueing (the JetStream ingester does).
        """
        return self.chains.ledgered(row, fallback=fallback)

    async def quarantine(self, messages: Sequence[QuarantinedMessage]) -> None:
        """Keep transport messages that cannot be stored in the store's quarantine; return once committed.

        See :mod:`audit_plugin.storage.quarantine`. Raises
        :class:`~audit_plugin.exceptions.AuditStoreError` if the store cannot
        take them now (the transport keeps them then) or keeps no quarantine.
        """
        self._require_writer()
        if not isinstance(self.backend, QuarantineStore):
            raise ChainError(f"a quarantine needs a store that keeps one; {self.backend.name!r} does not")
        with store_errors("quarantine"):
            await self.backend.quarantine(messages)

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

    async def query_messages(
        self, query: AuditQuery | None = None, *, actor: Actor | str | Reading | None = None
    ) -> list[AuditRecord]:
        """Records matching ``query`` (all filters combined), newest first, one page.

        ``actor`` (on every read below too): who reads. The records are
        then shown as the actor's role allows (a reader's payloads masked,
        never decrypted), and the read is recorded in the hash chain as an
        access entry before the records are returned (see :meth:`record_access`);
        a :class:`~audit_plugin.model.access.Reading` gathers several reads
        into one entry, recorded when its owner calls :meth:`record_access`.
        """
        query = query if query is not None else AuditQuery()
        if not isinstance(query, AuditQuery):
            raise v.FieldTypeError("query", "AuditQuery", query)
        reading, now = self._reading(actor, "query", query_filter(query))
        self._require_writer()
        with store_errors("query_messages"):
            records = await self.backend.query(query)
        return await self._as_read(records, reading, now)

    def stream_messages(
        self,
        query: AuditQuery | None = None,
        *,
        oldest_first: bool = True,
        actor: Actor | str | Reading | None = None,
    ) -> AsyncIterator[AuditRecord]:
        """Every record matching ``query``'s filters (limit/offset ignored), in constant memory.

        With a one-off ``actor``, the access entry is recorded when the
        stream ends (or is closed).
        """
        query = query if query is not None else AuditQuery()
        if not isinstance(query, AuditQuery):
            raise v.FieldTypeError("query", "AuditQuery", query)
        reading, now = self._reading(actor, "stream", query_filter(query))
        self._require_writer()
        records = mapped_stream("stream_messages", self.backend.stream(query, oldest_first=oldest_first))
        if reading is None:
            return self.protection.open_stream(records)
        return self._read_stream(records, reading, now)

    async def _read_stream(
        self, records: AsyncIterator[AuditRecord], reading: Reading, record_at_end: bool
    ) -> AsyncIterator[AuditRecord]:
        try:
            async for record, decrypted in self.protection.open_stream_as(records, reading.role):
                reading.note([record.message_id], [record.message_id] if decrypted else [])
                yield record
        finally:
            if record_at_end:
                reading.note([])  # an empty stream is a read too
                await self.record_access(reading)

    async def get_message(self, message_id: str, *, actor: Actor | str | Reading | None = None) -> AuditRecord | None:
        """The record of one message, or ``None``."""
        v.check_text("message_id", message_id)
        reading, now = self._reading(actor, "message", {"message_id": message_id})
        self._require_writer()
        with store_errors("get_message"):
            record = await self.backend.get(message_id)
        opened = await self._as_read([] if record is None else [record], reading, now)
        return opened[0] if opened else None

    async def find_ids(self, fragment: str, *, limit: int = 10) -> IdMatches:
        """Message ids starting or ending with ``fragment``, correlation ids starting with it; ``limit`` of each
        (sorted; when more match, which ``limit`` is the store's choice).

        Lets people type back the short ids tables print (the random tail of
        a message id, :func:`~audit_plugin.model.messages.short_id`), or any
        unambiguous start of an id, as git accepts a prefix of a commit hash.
        """
        v.check_text("fragment", fragment)
        v.check_int("limit", limit, minimum=1)
        self._require_writer()
        with store_errors("find_ids"):
            return await self.backend.ids_matching(fragment, limit)

    async def get_conversation_history(
        self, correlation_id: str, *, actor: Actor | str | Reading | None = None
    ) -> list[AuditRecord]:
        """Every message of a conversation, oldest first."""
        v.check_text("correlation_id", correlation_id)
        return await self._all(AuditQuery(correlation_id=correlation_id), actor, "conversation")

    async def get_trace(self, trace_id: str, *, actor: Actor | str | Reading | None = None) -> list[AuditRecord]:
        """Every message recorded in one OpenTelemetry trace, oldest first."""
        return await self._all(AuditQuery(trace_id=trace_id), actor, "trace")

    async def _all(self, query: AuditQuery, actor: Actor | str | Reading | None, action: str) -> list[AuditRecord]:
        reading, now = self._reading(actor, action, query_filter(query))
        self._require_writer()
        records = [record async for record in self.stream_messages(query, actor=reading)]
        if now:
            assert reading is not None
            reading.note([])  # an empty result is a read too
            await self.record_access(reading)
        return records

    def trace_url(self, record: AuditRecord | str) -> str | None:
        """The trace-viewer link for ``record`` (or a trace id), or ``None``.

        ``None`` when no ``trace_url_template`` is configured or the record has
        no trace (it was sent without a sampled span).
        """
        if self.trace_url_template is None:
            return None
        return trace_url(record, self.trace_url_template)

    async def get_agent_communication_history(
        self, agent_id: str, days: int = 7, limit: int | None = None, *, actor: Actor | str | Reading | None = None
    ) -> list[AuditRecord]:
        """Messages ``agent_id`` sent or received in the last ``days`` days, newest first."""
        v.check_text("agent_id", agent_id)
        since = v.days_ago("days", days)
        v.check_int("limit", limit, minimum=1, maximum=v.INT64_MAX, optional=True)
        reading, now = self._reading(actor, "agent", {"agent_id": agent_id, "days": days, "limit": limit})
        self._require_writer()
        with store_errors("get_agent_communication_history"):
            records = await self.backend.agent_history(agent_id, since, limit)
        return await self._as_read(records, reading, now)

    # -- who reads: access entries ------------------------------------------------------

    def _reading(
        self, actor: Actor | str | Reading | None, action: str, filters: dict[str, Any]
    ) -> tuple[Reading | None, bool]:
        """The reading a read adds to (``actor`` itself when it is one), and whether the read records it itself."""
        if actor is None:
            return None, False
        if isinstance(actor, Reading):
            return actor, False
        return Reading(Actor.of(actor), action, filters), True

    async def _as_read(
        self, records: Sequence[AuditRecord], reading: Reading | None, record_now: bool
    ) -> list[AuditRecord]:
        """``records`` as the reader's role sees them; the read noted, and recorded first if ``record_now``."""
        if reading is None:
            return await self.protection.open(records)
        opened, decrypted = await self.protection.open_as(records, reading.role)
        reading.note([record.message_id for record in opened], decrypted)
        if record_now:
            await self.record_access(reading)  # fail closed: a read that cannot be recorded returns nothing
        return opened

    async def record_access(self, reading: Reading) -> AccessEntry | None:
        """Append what ``reading`` gathered since it was last recorded to the hash chain, as one access entry.

        The entry (kind ``"access"``: actor, role, channel, action, filter,
        records read, the first ids, the payloads decrypted) is linked and
        committed at once, in a transaction of its own holding the chain's
        writer lock; ``verify()`` checks it like every entry. Returns it, or
        ``None`` if nothing was read since. Raises if the store cannot
        record it (a store without a hash chain: :class:`~audit_plugin.exceptions.ChainError`).
        """
        if not isinstance(reading, Reading):
            raise v.FieldTypeError("reading", "Reading", reading)
        if reading.reads == 0:
            return None
        store = self._ledger_store()
        at, document = datetime.now(UTC), reading.document()
        with store_errors("record_access"):
            head = await store.append_entries([self.ledger.access_entry(at, reading.records, document)])
        reading.reset()
        assert head is not None
        return AccessEntry.from_document(self.chain_id, head.sequence, at, document, head.hash)

    async def access_log(
        self,
        *,
        limit: int = 100,
        before: int | None = None,
        by: str | None = None,
        actor: Actor | str | Reading | None = None,
    ) -> list[AccessEntry]:
        """The access entries of this trail's chain, newest first: who read what, when.

        ``before``: only entries numbered below it (paging); ``by``: only
        this actor's. Reading the access log needs the auditor role, and is
        itself recorded when ``actor`` is given.
        """
        v.check_int("limit", limit, minimum=1, maximum=10_000)
        v.check_int("before", before, minimum=1, maximum=v.INT64_MAX, optional=True)
        if by is not None:
            check_actor_name(by, "by")
        reading, now = self._reading(actor, "access-log", {"by": by, "before": before, "limit": limit})
        if reading is not None:
            reading.role.require(reading.role.may_read_access_log, "read the access log")
        store = self._ledger_store()
        entries: list[AccessEntry] = []
        cursor = before
        with store_errors("access_log"):
            while len(entries) < limit:
                rows = await store.access_entries(max(limit, 100), cursor)
                for sequence, at, document, entry_hash in rows:
                    entry = _access_entry(self.chain_id, sequence, at, document, entry_hash)
                    if by is None or entry.actor == by:
                        entries.append(entry)
                if len(rows) < max(limit, 100):
                    break
                cursor = rows[-1][0]
        if reading is not None:
            reading.note([])
            if now:
                await self.record_access(reading)
        return entries[:limit]

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

    async def lifecycle_entries(
        self, after: int = 0, *, limit: int = 1000, actor: Actor | str | Reading | None = None
    ) -> list[tuple[ChainEntry, AuditRecord | None]]:
        """The committed entries of this trail's chain numbered above ``after``, oldest first, at most ``limit``.

        Each ``"record"`` entry comes with its record as stored now (opened as
        :meth:`query_messages` opens it; ``None`` if retention removed it),
        every other entry with ``None``. Entries are numbered without gaps in
        commit order, so a reader that keeps the last ``sequence`` it handled
        and asks for what follows misses nothing and sees nothing twice
        (``audit-plugin export --follow`` does); a gap before the first entry
        returned means retention pruned those entries first. With ``actor``,
        only a role that may export reads them, and the read is recorded.
        """
        v.check_int("after", after, minimum=0, maximum=v.INT64_MAX)
        v.check_int("limit", limit, minimum=1, maximum=MAX_QUERY_LIMIT)
        reading, now = self._reading(actor, "entries", {"after": after, "limit": limit})
        if reading is not None:
            reading.role.require(reading.role.may_export, "read the chain's entries")
        store = self._ledger_store()
        if self.chains.shards > 1:
            raise ChainError(
                f"reading the chain in order follows one chain; this trail's lifecycle is kept in "
                f"{self.chains.shards} shards (follow each shard's store instead, or use an in-process sink)"
            )
        if not isinstance(store, ChainFeed):
            raise ChainError(f"reading the chain in order needs a store that offers it; {self.backend.name!r} does not")
        with store_errors("lifecycle_entries"):
            found = await store.entries_after(after, limit)
        records = [record for _, record in found if record is not None]
        opened = iter(
            await self._as_read(records, reading, now) if reading is not None else await self.protection.open(records)
        )
        return [(entry, None if record is None else next(opened)) for entry, record in found]

    async def verify(
        self,
        against: Checkpoint | Sequence[Checkpoint] | None = None,
        *,
        actor: Actor | str | Reading | None = None,
    ) -> VerifyReport | ShardsReport:
        """Walk this trail's hash chain and report the first broken link, or OK with the count.

        Streams in bounded memory. Without ``against`` it cannot notice that
        the newest entries were cut off or that the whole chain was
        recomputed; pass a :class:`~audit_plugin.integrity.checkpoint.Checkpoint` kept
        elsewhere to detect both. Records queued but not yet committed are
        not covered: call :meth:`flush` first.

        A trail kept in several shards walks them concurrently and returns a
        :class:`~audit_plugin.integrity.verify.ShardsReport` (one report per
        shard); ``against`` is then what :meth:`checkpoint` returned (a
        checkpoint per shard), or any of those checkpoints (its shard is
        checked against it).
        """
        if self.chains.shards == 1:
            if against is not None and not isinstance(against, Checkpoint):
                against = _only_checkpoint(against)
            if against is not None:
                require_checkpoint(against, self.chains.base_id)
            per_shard: list[Checkpoint | None] = [against]
        else:
            per_shard = shard_checkpoints(self.chains, against)  # type: ignore[arg-type]
        filters = {"checkpoint": [c.sequence if c is not None else None for c in per_shard]}
        reading, now = self._reading(actor, "verify", filters)
        if reading is not None:
            reading.role.require(reading.role.may_prove, "verify the chain")
        store = self._ledger_store()
        with store_errors("verify"):
            report = await store.verify_chains(per_shard)
        if reading is not None:
            reading.note([])
            if now:
                await self.record_access(reading)
        return report

    async def checkpoint(self, signing_key: Any = None) -> Checkpoint | tuple[Checkpoint, ...]:
        """Flush, then return the chain's head (sequence, hash, time), signed if ``signing_key`` is given.

        ``signing_key`` is a ``cryptography`` ``Ed25519PrivateKey``. Keep the
        checkpoint outside this database and pass it to :meth:`verify` later.
        A trail kept in several shards returns one checkpoint per shard, in
        shard order (each the head of its own chain).
        """
        await self.flush()
        with store_errors("checkpoint"):
            heads = await self._ledger_store().chain_heads()
        now = datetime.now(UTC)
        checkpoints = tuple(
            Checkpoint(chain_id, head.sequence, head.hash, now)
            for chain_id, head in zip(self.chains.chain_ids, heads, strict=True)
        )
        if signing_key is not None:
            checkpoints = tuple(checkpoint.signed(signing_key) for checkpoint in checkpoints)
        return checkpoints[0] if len(checkpoints) == 1 else checkpoints

    # -- Merkle trees and proofs ------------------------------------------------------------

    def _trees(self) -> TreeLog:
        self._require_writer()
        if self._tree_log is None:
            raise ChainError(
                f"proofs need a store that keeps Merkle trees and a hashed chain; {self.backend.name!r} with "
                f"hash_chain={self.ledger.hashing} has none"
            )
        return self._tree_log

    async def sign_checkpoint(
        self, signing_key: Any, *, origin: str | None = None, tsa_url: str | None = None
    ) -> TreeCheckpoint:
        """Flush, bring every chain's Merkle tree up to date, sign their heads, store and return the checkpoint.

        ``signing_key`` is an ``Ed25519PrivateKey``; ``origin`` names the log
        (the note's first line and key name: the policy's, else
        ``audit-plugin/trail``); ``tsa_url`` an RFC 3161 time-stamp authority
        (the policy's when not given) whose token is stored with it.
        """
        check_signing_key(signing_key)
        trees = self._trees()
        policy = trees.policy
        origin = check_origin(origin) if origin is not None else (policy.origin if policy else DEFAULT_ORIGIN)
        v.check_text("tsa_url", tsa_url, optional=True)
        tsa_url = tsa_url if tsa_url is not None else (policy.tsa_url if policy else None)
        await self.flush()
        with store_errors("sign_checkpoint"):
            return await trees.sign_checkpoint(signing_key, origin, tsa_url)

    async def tree_checkpoints(self, limit: int | None = None) -> list[TreeCheckpoint]:
        """The signed checkpoints stored in the database, newest first."""
        v.check_int("limit", limit, minimum=1, optional=True)
        with store_errors("tree_checkpoints"):
            return await self._trees().checkpoints(limit)

    async def check_checkpoints(self, public_key: Any = None) -> list[CheckpointCheck]:
        """Every stored checkpoint, oldest first, checked for consistency with the one before it and with now.

        With ``public_key`` (an ``Ed25519PublicKey``, or a vkey's
        :class:`~audit_plugin.integrity.note.NoteVerifier`) each signature is checked too.
        """
        trees = self._trees()
        await self.flush()
        with store_errors("check_checkpoints"):
            return await trees.check_checkpoints(public_key)

    async def prove(
        self,
        message_id: str,
        *,
        signing_key: Any = None,
        origin: str | None = None,
        include_record: bool = True,
        actor: Actor | str | Reading | None = None,
    ) -> ProofBundle:
        """A self-contained proof that ``message_id``'s record and lifecycle entries are in the log, unaltered.

        Proves them against the newest stored checkpoint; with
        ``signing_key``, signs a fresh one first when that does not cover
        them all (see :meth:`TreeLog.prove <audit_plugin.storage.tree_log.TreeLog.prove>`).
        ``bundle.to_json()`` is the file to hand over; anyone checks it with
        :func:`~audit_plugin.integrity.proof_bundle.check_bundle` and the
        log's public key, without the database. With ``actor``, only an
        auditor may (the bundle holds the payload as stored), and the proof is
        recorded as an access entry.
        """
        v.check_text("message_id", message_id)
        if not isinstance(include_record, bool):
            raise v.FieldTypeError("include_record", "bool", include_record)
        if signing_key is not None:
            check_signing_key(signing_key)
        if origin is not None:
            check_origin(origin)
        reading, now = self._reading(actor, "prove", {"message_id": message_id})
        if reading is not None:
            reading.role.require(reading.role.may_prove, "prove a record")
        trees = self._trees()
        await self.flush()
        with store_errors("prove"):
            bundle = await trees.prove(
                message_id, signing_key=signing_key, origin=origin, include_record=include_record
            )
        if reading is not None:
            reading.note([message_id])
            if now:
                await self.record_access(reading)
        return bundle


def query_filter(query: AuditQuery) -> dict[str, Any]:
    """The filters of ``query`` that are set, for an access entry."""
    default = AuditQuery()
    return {
        field.name: getattr(query, field.name)
        for field in dataclasses.fields(query)
        if getattr(query, field.name) != getattr(default, field.name)
    }


def _access_entry(
    chain_id: str, sequence: int, at: datetime, document: str | None, entry_hash: str | None
) -> AccessEntry:
    """An access entry read back; one whose document cannot be read (altered) says so (``verify()`` tells more)."""
    try:
        return AccessEntry.from_document(chain_id, sequence, at, document or "", entry_hash)
    except (ValueError, KeyError, TypeError):
        return AccessEntry(chain_id, sequence, at, "?", "?", "?", "unreadable", {}, 0, [], 0, [], entry_hash)


def _only_checkpoint(against: object) -> Checkpoint:
    """The one checkpoint a sequence of them holds, for a trail with one chain."""
    if isinstance(against, Sequence) and not isinstance(against, str) and len(against) == 1:
        return against[0]  # type: ignore[no-any-return]
    raise v.FieldTypeError("against", "Checkpoint", against)
