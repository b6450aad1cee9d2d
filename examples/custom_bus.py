"""Audit your own message bus through the hook contract, without the reference MessageBus.

The contract, for any bus (in-process, Redis, NATS, RabbitMQ...):

1. create ``pluggy.PluginManager("audit_plugin")`` and ``add_hookspecs(audit_plugin.hookspecs)``;
2. register ``AuditPlugin(trail)`` on it;
3. before dispatching a message call ``hook.audit_pre_send(message=...)``, and
   once its final outcome is known call
   ``hook.audit_post_delivery(message=..., receipt=DeliveryReceipt(...))``,
   always with keyword arguments;
4. await every awaitable in the list a hook call returns (pluggy is
   synchronous; in "commit" durability the plugin returns one that completes
   when the record is committed, so a message is never delivered before it is
   on record). ``audit_plugin.call_hook`` does step 4 for you; it is spelled
   out below.

This example bus keeps one ``asyncio.Queue`` per agent with a consumer task
each, like a broker would. Run::

    .venv/bin/python examples/custom_bus.py [DATABASE_URL]     # default sqlite+aiosqlite:///custom_bus.db
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pluggy

import audit_plugin
from audit_plugin import AuditPlugin, DeliveryReceipt, Message, MessageAuditTrail, MessageStatus, MessageType

Handler = Callable[[Message], Awaitable[None]]


async def await_all(results: list[Any]) -> None:
    """Step 4 of the contract: a hook implementation may return an awaitable; the bus awaits it."""
    for result in results:
        if inspect.isawaitable(result):
            await result


class QueueBus:
    """A tiny broker: ``publish`` queues a message, one consumer task per agent delivers it."""

    def __init__(self) -> None:
        self.plugin_manager = pluggy.PluginManager("audit_plugin")
        self.plugin_manager.add_hookspecs(audit_plugin.hookspecs)
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._consumers: list[asyncio.Task[None]] = []

    def subscribe(self, agent: str, handler: Handler) -> None:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._queues[agent] = queue
        self._consumers.append(asyncio.create_task(self._consume(queue, handler)))

    async def publish(self, message: Message) -> None:
        hook = self.plugin_manager.hook
        await await_all(hook.audit_pre_send(message=message))  # recorded as PENDING before it can be delivered
        queue = self._queues.get(message.to_agent)
        if queue is None:
            receipt = DeliveryReceipt(message.message_id, MessageStatus.FAILED, error_message="no such queue")
            await await_all(hook.audit_post_delivery(message=message, receipt=receipt))
            return
        await queue.put(message)

    async def _consume(self, queue: asyncio.Queue[Message], handler: Handler) -> None:
        while True:
            message = await queue.get()
            try:
                await handler(message)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                receipt = DeliveryReceipt(message.message_id, MessageStatus.FAILED, error_message=error)
            else:
                receipt = DeliveryReceipt(message.message_id, MessageStatus.DELIVERED, delivered_at=datetime.now(UTC))
            await await_all(self.plugin_manager.hook.audit_post_delivery(message=message, receipt=receipt))
            queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued message has been handled and its outcome recorded."""
        for queue in self._queues.values():
            await queue.join()

    async def close(self) -> None:
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)


async def main(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        bus = QueueBus()
        bus.plugin_manager.register(AuditPlugin(trail))

        async def pricing(message: Message) -> None:
            if message.payload.get("sku") == "unknown":
                raise LookupError("no price for SKU 'unknown'")
            answer = Message(
                "pricing",
                message.from_agent,
                MessageType.RESPONSE,
                {"price": 9.5},
                correlation_id=message.correlation_id,
                reply_to=message.message_id,
            )
            await bus.publish(answer)

        async def shop(message: Message) -> None:
            print(f"shop got {message.payload} in reply to {message.reply_to}")

        order = f"order-{uuid.uuid4().hex[:8]}"
        bus.subscribe("pricing", pricing)
        bus.subscribe("shop", shop)
        await bus.publish(Message("shop", "pricing", MessageType.QUERY, {"sku": "A-1"}, correlation_id=order))
        await bus.publish(Message("shop", "pricing", MessageType.QUERY, {"sku": "unknown"}, correlation_id=order))
        await bus.publish(Message("shop", "billing", MessageType.COMMAND, {"charge": 9.5}, correlation_id=order))
        await bus.drain()
        await bus.close()

        for record in await trail.get_conversation_history(order):
            agents = f"{record.from_agent} -> {record.to_agent}"
            print(f"{record.message_type:<9} {agents:<18} {record.status:<9} {record.error_message or ''}".rstrip())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "sqlite+aiosqlite:///custom_bus.db"))
