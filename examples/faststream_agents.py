"""Three agents talking over Redis with FastStream, every message audited by one middleware line.

planner -> researcher (a task), researcher -> writer (its findings, as the
handler's return value), writer -> planner (the draft). Each agent is its
own ``RedisBroker`` with ``AuditMiddleware(trail, agent=...)``, as separate
services would be; here they share one process and one trail. FastStream
carries the correlation id along the chain, so the whole exchange is one
conversation::

    python examples/faststream_agents.py [DATABASE_URL] [REDIS_URL]
    audit-plugin conversation <printed id> --database-url DATABASE_URL

Needs ``pip install "audit-plugin[faststream]" "faststream[redis]"`` and a
Redis server (default ``redis://127.0.0.1:6379``).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

from faststream import Context
from faststream.redis import RedisBroker

from audit_plugin import MessageAuditTrail
from audit_plugin.integrations.faststream import AuditMiddleware


async def main(database_url: str, redis_url: str) -> None:
    run = uuid.uuid4().hex[:8]  # fresh lists, so runs never see each other's messages
    tasks, findings, drafts = f"research-tasks-{run}", f"findings-{run}", f"drafts-{run}"
    async with MessageAuditTrail(database_url) as trail:
        planner, researcher, writer = (
            RedisBroker(redis_url, middlewares=[AuditMiddleware(trail, agent=name)], logger=None)
            for name in ("planner", "researcher", "writer")
        )
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        @researcher.subscriber(list=tasks)
        @researcher.publisher(list=findings)
        async def research(task: dict[str, Any]) -> dict[str, Any]:
            return {"topic": task["topic"], "facts": ["FastStream speaks Redis", "every hop is on record"]}

        @writer.subscriber(list=findings)
        async def write(found: dict[str, Any], correlation_id: str = Context("message.correlation_id")) -> None:
            draft = {"title": f"On {found['topic']}", "paragraphs": len(found["facts"])}
            await writer.publish(draft, list=drafts, correlation_id=correlation_id)

        @planner.subscriber(list=drafts)
        async def receive(draft: dict[str, Any]) -> None:
            done.set_result(draft)

        for broker in (planner, researcher, writer):
            await broker.start()
        try:
            conversation = str(uuid.uuid4())
            await planner.publish({"topic": "audited agents"}, list=tasks, correlation_id=conversation)
            draft = await asyncio.wait_for(done, 10)
        finally:
            for broker in (planner, researcher, writer):
                await broker.stop()
        await trail.flush()
        print(f"planner got {draft}")
        for record in await trail.get_conversation_history(conversation):
            print(f"{record.from_agent} -> {record.to_agent} {record.status.value} {record.payload}")
        print(f"conversation {conversation}")
        print(f"see it with: audit-plugin conversation {conversation} --database-url {database_url}")


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1] if len(sys.argv) > 1 else "sqlite+aiosqlite:///faststream_agents.db",
            sys.argv[2] if len(sys.argv) > 2 else "redis://127.0.0.1:6379",
        )
    )
