"""The same code on SQLite and PostgreSQL: only the database URL changes.

Run::

    .venv/bin/python examples/swap_backend.py                                              # ./swap_backend.db
    .venv/bin/python examples/swap_backend.py postgresql://postgres@127.0.0.1:5432/test    # PostgreSQL
    AUDIT_DATABASE_URL=postgresql+asyncpg://... .venv/bin/python examples/swap_backend.py

The backend comes from the URL's scheme: the core (SQLite, the embedded
default) and the ``audit-plugin-postgres`` distribution each register one
through the ``audit_plugin`` entry-point group, so another store is one
``pip install`` away.
"""

from __future__ import annotations

import asyncio
import os
import sys

from audit_plugin import AuditPlugin, AuditQuery, Message, MessageAuditTrail, MessageBus, MessageStatus, MessageType


async def main(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        print(f"backend: {trail.backend.name}")
        bus = MessageBus()
        bus.register(AuditPlugin(trail))

        async def echo(message: Message) -> None:
            pass

        bus.subscribe("echo", echo)
        run = os.urandom(4).hex()
        for index in range(3):
            await bus.send(Message("client", "echo", MessageType.EVENT, {"n": index}, correlation_id=f"swap-{run}"))
        await bus.send(Message("client", "nobody", MessageType.EVENT, {}, correlation_id=f"swap-{run}"))

        delivered = await trail.query_messages(AuditQuery(correlation_id=f"swap-{run}", status=MessageStatus.DELIVERED))
        failed = await trail.query_messages(AuditQuery(correlation_id=f"swap-{run}", status=MessageStatus.FAILED))
        print(f"conversation swap-{run}: {len(delivered)} delivered, {len(failed)} failed ({failed[0].error_message})")
        stats = await trail.get_statistics()
        print(f"store holds {stats.total_messages} messages, error rate {stats.error_rate:.1f}%")


if __name__ == "__main__":
    url = (
        sys.argv[1]
        if len(sys.argv) > 1
        else os.environ.get("AUDIT_DATABASE_URL", "sqlite+aiosqlite:///swap_backend.db")
    )
    asyncio.run(main(url))
