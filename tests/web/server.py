"""A real uvicorn server for the web view on 127.0.0.1 and an ephemeral port, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn


@contextlib.asynccontextmanager
async def serving(make_app: Callable[[str], Any]) -> AsyncIterator[str]:
    """Serve ``make_app(base_url)`` until the block ends; yields the base URL (``http://127.0.0.1:PORT``).

    The app is built once the port is known, so it can link to itself (a trace URL template).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(make_app(base), log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.02)
        if not server.started:
            raise RuntimeError("the web view did not start") from task.exception() if task.done() else None
        yield base
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()
