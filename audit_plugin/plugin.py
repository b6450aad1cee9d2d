"""``AuditPlugin``: the hook implementation a bus registers to audit every message.

Durability modes:

* ``"commit"`` (default, write-ahead auditing): ``audit_pre_send`` returns an
  awaitable that completes when the PENDING record is committed, so a message
  is never delivered before its record is durable; the outcome is committed
  before ``send()`` returns. Concurrent senders share commits (group commit).
* ``"buffered"``: the hooks only queue the record (in-memory work) and
  ``send()`` goes on at once. Records are committed by the writer in the
  background, normally within one batch time; a crash loses at most what was
  queued and not yet committed (``trail.writer_stats.queue_depth``).

A store outage never breaks ``send()``. In ``"commit"`` mode the plugin waits
up to ``commit_timeout`` seconds for the commit, then lets the message go on,
counting it in ``commit_timeouts`` and logging a warning: the record stays
queued and is written when the store returns (the writer retries with
backoff). A message the trail *cannot* record (payload not JSON, a NUL
character) is refused: ``send()`` raises the typed validation error before
anything is delivered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from audit_plugin.exceptions import AuditError, InvalidFieldError
from audit_plugin.hookspecs import hookimpl
from audit_plugin.messages import DeliveryReceipt, Message
from audit_plugin.records import StatusUpdate
from audit_plugin.trail import MessageAuditTrail

log = logging.getLogger(__name__)

Durability = Literal["commit", "buffered"]


class AuditPlugin:
    """Records every message a bus sends, and its outcome, in ``trail``.

    :param trail: an initialised :class:`MessageAuditTrail`.
    :param durability: ``"commit"`` or ``"buffered"`` (see module docs).
    :param commit_timeout: seconds ``send()`` waits for a commit in
        ``"commit"`` mode before going on without it (``None``: wait forever).
    :param tracer_provider: OpenTelemetry tracer provider (global by default).
    :param meter_provider: OpenTelemetry meter provider (global by default).
    """

    def __init__(
        self,
        trail: MessageAuditTrail,
        *,
        durability: Durability = "commit",
        commit_timeout: float | None = 30.0,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        if durability not in ("commit", "buffered"):
            raise InvalidFieldError("durability", f"{durability!r} is not 'commit' or 'buffered'")
        self.trail = trail
        self.durability: Durability = durability
        self.commit_timeout = commit_timeout
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.commit_timeouts = 0
        """Messages that went on without their commit because the store was too slow."""

    @hookimpl
    def audit_pre_send(self, message: Message) -> Any:
        future = self.trail.enqueue_message_nowait(message)
        if future is None:  # queue full under "block": wait for space (back-pressure)
            return self._put_and_wait(self.trail.enqueue_message(message), message)
        return self._settle(future, message)

    @hookimpl
    def audit_post_delivery(self, message: Message, receipt: DeliveryReceipt) -> Any:
        update = StatusUpdate.build(
            receipt.message_id, receipt.status, receipt.delivered_at, receipt.error_message, receipt.retry_count
        )
        future = self.trail.enqueue_status_nowait(update)
        if future is None:
            return self._put_and_wait(self.trail.enqueue_status(update), message)
        return self._settle(future, message)

    def _settle(self, future: asyncio.Future[Any], message: Message) -> Any:
        if self.durability == "commit":
            return self._wait_for_commit(future, message)
        future.add_done_callback(_consume_outcome)
        return None

    async def _put_and_wait(self, enqueued: Any, message: Message) -> None:
        future = await enqueued
        if self.durability == "commit":
            await self._wait_for_commit(future, message)
        else:
            future.add_done_callback(_consume_outcome)

    async def _wait_for_commit(self, future: asyncio.Future[Any], message: Message) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(future), self.commit_timeout)
        except TimeoutError:
            self.commit_timeouts += 1
            future.add_done_callback(_consume_outcome)
            log.warning(
                "audit commit of message %s took over %ss; delivery goes on, the record stays queued",
                message.message_id,
                self.commit_timeout,
            )
        except AuditError:
            pass  # dropped or refused: counted in trail.writer_stats and logged by the writer


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    """Retrieve a background write's outcome; failures are already counted and logged by the writer."""
    if not future.cancelled():
        future.exception()
