"""What auditing an A2A agent costs: messages/s with and without the audit adapters, in one run.

Run: ``python benchmarks/bench_a2a.py [--messages 400] [--concurrency 8] [--runs 3] [--database-url URL]``

An echo agent (one reply message per request) is served over JSON-RPC on
127.0.0.1 (uvicorn, a free port) and called by an a2a-sdk client,
``--concurrency`` requests at a time; the same is done in-process through
``DefaultRequestHandler`` (no HTTP), the SDK's floor. Configurations: no
audit (the baseline), server and client audited in ``"buffered"``
durability, and in ``"commit"`` durability, each on a fresh SQLite file (or
a fresh PostgreSQL database on ``--database-url``'s server). Each audited
message writes the request's record, the reply's record and their outcomes.
Prints the median messages/s of ``--runs`` runs and the ratio to the
baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import uvicorn
from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Message, Part, Role, SendMessageRequest
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from audit_plugin import MessageAuditTrail
from audit_plugin.integrations.a2a import AuditClientInterceptor, AuditedAgentExecutor

CONFIGURATIONS = ("no audit", "buffered", "commit")


class Echo(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        reply = new_text_message(context.get_user_input(), context_id=context.context_id, role=Role.ROLE_AGENT)
        await event_queue.enqueue_event(reply)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        pass


def card(url: str) -> AgentCard:
    return AgentCard(
        name="echo",
        description="echo",
        version="1",
        capabilities=AgentCapabilities(streaming=False),
        supported_interfaces=[AgentInterface(protocol_binding="JSONRPC", url=url, protocol_version="1.0")],
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="echo", tags=["bench"])],
    )


def request(n: int) -> SendMessageRequest:
    text = f"message {n}: lorem ipsum dolor sit amet " * 4
    message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    return SendMessageRequest(message=message)


async def drive(messages: int, concurrency: int, send: object) -> float:
    """Send ``messages`` requests, ``concurrency`` at a time, through ``send``; return messages/s."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(messages):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            await send(request(queue.get_nowait()))  # type: ignore[operator]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return messages / (time.perf_counter() - started)


async def run_http(trail: MessageAuditTrail | None, durability: str, messages: int, concurrency: int) -> float:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    agent_card = card(url)
    executor = Echo() if trail is None else AuditedAgentExecutor(Echo(), trail, agent=agent_card, durability=durability)
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=agent_card)
    app = Starlette(routes=[*create_agent_card_routes(agent_card), *create_jsonrpc_routes(handler, "/")])
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    try:
        interceptors = [] if trail is None else [AuditClientInterceptor(trail, agent="bench", durability=durability)]
        client = await create_client(agent_card, ClientConfig(streaming=False), interceptors=interceptors)
        if interceptors:
            client = interceptors[0].wrap(client)

        async def send(req: SendMessageRequest) -> None:
            async for _ in client.send_message(req):
                pass

        rate = await drive(messages, concurrency, send)
        await client.close()
        return rate
    finally:
        server.should_exit = True
        await serving


async def run_in_process(trail: MessageAuditTrail | None, durability: str, messages: int, concurrency: int) -> float:
    agent_card = card("http://127.0.0.1/")
    executor = Echo() if trail is None else AuditedAgentExecutor(Echo(), trail, agent=agent_card, durability=durability)
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=agent_card)

    async def send(req: SendMessageRequest) -> None:
        await handler.on_message_send(req, ServerCallContext(state={"headers": {"audit-from-agent": "bench"}}))

    return await drive(messages, concurrency, send)


async def fresh_url(base: str | None, directory: Path) -> str:
    if base is None:
        return f"sqlite+aiosqlite:///{directory / f'{uuid.uuid4().hex}.db'}"
    name = f"bench_a2a_{uuid.uuid4().hex[:12]}"
    dsn = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(base).set(database=name).render_as_string(hide_password=False)


async def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for transport, run in (("HTTP (JSON-RPC)", run_http), ("in-process", run_in_process)):
            rates: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
            for _ in range(args.runs):
                for name in CONFIGURATIONS:  # interleaved, so drift hits every configuration alike
                    if name == "no audit":
                        rates[name].append(await run(None, "commit", args.messages, args.concurrency))
                        continue
                    async with MessageAuditTrail(await fresh_url(args.database_url, Path(tmp))) as trail:
                        rates[name].append(await run(trail, name, args.messages, args.concurrency))
            baseline = statistics.median(rates["no audit"])
            print(f"{transport}: {args.messages} messages, concurrency {args.concurrency}, median of {args.runs}")
            for name in CONFIGURATIONS:
                rate = statistics.median(rates[name])
                print(f"  {name:<10} {rate:8.0f} msg/s   ratio {rate / baseline:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL server URL (postgresql+asyncpg://...); SQLite if absent")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
