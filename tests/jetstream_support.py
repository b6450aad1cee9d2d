"""NATS servers the JetStream tests start themselves, and producer/ingester processes they run.

Tests never stop the shared server on 4222: a test that needs to take a
server down (an outage, a node kill) starts its own on free ports.

Run as a script, this module is a producer process
(``python -m tests.jetstream_support produce URL COUNT PREFIX DURABILITY IDS_FILE``)
or an ingester that dies after its first commit, before acknowledging
(``python -m tests.jetstream_support ingest-and-die SOURCE DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

NATS_SERVER = "/usr/sbin/nats-server"
SHARED_URL = "nats://127.0.0.1:4222"
PRODUCE_PATIENCE = 180
"""Seconds :func:`produce` gets (its 10,000 messages take a few): a stream that stops taking them fails, not hangs."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shared_server_up() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 4222)) == 0


@dataclass
class Node:
    """One ``nats-server -js`` process on its own ports and store directory."""

    name: str
    port: int
    cluster_port: int | None
    store: Path
    routes: list[str] = field(default_factory=list)
    cluster_name: str = "audit"
    extra: list[str] = field(default_factory=list)
    """More ``nats-server`` arguments (authorization, TLS)."""
    process: subprocess.Popen[bytes] | None = None
    log: Any = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store), "-n", self.name]
        if self.cluster_port is not None:
            command += ["--cluster", f"nats://127.0.0.1:{self.cluster_port}", "--cluster_name", self.cluster_name]
            command += ["--routes", ",".join(self.routes)]
        command += self.extra
        self.log = open(self.store.parent / f"{self.name}.log", "ab")  # noqa: SIM115 (closed by kill())
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None


@contextmanager
def nats_cluster(directory: Path, size: int = 3) -> Iterator[list[Node]]:
    """``size`` JetStream servers on 127.0.0.1 routed into one cluster, killed afterwards."""
    cluster_ports = [free_port() for _ in range(size)]
    nodes = []
    for index in range(size):
        store = directory / f"n{index}"
        store.mkdir(parents=True)
        routes = [f"nats://127.0.0.1:{port}" for i, port in enumerate(cluster_ports) if i != index]
        nodes.append(Node(f"n{index}", free_port(), cluster_ports[index], store, routes))
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


@contextmanager
def nats_server(directory: Path, *extra: str) -> Iterator[Node]:
    """One private JetStream server (for tests that stop it, or that set ``extra`` options: authorization, TLS)."""
    directory.mkdir(parents=True, exist_ok=True)
    node = Node("solo", free_port(), None, directory / "store", extra=list(extra))
    node.store.mkdir(exist_ok=True)
    node.start()
    try:
        yield node
    finally:
        node.kill()


async def wait_for_jetstream(server: str, stream: str, replicas: int, timeout: float = 30, shards: int = 1) -> None:
    """Create ``stream`` (subjects ``<stream>.>``, a work queue) once the cluster has a JetStream leader."""
    from audit_plugin.jetstream.address import parse_address
    from audit_plugin.jetstream.stream import ensure_stream

    address = parse_address(f"{server}/{stream}?replicas={replicas}&shards={shards}")
    deadline = time.monotonic() + timeout
    client = await nats.connect(server)
    try:
        while True:
            try:
                await ensure_stream(client.jetstream(), address)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
    finally:
        await client.close()


async def stream_messages(server: str, stream: str) -> int:
    """Messages in the stream now."""
    client = await nats.connect(server)
    try:
        return int((await client.jetstream().stream_info(stream)).state.messages)
    finally:
        await client.close()


async def eventually(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Wait until ``condition()`` holds (checked every 50 ms); fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (the condition is another task's progress, not an event)
            await asyncio.sleep(0.05)


# -- processes ----------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen[str]:
    """This module run as a script with ``args`` (in the repository root, this interpreter)."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [sys.executable, "-m", "tests.jetstream_support", *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def produce(url: str, count: int, prefix: str, durability: Any, concurrency: int = 50) -> list[str]:
    """Send ``count`` messages through a bus audited into the ``nats://`` trail ``url``; return their ids."""
    from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType

    ids: list[str] = []
    async with asyncio.timeout(PRODUCE_PATIENCE), MessageAuditTrail(url) as trail:
        print("connected", flush=True)  # a test may wait for this line before it breaks a server
        bus = MessageBus()
        bus.register(AuditPlugin(trail, durability=durability, commit_timeout=None))

        async def handler(message: Message) -> None:
            return None

        bus.subscribe("worker", handler)

        async def send(index: int) -> None:
            message = Message(prefix, "worker", MessageType.COMMAND, {"n": index})
            ids.append(message.message_id)
            await bus.send(message)

        for start in range(0, count, concurrency):
            await asyncio.gather(*(send(i) for i in range(start, min(count, start + concurrency))))
        await trail.flush()
    return ids


async def ingest_and_die(source: str, database_url: str, ack_wait: float) -> None:
    """Ingest one batch, then exit the process after its commit and before any acknowledgement."""
    from audit_plugin import MessageAuditTrail
    from audit_plugin.jetstream.ingest import JetStreamIngester

    class DiesBeforeAck(JetStreamIngester):
        async def _settle(self, delivery: Any) -> None:
            print("committed", flush=True)
            os._exit(17)

    async with MessageAuditTrail(database_url) as trail:
        await DiesBeforeAck(source, trail, ack_wait=ack_wait, batch_size=200).run()


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    if command == "produce":
        url, count, prefix, durability, ids_file = arguments
        Path(ids_file).write_text("\n".join(asyncio.run(produce(url, int(count), prefix, durability))))
    elif command == "ingest-and-die":
        source, database_url, ack_wait = arguments
        asyncio.run(ingest_and_die(source, database_url, float(ack_wait)))
    else:
        raise SystemExit(f"unknown command {command!r}")
