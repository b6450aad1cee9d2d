"""A pytest plugin that puts :class:`AuditMiddleware` into every broker FastStream's own test suite builds.

Run FastStream's broker tests with ``-p audit_inject`` (this folder on
``PYTHONPATH``): each ``RedisBroker``, ``NatsBroker`` and ``RabbitBroker``
the suite constructs (directly, through a FastAPI router or a test client)
gets one more middleware, appended last (innermost) as a user would add it.
Each event loop gets its own trail on a temporary SQLite file, created when
the loop first publishes or consumes, so brokers built at import time or in
synchronous fixtures are audited too. A test whose loop is pytest-asyncio's
closes its trail at teardown; others (a FastAPI test client's loop) are
dropped with their loop.

``AUDIT_COMPAT_DURABILITY`` picks the durability (``commit``, the default,
or ``buffered``). At the end the plugin prints how many records it wrote and
how many errors the audit code logged (it never raises into FastStream;
those logs are where a record that could not be made shows up).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import pytest_asyncio
from faststream import BaseMiddleware

from audit_plugin import MessageAuditTrail
from audit_plugin.integrations.faststream import AuditMiddleware

DURABILITY = os.environ.get("AUDIT_COMPAT_DURABILITY", "commit")
_FOLDER = Path(tempfile.mkdtemp(prefix="audit-compat-"))


class _AuditErrors(logging.Handler):
    """Counts what the audit code logged at ERROR or above, by test."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.current_test = ""
        self.by_test: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.by_test.setdefault(self.current_test, []).append(record.getMessage())


class _Trails:
    """One initialised trail (and its middleware) per event loop."""

    def __init__(self) -> None:
        self.by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[MessageAuditTrail, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self.made = 0
        self.records = 0
        self._lock: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    async def middleware(self) -> AuditMiddleware:
        loop = asyncio.get_running_loop()
        found = self.by_loop.get(loop)
        if found is None:
            lock = self._lock.setdefault(loop, asyncio.Lock())
            async with lock:
                found = self.by_loop.get(loop)
                if found is None:
                    self.made += 1
                    trail = MessageAuditTrail(f"sqlite+aiosqlite:///{_FOLDER / f'trail-{self.made}.db'}")
                    await trail.initialize()
                    found = (trail, AuditMiddleware(trail, agent="compat", durability=DURABILITY))
                    self.by_loop[loop] = found
        return found[1]

    async def close_current(self) -> None:
        loop = asyncio.get_running_loop()
        self._lock.pop(loop, None)
        found = self.by_loop.pop(loop, None)
        if found is not None:
            trail = found[0]
            await trail.flush(timeout=10)
            self.records += await trail.count_messages()
            await trail.close(timeout=10)


TRAILS = _Trails()
ERRORS = _AuditErrors()


class _InjectedScope(BaseMiddleware):
    """Hands each step to the :class:`AuditMiddleware` scope of the running loop's trail."""

    def __init__(self, msg: Any, /, *, context: Any) -> None:
        super().__init__(msg, context=context)
        self.inner: BaseMiddleware | None = None

    async def _scope(self) -> BaseMiddleware:
        if self.inner is None:
            self.inner = (await TRAILS.middleware())(self.msg, context=self.context)
        return self.inner

    async def on_receive(self) -> None:
        await (await self._scope()).on_receive()

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        return await (await self._scope()).after_processed(exc_type, exc_val, exc_tb)

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        return await (await self._scope()).consume_scope(call_next, msg)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        return await (await self._scope()).publish_scope(call_next, cmd)


def injected(msg: Any, /, *, context: Any) -> _InjectedScope:
    """The middleware factory added to every broker."""
    return _InjectedScope(msg, context=context)


def _broker_classes() -> Iterator[type]:
    from faststream.nats import NatsBroker
    from faststream.rabbit import RabbitBroker
    from faststream.redis import RedisBroker

    yield from (RedisBroker, NatsBroker, RabbitBroker)


def _wrap(cls: type) -> None:
    original = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if injected not in self.middlewares:
            self.add_middleware(injected)

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]


def pytest_configure(config: pytest.Config) -> None:
    for cls in _broker_classes():
        _wrap(cls)
    logging.getLogger("audit_plugin").addHandler(ERRORS)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    ERRORS.current_test = item.nodeid
    return (yield)


@pytest_asyncio.fixture(autouse=True)
async def _close_this_loops_trail() -> Any:
    yield
    await TRAILS.close_current()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    write = terminalreporter.write_line
    write(
        f"audit_inject: durability={DURABILITY}, {TRAILS.made} trails, "
        f"{TRAILS.records} records in the trails closed at teardown"
    )
    write(f"audit_inject: {sum(map(len, ERRORS.by_test.values()))} audit errors logged in {len(ERRORS.by_test)} tests")
    for test, messages in sorted(ERRORS.by_test.items()):
        write(f"  {test}: {messages[0]}" + (f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""))
