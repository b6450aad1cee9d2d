"""Connecting to NATS and making sure the audit stream exists (shared by producers and ingesters)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from audit_plugin.exceptions import AuditStoreError
from audit_plugin.jetstream.address import StreamAddress

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
"""Seconds to wait for the first connection before reporting the server unreachable."""

DUPLICATE_WINDOW = 120.0
"""Seconds during which the stream drops a repeated ``Nats-Msg-Id`` (for streams this package creates)."""

TRANSIENT_NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error,)
"""Everything the client raises for an unreachable, reconnecting or slow server (retried as an outage)."""


async def connect(address: StreamAddress, *, name: str) -> tuple[Client, JetStreamContext]:
    """A connection that reconnects for ever (to any server of the cluster) and its JetStream context.

    Raises :class:`~audit_plugin.exceptions.AuditStoreError` if the server
    cannot be reached now.
    """

    client = nats.NATS()

    async def disconnected() -> None:
        if not client.is_closed:
            log.warning("NATS connection to %s lost; reconnecting", address.display())

    async def reconnected() -> None:
        log.warning("NATS connection to %s restored", address.display())

    async def error(exc: Exception) -> None:
        log.debug("NATS client: %s: %s", type(exc).__name__, exc)

    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):  # the client itself would retry a first connection for ever
            await client.connect(
                address.server,
                name=name,
                connect_timeout=CONNECT_TIMEOUT,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
            )
    except (nats.errors.Error, OSError) as exc:  # TimeoutError is an OSError
        with contextlib.suppress(Exception):
            await client.close()
        raise AuditStoreError(
            f"cannot reach NATS at {address.display()}: {type(exc).__name__}: {str(exc) or 'no answer'}"
        ) from None
    return client, client.jetstream()


async def ensure_stream(js: JetStreamContext, address: StreamAddress) -> None:
    """Create the stream if it does not exist; an existing stream keeps its configuration.

    A created stream is a work queue on file storage (it holds what the
    ingesters have not acknowledged yet), replicated ``address.replicas`` times.
    """
    try:
        await js.stream_info(address.stream)
        return
    except nats.js.errors.NotFoundError:
        pass
    except nats.errors.Error as exc:
        raise AuditStoreError(f"JetStream at {address.display()} is not available: {_describe(exc)}") from None
    config = StreamConfig(
        name=address.stream,
        subjects=[address.subjects],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=address.replicas,
        duplicate_window=DUPLICATE_WINDOW,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:  # created by another process meanwhile: fine
            raise AuditStoreError(f"cannot create stream {address.stream!r}: {_describe(exc)}") from None
    except nats.errors.Error as exc:
        raise AuditStoreError(f"cannot create stream {address.stream!r}: {_describe(exc)}") from None


STREAM_NAME_IN_USE = 10058
"""JetStream's error code for "stream name already in use"."""


def _describe(exc: Any) -> str:
    description = getattr(exc, "description", None)
    return f"{type(exc).__name__}: {description or str(exc) or 'no answer'}"
