"""How a sender waits for the store: the durability mode and the commit timeout.

Shared by everything that records messages on a send path (the
:class:`~audit_plugin.hooks.plugin.AuditPlugin` of a bus, the FastStream
middleware), so "written before sent" means the same thing everywhere:

* ``"commit"``: the caller awaits the commit of what it queued, at most
  ``commit_timeout`` seconds. Past that it goes on without it: the wait is
  counted in ``commit_timeouts`` (and in the trail's writer stats), one
  warning is logged per episode, and the record stays queued and is written
  when the store returns.
* ``"buffered"``: nobody waits; the writer counts, logs and retrieves every
  failure itself.

Under the ``"block"`` overflow policy a caller that finds the queue full
waits for space at most ``commit_timeout`` seconds too (both modes); a
record that still finds none is dropped, counted and logged by the writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from audit_plugin.exceptions import (
    AuditError,
    AuditStoreError,
    AuditTimeoutError,
    FieldTypeError,
    RecordDroppedError,
)
from audit_plugin.hooks.deadlines import Deadlines
from audit_plugin.hooks.options import AuditOptions, Durability

if TYPE_CHECKING:
    from audit_plugin.trail import MessageAuditTrail

log = logging.getLogger(__name__)

__all__ = ["CommitWaits", "Durability"]


class CommitWaits:
    """Waits (or not) for queued audit operations to commit, per the durability mode.

    :param trail: the trail the operations were queued on.
    :param options: its ``durability`` and ``commit_timeout`` (see module docs).
    """

    def __init__(self, trail: MessageAuditTrail, options: AuditOptions) -> None:
        from audit_plugin.trail import MessageAuditTrail  # at run time: the trail module imports this one

        if not isinstance(trail, MessageAuditTrail):
            raise FieldTypeError("trail", "MessageAuditTrail", trail)
        durability, commit_timeout = options.durability, options.commit_timeout
        self.trail = trail
        self.durability: Durability = durability
        self.commit_timeout = commit_timeout
        self.commit_timeouts = 0
        """Operations a caller stopped waiting for because the store was too slow."""
        self._timing_out = False
        self._deadlines = (
            Deadlines(commit_timeout, lambda: AuditTimeoutError(f"audit commit took over {commit_timeout}s"))
            if commit_timeout is not None
            else None
        )

    def settle(
        self,
        future: asyncio.Future[Any],
        message_id: str,
        on_refused: Callable[[BaseException], None] | None = None,
    ) -> Awaitable[None] | None:
        """What the caller awaits for an operation queued as ``future``: its commit, or nothing (buffered).

        ``on_refused`` marks the operation as a message's record, which must
        exist before the message goes on: if the store refuses it for good
        (:class:`~audit_plugin.exceptions.AuditStoreError`), ``on_refused(exc)``
        is called and the error propagates, so the message is not delivered.
        """
        if self.durability == "commit":
            return self.wait(future, message_id, on_refused)
        return None

    async def put_and_settle(
        self,
        enqueued: Awaitable[asyncio.Future[Any]],
        message_id: str,
        on_refused: Callable[[BaseException], None] | None = None,
        *,
        before_delivery: bool = False,
    ) -> None:
        """Await queue space for an operation (``enqueued``), then settle it as :meth:`settle` does.

        A record dropped for lack of space lets the caller go on (the writer
        counted and logged it). A refusal (cannot be recorded, trail closed)
        propagates after ``on_refused(exc)``: the message must not go on.
        ``before_delivery``: the operation is the message's record, and a
        store refusing it for good stops the message too (see :meth:`settle`).
        """
        try:
            future = await enqueued
        except RecordDroppedError:
            return
        except BaseException as exc:
            if on_refused is not None:
                on_refused(exc)
            raise
        if self.durability == "commit":
            await self.wait(future, message_id, on_refused if before_delivery else None)

    async def wait(
        self,
        future: asyncio.Future[Any],
        message_id: str,
        on_refused: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Await ``future`` (a commit) at most ``commit_timeout`` seconds.

        Raises only when ``on_refused`` is given and the store refused the
        operation for good (a message's record: the message must not go on).
        """
        if self._deadlines is not None:
            # On timeout the future fails: only this waiter gives up, the writer still writes the record.
            self._deadlines.watch(future)
        try:
            await future
            if self._timing_out:
                self._timing_out = False
                log.warning(
                    "audit commits are back within %ss (%d timed out so far)", self.commit_timeout, self.commit_timeouts
                )
        except AuditTimeoutError:
            self.commit_timeouts += 1
            self.trail.note_commit_timeout()
            if not self._timing_out:  # one warning per episode, not one per message
                self._timing_out = True
                log.warning(
                    "audit commit of message %s took over %ss; messages go on without waiting for their "
                    "commits (records stay queued and are written when the store recovers)",
                    message_id,
                    self.commit_timeout,
                )
        except AuditStoreError as exc:
            if on_refused is not None:  # the store refused the record for good: a delivery now would leave no trace
                on_refused(exc)
                raise
            # an outcome the store refused: counted in trail.writer_stats.failed and logged by the writer
        except AuditError:
            pass  # dropped: counted in trail.writer_stats and logged by the writer
