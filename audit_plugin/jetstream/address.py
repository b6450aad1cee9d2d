"""Where a JetStream trail publishes: ``nats://[user:password@]host[:port]/<stream>[?replicas=N]``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from audit_plugin.exceptions import FieldTypeError, InvalidFieldError

SCHEME = "nats"
DEFAULT_PORT = 4222
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_OPTIONS = ("replicas",)


@dataclass(frozen=True, slots=True)
class StreamAddress:
    """A parsed ``nats://`` URL: the server to connect to and the stream to use.

    ``replicas`` is used only when the stream does not exist yet and is
    created (an existing stream keeps its own settings).
    """

    server: str
    """``nats://[user:password@]host:port`` as the client connects to it."""
    stream: str
    replicas: int = 1

    @property
    def record_subject(self) -> str:
        return f"{self.stream}.record"

    @property
    def status_subject(self) -> str:
        return f"{self.stream}.status"

    @property
    def subjects(self) -> str:
        """The wildcard covering every subject of the stream."""
        return f"{self.stream}.>"

    def display(self) -> str:
        """The address without any password, for messages."""
        host = urlsplit(self.server).hostname or "127.0.0.1"
        return f"nats://{host}:{urlsplit(self.server).port or DEFAULT_PORT}/{self.stream}"


def parse_address(url: object, field: str = "database_url") -> StreamAddress:
    """Parse ``url``; raise a typed error naming ``field`` if it is not a usable ``nats://`` URL."""
    if not isinstance(url, str):
        raise FieldTypeError(field, "a nats:// URL string", url)
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise InvalidFieldError(field, f"{url!r} is not a nats:// URL (expected nats://host:4222/<stream>)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise InvalidFieldError(field, f"{url!r} has an invalid port") from None
    stream = parts.path.strip("/")
    if not _STREAM_NAME.match(stream):
        raise InvalidFieldError(
            field, f"stream name {stream!r} must be 1-64 letters, digits, '_' or '-' (nats://host:4222/<stream>)"
        )
    options = parse_qs(parts.query, strict_parsing=False)
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise InvalidFieldError(field, f"unknown option {unknown[0]!r} (known: {', '.join(_OPTIONS)})")
    replicas = 1
    if "replicas" in options:
        text = options["replicas"][-1]
        if not text.isdigit() or not 1 <= int(text) <= 5:
            raise InvalidFieldError(field, f"replicas must be a number from 1 to 5, got {text!r}")
        replicas = int(text)
    netloc = parts.netloc.rsplit("@", 1)
    host = parts.hostname or "127.0.0.1"
    credentials = netloc[0] + "@" if len(netloc) == 2 else ""
    server = urlunsplit((SCHEME, f"{credentials}{host}:{port}", "", "", ""))
    return StreamAddress(server, stream, replicas)
