"""Hook specifications for the ``audit_plugin`` project.

Two families of hooks share this module:

* **Bus hooks** (``audit_pre_send``, ``audit_post_delivery``): a message bus
  calls them around every message. Any bus can: create
  ``pluggy.PluginManager("audit_plugin")``, ``add_hookspecs(hookspecs)``,
  register ``AuditPlugin(trail)``, call the hooks with keyword arguments, and
  **await every awaitable in the returned list**. pluggy itself is
  synchronous; returning an awaitable is how an implementation makes the bus
  wait (for example until the record is committed) without blocking the
  event loop.
* **Extension hooks** (``audit_create_backend``): implemented by backend
  distributions and other extensions, found through the ``audit_plugin``
  entry-point group.

Hook names start with ``audit_``; call them with keyword arguments only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from audit_plugin.backend import AuditBackend
    from audit_plugin.messages import DeliveryReceipt, Message

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


@hookspec(firstresult=True)
def audit_create_backend(url: str) -> AuditBackend | None:
    """Return a backend for the database ``url``, or ``None`` if not yours.

    Called when a ``MessageAuditTrail`` is created. The first non-``None``
    result is used, so a backend must only claim URLs whose scheme it really
    serves (``sqlite+aiosqlite://...``, ``postgresql+asyncpg://...``).

    :param url: the database URL as the user gave it.
    :return: an object implementing :class:`audit_plugin.backend.AuditBackend`,
        not yet initialised, or ``None``.
    """
