"""The reference in-process asyncio ``MessageBus``, and the hook-calling helper any bus can use.

The bus is deliberately small: one async handler per agent, direct delivery,
retries and TTL expiry. It exists to show (and test) the hook contract; a
production bus (Redis, NATS, RabbitMQ...) calls the same hooks the same way
(``audit_pre_send``, ``audit_post_delivery``, optionally ``audit_retry``), with
:func:`call_hook`.

Each handler run is a ``process {to_agent}`` CONSUMER span parented by the
trace context in ``message.headers`` (see :mod:`audit_plugin.telemetry.tracing`): one
span per attempt, so retries show as sibling spans with
``messaging.audit_plugin.retry_count`` 0, 1, 2... Handler runs are also
counted in ``messaging.client.consumed.messages`` and timed in
``messaging.process.duration``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pluggy

from audit_plugin import hookspecs
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.model.messages import DeliveryReceipt, Message, MessageStatus
from audit_plugin.model.validation import INT32_MAX, check_int, check_seconds, check_text
from audit_plugin.telemetry.metrics import ConsumerMetrics, get_meter
from audit_plugin.telemetry.tracing import ProcessTracer, error_type

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[Any]]
"""An agent's message handler: ``async def handle(message) -> Any``."""


async def call_hook(hook: pluggy.HookCaller, **kwargs: Any) -> list[Any]:
    """Call a hook and await every awaitable among its results, in order.

    This is the contract for any bus: pluggy hooks are synchronous, and an
    implementation that needs the bus to wait (e.g. until its record is
    committed) returns an awaitable.
    """
    results = hook(**kwargs)
    for index, result in enumerate(results):
        if inspect.isawaitable(result):
            results[index] = await result
    return results


class MessageBus:
    """In-process asyncio message bus with audit hooks.

    :param max_retries: how many times a failing handler is retried before the
        message is FAILED (``retry_count`` on the receipt counts retries).
    :param retry_delay: seconds before the first retry, doubling after each.
    :param tracer_provider: OpenTelemetry tracer provider for the bus's
        CONSUMER spans (the global one if not given).
    :param meter_provider: OpenTelemetry meter provider for the consumer
        metrics (the global one if not given).

    ``plugin_manager`` is public: register plugins with :meth:`register` or
    on it directly.
    """

    def __init__(
        self,
        *,
        max_retries: int = 0,
        retry_delay: float = 0.0,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        check_int("max_retries", max_retries, minimum=0, maximum=INT32_MAX)  # retry_count is an INTEGER column
        check_seconds("retry_delay", retry_delay)
        self.max_retries = max_retries
        self.retry_delay = float(retry_delay)
        self._tracer = ProcessTracer(tracer_provider)
        self._consumer_metrics = ConsumerMetrics(get_meter(meter_provider))
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        self._handlers: dict[str, Handler] = {}

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register a plugin (e.g. ``AuditPlugin(trail)``) for the bus hooks."""
        return self.plugin_manager.register(plugin, name)

    def subscribe(self, agent: str, handler: Handler) -> None:
        """Deliver messages addressed to ``agent`` to ``handler`` (one handler per agent)."""
        check_text("agent", agent)
        if not callable(handler):
            raise FieldTypeError("handler", "an async callable", handler)
        if agent in self._handlers:
            raise InvalidFieldError("agent", f"{agent!r} already has a handler; unsubscribe it first")
        self._handlers[agent] = handler

    def unsubscribe(self, agent: str) -> None:
        """Stop delivering to ``agent``; later messages to it fail with "no subscriber"."""
        self._handlers.pop(agent, None)

    async def send(self, message: Message) -> DeliveryReceipt:
        """Audit, deliver and report one message; returns once the outcome is known.

        Raises only if a hook refuses the message (the audit plugin does so
        for a message it cannot record, with a typed error naming the field);
        delivery failures are reported in the receipt, never raised.
        """
        if not isinstance(message, Message):
            raise FieldTypeError("message", "audit_plugin.Message", message)
        hook = self.plugin_manager.hook
        await call_hook(hook.audit_pre_send, message=message)
        try:
            receipt = await self._deliver(message)
        except BaseException as exc:  # cancelled or interrupted mid-delivery: report it, then propagate
            self._report_interrupted(message, exc)
            raise
        await call_hook(hook.audit_post_delivery, message=message, receipt=receipt)
        return receipt

    def _report_interrupted(self, message: Message, exc: BaseException) -> None:
        """Tell the hooks a delivery was interrupted (FAILED) without waiting for them.

        The record gets its FAILED status queued and open spans end, so
        nothing stays PENDING or in flight; awaitables are not awaited, so
        cancellation is not delayed by the store.
        """
        receipt = DeliveryReceipt(
            message.message_id, MessageStatus.FAILED, error_message=f"delivery interrupted by {type(exc).__name__}"
        )
        try:
            results = self.plugin_manager.hook.audit_post_delivery(message=message, receipt=receipt)
        except Exception:  # the interruption is what propagates; a hook failing on top of it is logged
            log.exception("audit_post_delivery failed while reporting interrupted message %s", message.message_id)
            return
        for result in results:
            if inspect.iscoroutine(result):
                result.close()

    async def _deliver(self, message: Message) -> DeliveryReceipt:
        handler = self._handlers.get(message.to_agent)
        if handler is None:
            return DeliveryReceipt(
                message.message_id, MessageStatus.FAILED, error_message=f"no subscriber for agent {message.to_agent!r}"
            )
        retries = 0
        while True:
            if message.is_expired():
                return DeliveryReceipt(
                    message.message_id,
                    MessageStatus.EXPIRED,
                    retry_count=retries,
                    error_message=f"ttl of {message.ttl_seconds}s elapsed before delivery",
                )
            try:
                await self._run_handler(handler, message, retries)
            except Exception as exc:
                if retries >= self.max_retries:
                    return DeliveryReceipt(
                        message.message_id,
                        MessageStatus.FAILED,
                        retry_count=retries,
                        error_message=f"handler for {message.to_agent!r} raised {type(exc).__name__}: {exc}"
                        + (f" (after {retries} {'retry' if retries == 1 else 'retries'})" if retries else ""),
                    )
                if self.retry_delay:
                    await asyncio.sleep(self.retry_delay * 2**retries)
                retries += 1
                await call_hook(self.plugin_manager.hook.audit_retry, message=message, attempt=retries, error=exc)
                continue
            return DeliveryReceipt(
                message.message_id, MessageStatus.DELIVERED, delivered_at=datetime.now(UTC), retry_count=retries
            )

    async def _run_handler(self, handler: Handler, message: Message, retries: int) -> None:
        """Run one delivery attempt inside its CONSUMER span, counting and timing it."""
        started = time.perf_counter()
        error: str | None = None
        try:
            await self._tracer.run(message, retries, handler)
        except BaseException as exc:
            error = error_type(exc)
            raise
        finally:
            self._consumer_metrics.record(message, time.perf_counter() - started, error)
