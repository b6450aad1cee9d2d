"""A2A agents and an HTTP server for the A2A integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part, Role
from starlette.applications import Starlette

from audit_plugin import MessageAuditTrail


def agent_card(name: str, url: str = "http://127.0.0.1/", *, streaming: bool = False) -> AgentCard:
    """A complete agent card for ``name`` served at ``url`` (JSON-RPC)."""
    return AgentCard(
        name=name,
        description=f"{name} test agent",
        version="1.0",
        capabilities=AgentCapabilities(streaming=streaming),
        supported_interfaces=[AgentInterface(protocol_binding="JSONRPC", url=url, protocol_version="1.0")],
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="echoes", tags=["test"])],
    )


class ScriptedAgent(AgentExecutor):
    """Does what the user's text says.

    ``boom``: raises. ``fail``/``reject``: runs a task that ends failed /
    rejected with a reason. ``work``: starts a task and waits until
    cancelled. ``ask``: runs a task that waits for input; any follow-up
    completes it. ``check``: replies whether the incoming message's record was
    already committed in ``trail``. Anything else: replies ``echo <text>``.
    """

    def __init__(self, trail: MessageAuditTrail | None = None) -> None:
        self.trail = trail
        self.working = asyncio.Event()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        if text == "boom":
            raise RuntimeError("kaboom")
        if context.current_task is not None:  # a follow-up to a task waiting for input: done
            await TaskUpdater(event_queue, context.task_id, context.context_id).complete()
            return
        if text == "ask":
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
            updater = TaskUpdater(event_queue, context.task_id, context.context_id)
            await updater.requires_input(updater.new_agent_message([Part(text="which account?")]))
            return
        if text in ("fail", "reject", "work"):
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
            updater = TaskUpdater(event_queue, context.task_id, context.context_id)
            await updater.start_work()
            if text == "fail":
                await updater.failed(updater.new_agent_message([Part(text="the ledger is closed")]))
            elif text == "reject":
                await updater.reject(updater.new_agent_message([Part(text="not my job")]))
            else:
                self.working.set()
                await asyncio.Event().wait()  # until the task is cancelled
            return
        if text == "check" and self.trail is not None:
            text = "committed" if await self.trail.get_message(context.message.message_id) else "not committed"
        reply = new_text_message(f"echo {text}", context_id=context.context_id, role=Role.ROLE_AGENT)
        await event_queue.enqueue_event(reply)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel(updater.new_agent_message([Part(text="stopped on request")]))


def free_socket() -> socket.socket:
    """A listening-ready TCP socket bound to an ephemeral port on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve(handler: DefaultRequestHandler, card: AgentCard, sock: socket.socket) -> AsyncIterator[None]:
    """Serve ``handler`` over JSON-RPC (and its agent card) on ``sock`` with uvicorn while the block runs."""
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task
