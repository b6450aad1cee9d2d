"""What the server and client sides share: one :class:`AuditPlugin` and how its awaitables are awaited."""

from __future__ import annotations

import asyncio
import inspect
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from audit_plugin.messages import DeliveryReceipt, Message, MessageStatus
from audit_plugin.plugin import AuditPlugin, Durability
from audit_plugin.trail import MessageAuditTrail

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

log = logging.getLogger(__name__)


def receipt(message: Message, status: MessageStatus, error: str | None = None) -> DeliveryReceipt:
    """The receipt of ``message`` with ``status`` (delivery time now when DELIVERED)."""
    delivered_at = datetime.now(UTC) if status == MessageStatus.DELIVERED else None
    return DeliveryReceipt(message.message_id, status, delivered_at=delivered_at, error_message=error)


def error_text(exc: BaseException) -> str:
    """``"TypeName: message"`` (the type alone when the message is empty)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Auditor:
    """An :class:`AuditPlugin` used by an A2A adapter, plus the rule for waiting on it.

    In ``"commit"`` durability each record call returns an awaitable that
    completes at commit (bounded by ``commit_timeout``); the adapter awaits
    it before the message goes on. Calls made while the adapter is being
    cancelled are not awaited in the cancelled task: they are finished in
    the background, so cancellation is not delayed and nothing queued is lost.
    """

    def __init__(
        self,
        trail: MessageAuditTrail,
        *,
        durability: Durability,
        commit_timeout: float | None,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        trace_payload: bool,
    ) -> None:
        self.plugin = AuditPlugin(
            trail,
            durability=durability,
            commit_timeout=commit_timeout,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            trace_payload=trace_payload,
        )
        self._background: set[asyncio.Task[Any]] = set()

    async def wait(self, result: Any) -> None:
        """Await ``result`` if a plugin call returned an awaitable."""
        if inspect.isawaitable(result):
            await result

    def finish_later(self, result: Any) -> None:
        """Let an awaitable a plugin call returned finish in the background (for cancelled callers)."""
        if not inspect.isawaitable(result):
            return
        task = asyncio.ensure_future(result)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording an A2A outcome failed", exc_info=task.exception())

    async def settle(self, result: Any, exc: BaseException | None) -> None:
        """Await ``result``, or finish it in the background when ``exc`` is a cancellation."""
        if isinstance(exc, asyncio.CancelledError):
            self.finish_later(result)
        else:
            await self.wait(result)
