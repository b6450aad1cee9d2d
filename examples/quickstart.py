"""Quickstart: audit a two-agent conversation on the reference bus into SQLite, then query it.

Run::

    python examples/quickstart.py

It writes ``audit.db`` in the current directory; look at it afterwards with
``audit-plugin query`` or ``audit-plugin conversation conv-1``.
"""

from __future__ import annotations

import asyncio

from audit_plugin import AuditPlugin, AuditQuery, Message, MessageAuditTrail, MessageBus, MessageType


async def main() -> None:
    async with MessageAuditTrail("sqlite+aiosqlite:///audit.db") as trail:
        bus = MessageBus(max_retries=2)
        bus.register(AuditPlugin(trail))

        async def worker(message: Message) -> None:
            await bus.send(
                Message(
                    "worker",
                    message.from_agent,
                    MessageType.RESPONSE,
                    {"answer": 42},
                    correlation_id=message.correlation_id,
                    reply_to=message.message_id,
                )
            )

        async def planner(message: Message) -> None:
            print("planner got", message.payload)

        bus.subscribe("worker", worker)
        bus.subscribe("planner", planner)

        receipt = await bus.send(
            Message("planner", "worker", MessageType.QUERY, {"q": "meaning?"}, correlation_id="conv-1")
        )
        print(receipt.status)  # MessageStatus.DELIVERED

        for record in await trail.get_conversation_history("conv-1"):
            print(record.from_agent, "->", record.to_agent, record.status, record.payload)
        print(await trail.query_messages(AuditQuery(from_agent="planner", limit=10)))
        print(await trail.get_statistics())


asyncio.run(main())
