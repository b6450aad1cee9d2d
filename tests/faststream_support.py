"""The three brokers the FastStream tests run on, real servers and FastStream's in-memory test brokers.

Each :class:`BrokerKind` knows how to build a broker, subscribe a competing
consumer to a fresh destination, publish to it and clean it up, so one test
body runs on Redis (streams with a consumer group), NATS JetStream (a pull
consumer) and RabbitMQ (a queue). A real server that is not reachable skips
its tests with :data:`SKIP_REASON` (``.ci/run`` fails on that reason).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub, TestNatsBroker
from faststream.rabbit import RabbitBroker, RabbitQueue, TestRabbitBroker
from faststream.redis import RedisBroker, StreamSub, TestRedisBroker

from audit_plugin import AuditQuery, MessageAuditTrail, MessageStatus

SKIP_REASON = "FastStream broker server is not reachable"
"""Start of the skip reason of a test whose real broker server is down (``.ci/run`` greps for it)."""

Handler = Callable[..., Awaitable[Any]]

PUBLISH_TIMEOUT = 30.0
"""Seconds a JetStream publish waits for its ack (FastStream's default, 0.5 s, is missed on a loaded machine)."""


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class BrokerKind:
    """One broker: how to build it, consume from a fresh destination, publish and clean up."""

    name: str
    port: int

    def require_server(self) -> None:
        if not reachable(self.port):
            pytest.skip(f"{SKIP_REASON}: {self.name} on 127.0.0.1:{self.port}")

    def new_target(self) -> str:
        return f"audit-{self.name}-{uuid.uuid4().hex[:12]}"

    def broker(self, middlewares: list[Any] | tuple[Any, ...] = (), **options: Any) -> Any:
        options.setdefault("logger", None)
        if self.name == "redis":
            return RedisBroker("redis://127.0.0.1:6379", middlewares=middlewares, **options)
        if self.name == "nats":
            return NatsBroker("nats://127.0.0.1:4222", middlewares=middlewares, **options)
        return RabbitBroker("amqp://guest:guest@127.0.0.1:5672/", middlewares=middlewares, **options)

    def subscribe(self, broker: Any, target: str, handler: Handler, *, index: int = 0, **options: Any) -> Any:
        """Register ``handler`` as consumer number ``index`` of the competing consumers of ``target``."""
        if self.name == "redis":
            stream = StreamSub(
                target, group="workers", consumer=f"c{index}", polling_interval=50, **options.pop("stream", {})
            )
            return broker.subscriber(stream=stream, **options)(handler)
        if self.name == "nats":
            return broker.subscriber(
                target,
                stream=JStream(target, subjects=[target]),
                durable="workers",
                pull_sub=PullSub(batch_size=10, timeout=0.2),
                config=ConsumerConfig(ack_wait=options.pop("ack_wait", 30)),
                **options,
            )(handler)
        return broker.subscriber(RabbitQueue(target, auto_delete=False), **options)(handler)

    def claimer(self, broker: Any, target: str, handler: Handler) -> Any:
        """Redis only: a consumer that claims messages left pending (nacked) for 200 ms."""
        stream = StreamSub(target, group="workers", consumer="claimer", min_idle_time=200, polling_interval=50)
        return broker.subscriber(stream=stream)(handler)

    async def publish(self, broker: Any, body: Any, target: str, **kwargs: Any) -> Any:
        if self.name == "redis":
            return await broker.publish(body, stream=target, **kwargs)
        if self.name == "nats":
            return await broker.publish(body, target, stream=target, **{"timeout": PUBLISH_TIMEOUT, **kwargs})
        return await broker.publish(body, queue=target, **kwargs)

    def test_broker(self, broker: Any) -> Any:
        return {"redis": TestRedisBroker, "nats": TestNatsBroker, "rabbit": TestRabbitBroker}[self.name](broker)

    async def cleanup(self, target: str) -> None:
        """Remove the destination from the real server."""
        if self.name == "redis":
            from redis.asyncio import Redis

            client = Redis(host="127.0.0.1", port=6379)
            try:
                await client.delete(target)
            finally:
                await client.aclose()
        elif self.name == "nats":
            import nats
            from nats.js.errors import NotFoundError

            client = await nats.connect("nats://127.0.0.1:4222")
            try:
                with suppress(NotFoundError):
                    await client.jetstream().delete_stream(target)
            finally:
                await client.close()
        else:
            import aio_pika

            connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(target)


KINDS = {"redis": BrokerKind("redis", 6379), "nats": BrokerKind("nats", 4222), "rabbit": BrokerKind("rabbit", 5672)}


@asynccontextmanager
async def running(*brokers: Any) -> AsyncIterator[None]:
    """Start real brokers (connect, declare, consume) and stop them afterwards."""
    try:
        for broker in brokers:
            await broker.start()
        yield
    finally:
        for broker in brokers:
            await broker.stop()


async def wait_for_final(trail: MessageAuditTrail, expected: int, timeout: float = 30.0) -> None:
    """Wait until ``expected`` records hold a final status (the consumers' outcomes are committed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await trail.flush()
        done = 0
        for status in (MessageStatus.DELIVERED, MessageStatus.FAILED):
            done += await trail.count_messages(AuditQuery(status=status))
        if done >= expected or loop.time() > deadline:
            return
        await asyncio.sleep(0.05)
