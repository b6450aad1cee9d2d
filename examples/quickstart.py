"""Quickstart: two agents on the reference bus, audited into SQLite, then the trail queried.

Run::

    .venv/bin/python examples/quickstart.py

It writes ``quickstart.db`` in the current directory (each run adds one
conversation); look at it afterwards with the command it prints last.
"""

from __future__ import annotations

import asyncio
import uuid

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType


async def main() -> None:
    async with MessageAuditTrail("sqlite+aiosqlite:///quickstart.db") as trail:
        bus = MessageBus()
        bus.register(AuditPlugin(trail))  # from now on every send() is recorded, with its outcome

        async def worker(ask: Message) -> None:
            answer = Message("worker", "planner", MessageType.RESPONSE, {"answer": 42}, reply_to=ask.message_id)
            answer.correlation_id = ask.correlation_id  # the same conversation
            await bus.send(answer)

        async def planner(answer: Message) -> None:
            print("planner got", answer.payload)

        bus.subscribe("worker", worker)
        bus.subscribe("planner", planner)
        conversation = f"conv-{uuid.uuid4().hex[:8]}"
        ask = Message("planner", "worker", MessageType.QUERY, {"q": "meaning?"}, correlation_id=conversation)
        print("status:", (await bus.send(ask)).status)  # status: DELIVERED
        for record in await trail.get_conversation_history(conversation):
            print(f"  {record.from_agent} -> {record.to_agent}  {record.message_type}  {record.status}")
        print(f"next: audit-plugin conversation {conversation} --database-url quickstart.db")


asyncio.run(main())
