"""Connecting to NATS and making sure the audit stream exists (shared by producers and ingesters)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import re
import ssl
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from audit_plugin.exceptions import AuditStoreError, InvalidFieldError, StoreAuthenticationError
from audit_plugin.integrity.shards import MAX_SHARDS
from audit_plugin.jetstream.address import StreamAddress, TLSFiles
from audit_plugin.masking import mask_text

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
"""Seconds to wait for the first connection before reporting the server unreachable."""

DUPLICATE_WINDOW = 120.0
"""Seconds during which the stream drops a repeated ``Nats-Msg-Id`` (for streams this package creates)."""


async def connect(address: StreamAddress, *, name: str) -> tuple[Client, JetStreamContext]:
    """A connection that reconnects for ever (to any server of the cluster) and its JetStream context.

    Authenticates and sets up TLS as ``address`` says (see
    :mod:`audit_plugin.jetstream.address`). Raises
    :class:`~audit_plugin.exceptions.StoreAuthenticationError` naming the
    server and the reason when the server refuses the credentials or TLS
    cannot be set up, :class:`~audit_plugin.exceptions.AuditStoreError` if
    it cannot be reached now; neither holds a secret.
    """

    client = nats.NATS()
    refusals: list[str] = []
    refused = asyncio.Event()

    async def disconnected() -> None:
        if not client.is_closed:
            log.warning("NATS connection to %s lost; reconnecting", address.display())

    async def reconnected() -> None:
        log.warning("NATS connection to %s restored", address.display())

    async def error(exc: Exception) -> None:
        reason = refusal_reason(exc)
        if reason is not None:
            refusals.append(reason)
            refused.set()
        log.debug("NATS client: %s: %s", type(exc).__name__, mask_text(exc))

    try:
        connecting = asyncio.ensure_future(
            client.connect(
                address.server,
                name=name,
                connect_timeout=CONNECT_TIMEOUT,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                **connect_options(address),
            )
        )
        # The client retries a first connection for ever: give up after CONNECT_TIMEOUT, or at once if refused.
        await _first_of(connecting, refused, CONNECT_TIMEOUT)
    except (nats.errors.Error, OSError, ssl.SSLError, ValueError) as exc:  # TimeoutError is an OSError
        with contextlib.suppress(Exception):
            await client.close()
        reason = refusal_reason(exc) or (refusals[-1] if refusals else None)
        if reason is not None:
            raise StoreAuthenticationError(address.display(), reason) from None
        raise AuditStoreError(
            f"cannot reach NATS at {address.display()}: {type(exc).__name__}: {mask_text(exc) or 'no answer'}"
        ) from None
    return client, client.jetstream()


async def _first_of(connecting: asyncio.Future[None], refused: asyncio.Event, timeout: float) -> None:
    """Wait for ``connecting``; raise TimeoutError after ``timeout`` s, or ConnectionError once ``refused`` is set."""
    waiting = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait({connecting, waiting}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if connecting in done:
        connecting.result()
        return
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    if refused.is_set():
        raise ConnectionRefusedError("refused")
    raise TimeoutError("no answer")


def connect_options(address: StreamAddress) -> dict[str, Any]:
    """The ``nats.connect`` keywords for ``address``'s credentials and TLS."""
    credentials, options = address.credentials, {}
    if credentials.token is not None:
        options["token"] = credentials.token
    if credentials.user is not None:
        options.update(user=credentials.user, password=credentials.password)
    if credentials.creds_file is not None or credentials.nkey_file is not None:
        if importlib.util.find_spec("nkeys") is None:
            raise InvalidFieldError(
                "database_url", 'NKey and creds authentication need the nkeys package: pip install "audit-plugin[nats]"'
            )
        if credentials.creds_file is not None:
            options["user_credentials"] = credentials.creds_file
        else:
            options["nkeys_seed"] = credentials.nkey_file
    if address.tls is not None:
        options["tls"] = tls_context(address.tls)
        if address.tls.hostname is not None:
            options["tls_hostname"] = address.tls.hostname
    return options


def tls_context(files: TLSFiles) -> ssl.SSLContext:
    """A client TLS context verifying the server (against ``ca_file`` if given), with the client certificate."""
    context = ssl.create_default_context(cafile=files.ca_file)
    if files.cert_file is not None:
        context.load_cert_chain(files.cert_file, files.key_file)
    return context


_REFUSALS = (
    ("authorization violation", "authorization violation (wrong user, password, token or key)"),
    ("authentication", "authentication failed"),
    ("user authentication expired", "credentials expired"),
    ("secure connection - tls required", "the server requires TLS (use tls:// or tls_ca=)"),
    ("tls required", "the server requires TLS (use tls:// or tls_ca=)"),
    ("tls not available", "the server does not offer TLS"),
    ("certificate", "TLS certificate check failed"),
)


def refusal_reason(exc: BaseException) -> str | None:
    """Why the server refused us (credentials, TLS), from a client or TLS error; ``None`` for other failures."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed: {exc.verify_message or 'not trusted'}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization violation (wrong user, password, token or key)"
    text = str(exc).lower()
    for needle, reason in _REFUSALS:
        if needle in text:
            return reason
    return None


async def ensure_stream(js: JetStreamContext, address: StreamAddress) -> int:
    """Create the stream if it does not exist; an existing stream keeps its configuration. Return its shard count.

    A created stream is a work queue on file storage (it holds what the
    ingesters have not acknowledged yet), replicated ``address.replicas``
    times, its shard count (``address.shards``, default 1) written in its
    description. A stream made without one (by an operator, or by an
    earlier version) has one shard. An address asking for another count
    than the stream's is refused: producers and ingesters must agree on it.
    """
    try:
        info = await js.stream_info(address.stream)
    except nats.js.errors.NotFoundError:
        info = None
    except nats.errors.Error as exc:
        raise AuditStoreError(f"JetStream at {address.display()} is not available: {_describe(exc)}") from None
    if info is None:
        info = await _create(js, address)
    shards = stream_shards(info.config.description)
    if address.shards is not None and address.shards != shards:
        raise AuditStoreError(
            f"stream {address.stream!r} is published in {shards} shard(s), not {address.shards}: "
            f"use ?shards={shards} (a stream's shard count cannot change)"
        )
    return shards


async def _create(js: JetStreamContext, address: StreamAddress) -> Any:
    config = StreamConfig(
        name=address.stream,
        description=_description(address.shards or 1),
        subjects=[address.subjects],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=address.replicas,
        duplicate_window=DUPLICATE_WINDOW,
    )
    try:
        return await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:  # created by another process meanwhile: read its settings
            raise AuditStoreError(f"cannot create stream {address.stream!r}: {_describe(exc)}") from None
    except nats.errors.Error as exc:
        raise AuditStoreError(f"cannot create stream {address.stream!r}: {_describe(exc)}") from None
    try:
        return await js.stream_info(address.stream)
    except nats.errors.Error as exc:
        raise AuditStoreError(f"JetStream at {address.display()} is not available: {_describe(exc)}") from None


_SHARDS = re.compile(r"\bshards=([0-9]{1,4})\b")


def _description(shards: int) -> str:
    return f"audit-plugin audit operations; shards={shards}"


def stream_shards(description: str | None) -> int:
    """The shard count a stream's description records (1 when it records none, or none that is valid)."""
    found = _SHARDS.search(description or "")
    count = int(found.group(1)) if found else 1
    return count if 1 <= count <= MAX_SHARDS else 1


STREAM_NAME_IN_USE = 10058
"""JetStream's error code for "stream name already in use"."""


def _describe(exc: Any) -> str:
    description = getattr(exc, "description", None)
    return f"{type(exc).__name__}: {description or str(exc) or 'no answer'}"
