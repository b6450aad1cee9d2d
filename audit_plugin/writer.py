"""The group-commit writer: one task per trail turns many small writes into few transactions.

Callers put operations (insert a record, update a status) on a bounded
in-memory queue and get a future. One background task takes everything
queued (up to ``batch_size``), writes it in one transaction, and resolves
every future in the batch when that transaction commits. While a batch
commits, new operations gather for the next one, so batches grow with load
and a lone caller waits for a single small commit.

Failure handling, so that nothing is lost silently:

* a store that is down or busy (connection refused or reset, SQLite
  "database is locked", disk full) makes the writer keep the batch and retry
  it with exponential backoff and full jitter until it commits. Inserts are
  idempotent by ``message_id``, so a retry after a lost commit
  acknowledgement creates no duplicates;
* an error retrying cannot fix (a row the database refuses) makes the writer
  split the batch until the offending operation is alone; that operation's
  future gets :class:`~audit_plugin.exceptions.AuditStoreError`, the rest commit;
* a full queue follows the overflow policy: ``"block"`` (callers wait for
  space: back-pressure), ``"drop_newest"`` or ``"drop_oldest"``. Every drop is
  counted in ``stats.dropped``, its future fails with
  :class:`~audit_plugin.exceptions.RecordDroppedError`, and one warning is
  logged per overflow episode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from audit_plugin.backend import AuditBackend
from audit_plugin.exceptions import (
    AuditStoreError,
    AuditTimeoutError,
    InvalidFieldError,
    RecordDroppedError,
)
from audit_plugin.records import StatusUpdate

log = logging.getLogger(__name__)

OverflowPolicy = Literal["block", "drop_newest", "drop_oldest"]
OVERFLOW_POLICIES: tuple[str, ...] = ("block", "drop_newest", "drop_oldest")


@dataclass(slots=True)
class WriterStats:
    """Counters for the audit pipeline's own health (also exported as metrics)."""

    written: int = 0
    """Operations committed (records inserted or status updates applied)."""
    batches: int = 0
    """Transactions committed."""
    dropped: int = 0
    """Operations dropped by the overflow policy."""
    failed: int = 0
    """Operations the store refused for good (each logged with its error)."""
    retries: int = 0
    """Batch attempts that failed with a transient error and were retried."""
    last_batch_seconds: float = 0.0
    """Duration of the last committed transaction."""
    queue_depth: int = 0
    """Operations waiting to be written (updated as the queue changes)."""
    store_available: bool = True
    """False while the writer is retrying a failing store."""


@dataclass(slots=True)
class _Op:
    row: dict[str, Any] | None = None
    update: StatusUpdate | None = None
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def is_barrier(self) -> bool:
        return self.row is None and self.update is None


def is_transient(exc: BaseException) -> bool:
    """True for errors that retrying the same batch later can cure."""
    if isinstance(exc, OperationalError | InterfaceError | ConnectionError | OSError | asyncio.TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class AuditWriter:
    """Batches operations for one backend; see the module docstring."""

    def __init__(
        self,
        backend: AuditBackend,
        *,
        batch_size: int = 1000,
        max_queue: int = 100_000,
        overflow: OverflowPolicy = "block",
        retry_initial_delay: float = 0.05,
        retry_max_delay: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidFieldError("batch_size", "must be >= 1")
        if max_queue < 1:
            raise InvalidFieldError("max_queue", "must be >= 1")
        if overflow not in OVERFLOW_POLICIES:
            raise InvalidFieldError("overflow", f"{overflow!r} is not one of {', '.join(OVERFLOW_POLICIES)}")
        self.backend = backend
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.overflow: OverflowPolicy = overflow
        self.retry_initial_delay = retry_initial_delay
        self.retry_max_delay = retry_max_delay
        self.stats = WriterStats()
        self._on_batch = on_batch
        self._queue: deque[_Op] = deque()
        self._work = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._task: asyncio.Task[None] | None = None
        self._overflowing = False

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued before this call is committed (or failed for good)."""
        barrier = _Op()
        self._queue.append(barrier)
        self._work.set()
        try:
            await asyncio.wait_for(asyncio.shield(barrier.future), timeout)
        except TimeoutError:
            raise AuditTimeoutError(
                f"audit store did not accept {len(self._queue)} queued operations within {timeout}s"
            ) from None

    async def stop(self, timeout: float | None = None) -> None:
        """Flush, then end the writer task."""
        if self._task is None:
            return
        try:
            await self.flush(timeout)
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- submitting -----------------------------------------------------------------

    def submit(self, *, row: dict[str, Any] | None = None, update: StatusUpdate | None = None) -> asyncio.Future[Any]:
        """Queue an operation now and return its future (no waiting).

        With the ``"block"`` policy and a full queue this raises
        :class:`asyncio.QueueFull`; use :meth:`put` to wait for space instead.
        """
        op = _Op(row=row, update=update)
        if len(self._queue) >= self.max_queue:
            self._overflow(op)
        else:
            self._enqueue(op)
        return op.future

    async def put(
        self, *, row: dict[str, Any] | None = None, update: StatusUpdate | None = None
    ) -> asyncio.Future[Any]:
        """Queue an operation, waiting for space under the ``"block"`` policy."""
        while self.overflow == "block" and len(self._queue) >= self.max_queue:
            self._note_overflow()
            self._space.clear()
            await self._space.wait()
        return self.submit(row=row, update=update)

    def is_full(self) -> bool:
        return len(self._queue) >= self.max_queue

    def _enqueue(self, op: _Op) -> None:
        self._queue.append(op)
        self.stats.queue_depth = len(self._queue)
        self._work.set()

    def _overflow(self, op: _Op) -> None:
        if self.overflow == "block":
            raise asyncio.QueueFull
        self._note_overflow()
        if self.overflow == "drop_newest":
            self._drop(op)
            return
        for index, queued in enumerate(self._queue):  # drop_oldest: the oldest real operation
            if not queued.is_barrier:
                del self._queue[index]
                self._drop(queued)
                break
        self._enqueue(op)

    def _drop(self, op: _Op) -> None:
        self.stats.dropped += 1
        if not op.future.done():
            op.future.set_exception(RecordDroppedError(f"audit queue full ({self.max_queue}); policy {self.overflow}"))
            op.future.exception()  # mark retrieved: the drop is counted and logged, not an unhandled error

    def _note_overflow(self) -> None:
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "audit queue full (%d operations); policy %r applies until it drains", self.max_queue, self.overflow
            )

    # -- the writer task ------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._work.clear()
                await self._work.wait()
                continue
            batch = self._take_batch()
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a defect, not a store fault: fail loudly, keep running
                log.exception("audit writer failed on a batch of %d operations", len(batch))
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(AuditStoreError(f"audit writer failed: {_describe(exc)}"))

    def _take_batch(self) -> list[_Op]:
        batch: list[_Op] = []
        real = 0
        while self._queue and real < self.batch_size:
            op = self._queue.popleft()
            batch.append(op)
            if not op.is_barrier:
                real += 1
        self.stats.queue_depth = len(self._queue)
        if len(self._queue) < self.max_queue:
            self._space.set()
            if self._overflowing and len(self._queue) <= self.max_queue // 2:
                self._overflowing = False
                log.info("audit queue drained below half; %d operations dropped so far", self.stats.dropped)
        return batch

    async def _write(self, batch: list[_Op]) -> None:
        """Commit ``batch``, retrying transient failures until it succeeds."""
        delay = self.retry_initial_delay
        while True:
            try:
                await self._commit(batch)
                if not self.stats.store_available:
                    log.warning("audit store available again; writing resumed")
                    self.stats.store_available = True
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    await self._isolate(batch, exc)
                    return
                self.stats.retries += 1
                if self.stats.store_available:
                    log.warning(
                        "audit store unavailable (%s); holding %d operations and retrying", _describe(exc), len(batch)
                    )
                    self.stats.store_available = False
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, self.retry_max_delay)

    async def _commit(self, batch: list[_Op]) -> None:
        rows = [op.row for op in batch if op.row is not None]
        updates = [op.update for op in batch if op.update is not None]
        started = time.perf_counter()
        existing = await self.backend.write_batch(rows, updates) if rows or updates else set()
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.written += len(rows) + len(updates)
        self.stats.last_batch_seconds = elapsed
        if self._on_batch is not None:
            self._on_batch(len(rows) + len(updates), elapsed)
        for op in batch:
            if op.future.done():
                continue
            if op.update is not None:
                op.future.set_result(op.update.message_id in existing)
            else:
                op.future.set_result(True)

    async def _isolate(self, batch: list[_Op], exc: Exception) -> None:
        """Split a batch the store refused until the refused operations are alone."""
        real = [op for op in batch if not op.is_barrier]
        if len(real) <= 1:
            for op in real:
                self.stats.failed += 1
                log.error("audit store refused %s: %s", _op_label(op), _describe(exc))
                op.future.set_exception(AuditStoreError(f"store refused {_op_label(op)}: {_describe(exc)}"))
                op.future.exception()
            for op in batch:
                if op.is_barrier and not op.future.done():
                    op.future.set_result(True)
            return
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            await self._write(half)


def _op_label(op: _Op) -> str:
    if op.row is not None:
        return f"record {op.row['message_id']!r}"
    assert op.update is not None
    return f"status update of {op.update.message_id!r}"


def _describe(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
