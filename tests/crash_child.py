"""The child process of the crash tests: sends through an audited bus until it is killed.

``python -m tests.crash_child DATABASE_URL DURABILITY MAX_QUEUE BATCH_SIZE SENDERS``

Prints ``READY`` once the trail is open, then one line per acknowledged send
(``send()`` returned): the message id. A line is written only after
``send()`` returned, so every complete line the parent reads is a send the
audit trail promised to keep (within the mode's loss window).
"""

from __future__ import annotations

import asyncio
import os
import sys

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType


async def main(database_url: str, durability: str, max_queue: int, batch_size: int, senders: int) -> None:
    trail = MessageAuditTrail(database_url, max_queue=max_queue, batch_size=batch_size)
    await trail.initialize()
    bus = MessageBus()
    bus.register(AuditPlugin(trail, durability=durability, commit_timeout=None))  # type: ignore[arg-type]

    async def sink(message: Message) -> None:
        return None

    bus.subscribe("sink", sink)
    os.write(1, b"READY\n")

    async def sender(n: int) -> None:
        while True:
            message = Message(f"sender-{n}", "sink", MessageType.EVENT, {"n": n})
            await bus.send(message)
            os.write(1, f"{message.message_id}\n".encode())

    await asyncio.gather(*(sender(n) for n in range(senders)))


if __name__ == "__main__":
    url, mode, queue, batch, count = sys.argv[1:6]
    asyncio.run(main(url, mode, int(queue), int(batch), int(count)))
