"""Two Agent2Agent (A2A) agents over real HTTP, both audited into one trail.

``exchange`` is an A2A server agent (a2a-sdk, JSON-RPC over HTTP, served by
uvicorn on 127.0.0.1 at a free port) that converts amounts between
currencies; ``planner`` is a client agent that asks it twice. The server's
executor is wrapped in :class:`AuditedAgentExecutor`, the client carries an
:class:`AuditClientInterceptor`; both write to the same trail, so each
message is one record seen from both sides, in one conversation and one trace.

Run (needs ``pip install "audit-plugin[a2a]" "a2a-sdk[http-server]" uvicorn``)::

    python examples/a2a_agents.py [DATABASE_URL]

It writes ``a2a_audit.db`` in the current directory unless a database URL
is given; then try ``audit-plugin conversation <context id it prints>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator

import uvicorn
from a2a.client import create_client
from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from starlette.applications import Starlette

from audit_plugin import MessageAuditTrail
from audit_plugin.integrations.a2a import AuditClientInterceptor, AuditedAgentExecutor

RATES = {("EUR", "USD"): 1.08, ("USD", "EUR"): 0.93}


class ExchangeAgent(AgentExecutor):
    """Answers "<amount> <FROM> <TO>" with a message; a pair it has no rate for ends its task failed."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        amount, source, target = context.get_user_input().split()
        rate = RATES.get((source, target))
        if rate is None:
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
            updater = TaskUpdater(event_queue, context.task_id, context.context_id)
            await updater.failed(updater.new_agent_message([Part(text=f"no rate for {source} -> {target}")]))
            return
        answer = f"{float(amount) * rate:.2f} {target}"
        await event_queue.enqueue_event(new_text_message(answer, context_id=context.context_id, role=Role.ROLE_AGENT))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def exchange_card(url: str) -> AgentCard:
    return AgentCard(
        name="exchange",
        description="Converts amounts between currencies",
        version="1.0",
        capabilities=AgentCapabilities(streaming=True),
        supported_interfaces=[AgentInterface(protocol_binding="JSONRPC", url=url, protocol_version="1.0")],
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="convert", name="convert", description="100 EUR USD", tags=["fx"])],
    )


@contextlib.asynccontextmanager
async def serve_exchange(trail: MessageAuditTrail) -> AsyncIterator[str]:
    """Run the audited ``exchange`` agent on 127.0.0.1 at a free port; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    card = exchange_card(url)
    executor = AuditedAgentExecutor(ExchangeAgent(), trail, agent=card)  # the one line that audits the server
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():  # failed to start: raise its error
                serving.result()
            await asyncio.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        await serving


async def planner(trail: MessageAuditTrail, url: str) -> str:
    """The client agent: asks ``exchange`` two questions in one conversation; returns its context id."""
    audit = AuditClientInterceptor(trail, agent="planner")
    context_id = ""
    async with audit.wrap(await create_client(url, interceptors=[audit])) as client:  # wrapped: failures recorded
        for number, question in enumerate(("100 EUR USD", "5 EUR JPY")):
            message = Message(message_id=f"ask-{number}", role=Role.ROLE_USER, parts=[Part(text=question)])
            message.context_id = context_id  # empty the first time: a new conversation
            async for event in client.send_message(SendMessageRequest(message=message)):
                if event.HasField("message"):
                    context_id = event.message.context_id  # the conversation the reply belongs to
                    print(f"planner asked {question!r}, got {event.message.parts[0].text!r}")
                elif event.HasField("status_update") and event.status_update.status.message.parts:
                    status = event.status_update.status
                    reason = status.message.parts[0].text
                    print(f"planner asked {question!r}, {TaskState.Name(status.state)}: {reason}")
    return context_id


async def main(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        async with serve_exchange(trail) as url:
            context_id = await planner(trail, url)
        await trail.flush()

        print(f"conversation {context_id}:")
        for record in await trail.get_conversation_history(context_id):
            error = f" ({record.error_message})" if record.error_message else ""
            print(f"  {record.from_agent} -> {record.to_agent} {record.message_type} {record.status}{error}")
        print("verify:", "OK" if (await trail.verify()).ok else "BROKEN")


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "sqlite+aiosqlite:///a2a_audit.db"))
