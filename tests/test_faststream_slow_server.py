"""The FastStream tests' JetStream publishes survive a server that answers late, as on a loaded machine.

A private ``nats-server`` is paused (SIGSTOP) for a second while a publish
waits for its acknowledgement: FastStream's default 0.5 s timeout gives up,
the tests' publish helper waits it out.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from tests.faststream_support import KINDS, PUBLISH_TIMEOUT
from tests.jetstream_support import NATS_SERVER, nats_server

pytestmark = [
    pytest.mark.skipif(not Path(NATS_SERVER).exists(), reason="nats-server is not installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

PAUSE = 1.5
"""Seconds the server is stopped: longer than FastStream's default publish timeout, far shorter than ours."""


async def test_a_publish_waits_for_a_server_that_answers_late(tmp_path: Path) -> None:
    nats = KINDS["nats"]
    target = nats.new_target()
    handled: list[int] = []

    async def handle(body: dict[str, int]) -> None:
        handled.append(body["n"])

    with nats_server(tmp_path / "nats") as node:
        broker = NatsBroker(node.url, logger=None)
        nats.subscribe(broker, target, handle)
        await broker.start()
        try:
            assert node.process is not None
            loop = asyncio.get_running_loop()

            async def paused(publish: asyncio.Future[object] | object) -> None:
                node.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
                resume = loop.call_later(PAUSE, node.process.send_signal, signal.SIGCONT)  # type: ignore[union-attr]
                try:
                    await publish  # type: ignore[misc]
                finally:
                    resume.cancel()
                    node.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

            with pytest.raises(TimeoutError):  # what the flaky test met: FastStream's default gives up
                await paused(broker.publish({"n": 0}, target, stream=target, timeout=0.5))
            await paused(nats.publish(broker, {"n": 1}, target))  # the tests' helper waits it out
            assert PUBLISH_TIMEOUT >= 10 * PAUSE
            for _ in range(600):
                if 1 in handled:
                    break
                await asyncio.sleep(0.05)
            assert 1 in handled
        finally:
            await broker.stop()
