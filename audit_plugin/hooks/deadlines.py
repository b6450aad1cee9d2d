"""One timer for many waits: give up on futures not done within a fixed time.

``send()`` in ``"commit"`` mode waits for its record's commit, bounded by
``commit_timeout``. A timer per message (``asyncio.timeout``) costs several
microseconds on every send; since every wait has the same timeout, deadlines
come in the order the waits start, and one sleeping task can serve them all.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any


class Deadlines:
    """Fail each watched future with ``make_error()`` if it is not done ``timeout`` seconds after :meth:`watch`."""

    def __init__(self, timeout: float, make_error: Callable[[], BaseException]) -> None:
        self.timeout = timeout
        self._make_error = make_error
        self._watched: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._sweeper: asyncio.Task[None] | None = None

    def watch(self, future: asyncio.Future[Any]) -> None:
        loop = asyncio.get_running_loop()
        watched = self._watched
        while watched and watched[0][1].done():  # commits finish in order: keep the queue short
            watched.popleft()
        watched.append((loop.time() + self.timeout, future))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep(), name="audit-commit-deadlines")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        watched = self._watched
        while watched:
            deadline, future = watched[0]
            if future.done():
                watched.popleft()
                continue
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            watched.popleft()
            future.set_exception(self._make_error())
