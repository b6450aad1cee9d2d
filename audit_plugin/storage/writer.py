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
  logged per overflow episode;
* ``stop()`` (``trail.close()``) accepts nothing more: callers still waiting
  for queue space get :class:`~audit_plugin.exceptions.TrailStateError` at
  once, and everything already accepted is written. Only if its timeout runs
  out first is what is left counted in ``stats.abandoned``, logged as an
  error, and each of its callers gets :class:`~audit_plugin.exceptions.AuditTimeoutError`.

The loss window is exact: ``max_queue`` bounds every operation accepted and
not yet committed, the batch being written included (it keeps its slots
until its transaction ends). A process killed at any moment loses at most
``max_queue`` operations, and only ones whose futures were not yet resolved.

Batches form by themselves: the writer takes everything queued (up to
``batch_size``) as soon as the previous transaction ends. ``batch_interval``
(default 0) makes it linger that long before taking a batch smaller than
``batch_size``, trading latency for fewer, larger transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from audit_plugin.exceptions import (
    AuditError,
    AuditStoreError,
    AuditTimeoutError,
    InvalidFieldError,
    QueueFullError,
    RecordDroppedError,
    StoreUnavailableError,
    TrailStateError,
    driver_message,
)
from audit_plugin.model.records import StatusUpdate
from audit_plugin.model.validation import check_int, check_seconds
from audit_plugin.storage.backend import AuditBackend
from audit_plugin.storage.errors import is_unavailable

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
    abandoned: int = 0
    """Operations still unwritten when the writer was stopped (a ``close()`` that timed out)."""
    commit_timeouts: int = 0
    """Messages an ``AuditPlugin`` let go on without their commit because the store was too slow."""
    last_batch_seconds: float = 0.0
    """Duration of the last committed transaction."""
    queue_depth: int = 0
    """Operations accepted and not yet committed: queued, or in the batch being written (at most ``max_queue``)."""
    store_available: bool = True
    """False while the writer is retrying a failing store."""


class _Op:
    """One queued operation: a row to insert, a status update, or (neither) a flush barrier."""

    __slots__ = ("future", "row", "update")

    def __init__(
        self, future: asyncio.Future[Any], row: dict[str, Any] | None = None, update: StatusUpdate | None = None
    ) -> None:
        self.future = future
        self.row = row
        self.update = update

    @property
    def is_barrier(self) -> bool:
        return self.row is None and self.update is None


def is_transient(exc: BaseException) -> bool:
    """True for errors that retrying the same batch later can cure.

    A backend says so by raising :class:`~audit_plugin.exceptions.StoreUnavailableError`
    (the shipped ones map their drivers' errors in :mod:`audit_plugin.storage.batch_write`);
    an error of a backend that does not map its own is judged by its kind
    (:func:`~audit_plugin.storage.errors.is_unavailable`).
    """
    if isinstance(exc, StoreUnavailableError):
        return True
    return not isinstance(exc, AuditError) and is_unavailable(exc)


def check_writer_options(batch_size: object, batch_interval: object, max_queue: object, overflow: object) -> None:
    """Refuse a writer option out of range, naming it (a trail checks them when it is made)."""
    check_int("batch_size", batch_size, minimum=1)
    check_seconds("batch_interval", batch_interval)
    check_int("max_queue", max_queue, minimum=1)
    if overflow not in OVERFLOW_POLICIES:
        raise InvalidFieldError("overflow", f"{overflow!r} is not one of {', '.join(OVERFLOW_POLICIES)}")


class AuditWriter:
    """Batches operations for one backend; see the module docstring."""

    def __init__(
        self,
        backend: AuditBackend,
        *,
        batch_size: int = 1000,
        batch_interval: float = 0.0,
        max_queue: int = 100_000,
        overflow: OverflowPolicy = "block",
        retry_initial_delay: float = 0.05,
        retry_max_delay: float = 5.0,
        on_batch: Callable[[Sequence[dict[str, Any]], Sequence[StatusUpdate], float], None] | None = None,
    ) -> None:
        check_writer_options(batch_size, batch_interval, max_queue, overflow)
        self.backend = backend
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.max_queue = max_queue
        self.overflow: OverflowPolicy = overflow
        self.retry_initial_delay = retry_initial_delay
        self.retry_max_delay = retry_max_delay
        self.stats = WriterStats()
        self._on_batch = on_batch
        self._queue: deque[_Op] = deque()
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: list[_Op] = []
        """The batch being written; it holds its queue slots until its transaction ends."""
        self._overflowing = False
        self._stopped = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        """Callers waiting for queue space under ``"block"``, first come first served."""
        self._granted = 0
        """Queue slots handed to waiters that have not used them yet."""

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._stopped = False
            self._task = self._loop.create_task(self._run(), name="audit-writer")

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued before this call is committed (or failed for good)."""
        check_seconds("timeout", timeout, optional=True)
        barrier = _Op(self._new_future())
        self._queue.append(barrier)
        self._work.set()
        try:
            await asyncio.wait_for(asyncio.shield(barrier.future), timeout)
        except TimeoutError:
            raise AuditTimeoutError(
                f"audit store did not accept {len(self._queue)} queued operations within {timeout}s"
            ) from None

    async def stop(self, timeout: float | None = None) -> None:
        """Accept nothing more, write everything accepted, then end the writer task.

        Callers still waiting for queue space get
        :class:`~audit_plugin.exceptions.TrailStateError` at once (nothing of
        theirs was accepted). If writing what was accepted takes longer than
        ``timeout``, the rest is abandoned: counted in ``stats.abandoned``,
        logged as an error, and each of its callers gets
        :class:`~audit_plugin.exceptions.AuditTimeoutError` (the flush's own
        error is raised).
        """
        check_seconds("timeout", timeout, optional=True)  # before anything stops: a bad value abandons nothing
        if self._task is None:
            return
        self._stopped = True
        self._refuse_waiters()
        try:
            await self.flush(timeout)
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._abandon_unwritten(timeout)

    def _abandon_unwritten(self, timeout: float | None) -> None:
        left = [op for op in (*self._in_flight, *self._queue) if not op.future.done()]
        self._in_flight = []
        self._queue.clear()
        self.stats.queue_depth = 0
        real = [op for op in left if not op.is_barrier]
        if real:
            self.stats.abandoned += len(real)
            log.error(
                "audit writer stopped with %d operations unwritten: the store did not take them within %ss",
                len(real),
                timeout,
            )
        for op in left:
            op.future.set_exception(AuditTimeoutError("audit writer stopped before the store accepted this operation"))
            op.future.exception()

    def _new_future(self) -> asyncio.Future[Any]:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return loop.create_future()

    # -- submitting -----------------------------------------------------------------

    def submit(self, *, row: dict[str, Any] | None = None, update: StatusUpdate | None = None) -> asyncio.Future[Any]:
        """Queue an operation now and return its future (no waiting).

        With the ``"block"`` policy and a full queue this raises
        :class:`~audit_plugin.exceptions.QueueFullError` (an :class:`asyncio.QueueFull`);
        use :meth:`put` to wait for space instead.
        """
        return self._submit(row, update, reserved=False)

    def _submit(
        self, row: dict[str, Any] | None, update: StatusUpdate | None, *, reserved: bool
    ) -> asyncio.Future[Any]:
        """Queue an operation; ``reserved``: a slot granted to this caller is waiting for it (no capacity check)."""
        if self._stopped:
            raise TrailStateError("the audit writer is stopped; the trail is closed")
        op = _Op(self._new_future(), row, update)
        if not reserved and self._held() >= self.max_queue:
            self._overflow(op)
        else:
            self._enqueue(op)
        return op.future

    async def put(
        self,
        *,
        row: dict[str, Any] | None = None,
        update: StatusUpdate | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        """Queue an operation, waiting for space under the ``"block"`` policy.

        With ``timeout``, an operation that finds no space in time is dropped:
        counted in ``stats.dropped`` and refused with
        :class:`~audit_plugin.exceptions.RecordDroppedError`.
        """
        if self.overflow == "block" and self.is_full() and not self._stopped:
            self._note_overflow()
            waiter: asyncio.Future[None] = self._new_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except BaseException as exc:
                self._forget(waiter)
                if isinstance(exc, TimeoutError):
                    self.stats.dropped += 1
                    raise RecordDroppedError(
                        f"audit queue full ({self.max_queue}) for {timeout}s; policy block with a timeout"
                    ) from None
                raise
            self._granted -= 1  # the slot granted to this caller is used right now
            return self._submit(row, update, reserved=True)  # a flush barrier may have filled the queue since
        return self._submit(row, update, reserved=False)

    def is_full(self) -> bool:
        """True when a new operation must wait (``"block"``): no free slot, or others already wait.

        Space freed by a commit is granted to the waiting callers in arrival
        order and reserved for them, so a caller that never yields cannot take
        it first and starve them.
        """
        return self._held() + self._granted >= self.max_queue or bool(self._waiters)

    def _held(self) -> int:
        """Operations holding a queue slot: queued, or in the batch being written."""
        return len(self._queue) + len(self._in_flight)

    def _grant_space(self) -> None:
        while self._waiters and self._held() + self._granted < self.max_queue:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._granted += 1

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        """A waiter gave up (timeout, cancelled, writer stopped): release its slot or its place in line."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self._granted -= 1  # granted just as it gave up: pass the slot on
            self._grant_space()
        else:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _refuse_waiters(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(TrailStateError("the audit writer stopped; the trail is closed"))

    def _enqueue(self, op: _Op) -> None:
        self._queue.append(op)
        self.stats.queue_depth = self._held()
        self._work.set()

    def _overflow(self, op: _Op) -> None:
        if self.overflow == "block":
            raise QueueFullError(f"audit queue full ({self.max_queue} operations); policy block")
        self._note_overflow()
        if self.overflow == "drop_newest":
            self._drop(op)
            return
        for index, queued in enumerate(self._queue):  # drop_oldest: the oldest real operation not being written
            if not queued.is_barrier:
                del self._queue[index]
                self._drop(queued)
                self._enqueue(op)
                return
        self._drop(op)  # every slot is held by the batch being written: nothing older can go

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
            if self.batch_interval and len(self._queue) < self.batch_size:
                await asyncio.sleep(self.batch_interval)  # linger: let a small batch grow
            batch = self._take_batch()
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a defect, not a store fault: fail loudly, keep running
                log.exception("audit writer failed on a batch of %d operations", len(batch))
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(AuditStoreError(f"audit writer failed ({type(exc).__name__})"))
                        op.future.exception()
            self._batch_done()

    def _take_batch(self) -> list[_Op]:
        """Move up to ``batch_size`` operations from the queue to the batch being written (slots stay held)."""
        batch: list[_Op] = []
        real = 0
        while self._queue and real < self.batch_size:
            op = self._queue.popleft()
            batch.append(op)
            if not op.is_barrier:
                real += 1
        self._in_flight = batch
        return batch

    def _batch_done(self) -> None:
        """The batch being written is settled (committed or refused): its slots go to waiting callers."""
        self._in_flight = []
        self.stats.queue_depth = self._held()
        self._grant_space()
        if self._overflowing and self._held() <= self.max_queue // 2:
            self._overflowing = False
            log.info("audit queue drained below half; %d operations dropped so far", self.stats.dropped)

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
        existing: set[str] = set()
        elapsed = 0.0
        if rows or updates:  # else only flush barriers: nothing to write
            started = time.perf_counter()
            existing = await self.backend.write_batch(rows, updates)
            elapsed = time.perf_counter() - started
            self.stats.batches += 1
            self.stats.written += len(rows) + len(updates)
            self.stats.last_batch_seconds = elapsed
        for op in batch:
            if op.future.done():
                continue
            if op.update is not None:
                op.future.set_result(op.update.message_id in existing)
            else:
                op.future.set_result(True)
        if self._on_batch is not None and (rows or updates):
            self._on_batch(rows, updates, elapsed)

    async def _isolate(self, batch: list[_Op], exc: Exception) -> None:
        """Split a batch the store refused until the refused operations are alone."""
        real = [op for op in batch if not op.is_barrier]
        if len(real) <= 1:
            for op in real:
                self.stats.failed += 1
                log.error("audit store refused %s: %s", _op_label(op), _describe(exc))
                if not op.future.done():
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
    if isinstance(exc, AuditError):  # mapped already: its message says what happened
        return str(exc)
    text = driver_message(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
