"""Hook specifications for the ``audit_plugin`` project.

Two families of hooks share this module:

* **Bus hooks** (``audit_pre_send``, ``audit_post_delivery``, and optionally
  ``audit_retry``): a message bus calls them around every message and before
  each retry. Any bus can: create
  ``pluggy.PluginManager("audit_plugin")``, ``add_hookspecs(hookspecs)``,
  register ``AuditPlugin(trail)``, call the hooks with keyword arguments, and
  **await every awaitable in the returned list**. pluggy itself is
  synchronous; returning an awaitable is how an implementation makes the bus
  wait (for example until the record is committed) without blocking the
  event loop.
* **Extension hooks** (``audit_create_backend``, ``audit_redact``,
  ``audit_batch_committed``): implemented by backend distributions and other
  extensions (export sinks, metrics), found through the ``audit_plugin``
  entry-point group or registered on a trail's ``plugin_manager``, and
  called by the trail.
* **Test hook** (``audit_test_database``): a backend distribution makes
  throwaway databases for the conformance suite (see ``docs/backends.md``).

Hook names start with ``audit_``; call them with keyword arguments only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from audit_plugin.model.messages import DeliveryReceipt, Message
    from audit_plugin.storage.backend import AuditBackend
    from audit_plugin.storage.committed import CommittedBatch

PROJECT_NAME = "audit_plugin"
"""pluggy project name and entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def audit_pre_send(message: Message) -> Awaitable[Any] | None:
    """Called by the bus before ``message`` is dispatched to its receiver.

    :param message: the message about to be sent. Implementations may add
        entries to ``message.headers`` (the audit plugin injects the trace
        context there) but must not change anything else.
    :return: ``None``, or an awaitable the bus must await before dispatching
        (the audit plugin returns one that completes when the PENDING record
        is committed, in ``"commit"`` durability mode). An exception raised
        here, or by the awaitable, means the message must not be sent: the
        audit plugin raises only for a message it cannot record (a typed
        :class:`~audit_plugin.exceptions.AuditError` subclass of
        ``ValueError``/``TypeError``), never for a store outage.
    """


@hookspec
def audit_post_delivery(message: Message, receipt: DeliveryReceipt) -> Awaitable[Any] | None:
    """Called by the bus once the final outcome of ``message`` is known.

    :param message: the message that was sent.
    :param receipt: its outcome: DELIVERED, FAILED (the handler kept raising,
        or there was no subscriber; ``error_message`` says which) or EXPIRED,
        with ``retry_count`` retries.
    :return: ``None``, or an awaitable the bus awaits before ``send()``
        returns the receipt (in ``"commit"`` mode the audit plugin's resolves
        when the outcome is committed). Store failures never surface here.

    If delivery is interrupted (the sending task is cancelled, a handler
    raises a ``BaseException``), the reference bus still calls this hook with
    a FAILED receipt, so no record stays PENDING and no span stays open, but
    does not await the results: the interruption propagates at once.
    """


@hookspec
def audit_retry(message: Message, attempt: int, error: BaseException) -> Awaitable[Any] | None:
    """Called by the bus when delivering ``message`` failed and it is about to try again.

    :param message: the message being retried.
    :param attempt: the number of the retry about to start (1 for the first
        retry), so the final receipt's ``retry_count`` equals the last
        ``attempt`` seen.
    :param error: what the failed attempt raised.
    :return: ``None``, or an awaitable the bus awaits before retrying. The
        audit plugin appends a lifecycle event (status PENDING, the retry
        count, the error) so ``trail.get_message_history()`` shows each retry.
    """


@hookspec
def audit_redact(message: Message, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Called by the trail for each message it records, before the payload is serialised.

    Implementations run one after another, each receiving the payload the
    previous one returned (pluggy's call order: last registered first,
    ``tryfirst``/``trylast`` respected); the trail's built-in field-name
    redactor runs after all of them. Redaction happens at capture time, so
    the original values never reach the queue, the store or the hash chain.

    :param message: the message being recorded (read it; do not modify it).
    :param payload: the payload as redacted so far; never modify it in place
        (it may be the caller's own dict).
    :return: a new payload dict to record instead, or ``None`` to leave the
        payload as it is. Raising refuses the message (the bus's ``send()``
        raises before delivery).
    """


@hookspec
def audit_batch_committed(batch: CommittedBatch) -> None:
    """Called by the trail after its writer committed a batch: the place to follow what is stored.

    Fires once per committed transaction, on the writer's task, after the
    callers waiting for that commit were released, in commit order. Export
    sinks and live views use it to see every record and lifecycle entry as
    it becomes durable, without polling the store; a retried batch fires once,
    when it finally commits, and a refused operation never appears.

    Implementations must be quick and must not block: one that does I/O
    queues the batch (bounded) and returns. One that raises is logged with
    its traceback and does not disturb the writer, but the implementations
    pluggy would have called after it miss that batch, so do not raise.

    :param batch: a :class:`~audit_plugin.storage.committed.CommittedBatch`:
        ``batch.trail`` (which trail committed it, for a plugin manager
        shared by several), ``batch.records`` (the records it inserted, as
        stored), ``batch.entries`` (the lifecycle entries it appended, in chain
        order: each record, status change, retry and late report, with its
        sequence number and hashes), ``batch.operations`` and ``batch.seconds``.
        Records and entries are built the first time they are read.
    :return: ignored.
    """


@hookspec(firstresult=True)
def audit_create_backend(url: str) -> AuditBackend | None:
    """Return a backend for the database ``url``, or ``None`` if not yours.

    Called when a ``MessageAuditTrail`` is created. The first non-``None``
    result is used, so a backend must only claim URLs whose scheme it really
    serves (``sqlite+aiosqlite://...``, ``postgresql+asyncpg://...``).

    :param url: the database URL as the user gave it.
    :return: an object implementing :class:`audit_plugin.storage.backend.AuditBackend`,
        not yet initialised, or ``None``.
    """


@hookspec(firstresult=True)
def audit_test_database(backend: str, directory: Path) -> AbstractAsyncContextManager[str] | None:
    """Make a throwaway empty database for the conformance suite, or return ``None`` if ``backend`` is not yours.

    Called by the pytest plugin :mod:`audit_plugin.testing` for each test
    that needs a database on the backend named ``backend`` (the name of the
    backend's ``audit_plugin`` entry point, as given to ``--audit-backend``).

    :param backend: the entry-point name of the backend under test.
    :param directory: a new temporary directory of the test's own, for
        stores kept in files.
    :return: an async context manager whose entering creates an empty
        database and yields a URL that the backend's own
        ``audit_create_backend`` claims, and whose exit drops it; or
        ``None``. When no database can be made here (no server configured),
        entering raises :class:`unittest.SkipTest` saying why: the tests
        needing it are skipped, not failed.
    """
