"""Quickstart: two agents on the reference bus, audited into SQLite, then the trail queried.

Run::

    .venv/bin/python examples/quickstart.py

It writes ``quickstart.db`` in the current directory (each run adds one
conversation); look at it afterwards with the command it prints last.
"""

from __future__ import annotations

import asyncio
import uuid

from audit_plugin import AuditPlugin, AuditQuery, Message, MessageAuditTrail, MessageBus, MessageType


async def main() -> None:
    async with MessageAuditTrail("sqlite+aiosqlite:///quickstart.db") as trail:
        bus = MessageBus(max_retries=2)
        bus.register(AuditPlugin(trail))  # from now on every send() is recorded, with its outcome

        async def worker(message: Message) -> None:
            answer = Message(
                "worker",
                message.from_agent,
                MessageType.RESPONSE,
                {"answer": 42},
                correlation_id=message.correlation_id,
                reply_to=message.message_id,
            )
            await bus.send(answer)

        async def planner(message: Message) -> None:
            print("planner got", message.payload)

        bus.subscribe("worker", worker)
        bus.subscribe("planner", planner)

        conversation = f"conv-{uuid.uuid4().hex[:8]}"
        question = Message("planner", "worker", MessageType.QUERY, {"q": "meaning?"}, correlation_id=conversation)
        receipt = await bus.send(question)
        print("status:", receipt.status)  # status: DELIVERED

        for record in await trail.get_conversation_history(conversation):
            who = f"{record.from_agent} -> {record.to_agent}"
            print(f"  {who}  {record.message_type}  {record.status}  {record.payload}")

        failed = await trail.query_messages(AuditQuery(status="failed"))
        stats = await trail.get_statistics()
        print(f"quickstart.db holds {stats.total_messages} messages, {len(failed)} failed")
        print(f"next: audit-plugin conversation {conversation} --database-url quickstart.db")


asyncio.run(main())
