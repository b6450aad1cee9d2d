"""Where a JetStream trail publishes, and how it proves who it is: a ``nats://`` or ``tls://`` URL.

``nats://[user:password@|token@]host[:port]/<stream>[?option=value&...]``:

* ``user:password@`` or ``token@`` (a user part without ``:``) authenticate
  to a server with ``authorization`` set; ``tls://`` asks for TLS;
* ``replicas=N`` (1-5) is used only when the stream does not exist yet;
* ``shards=N`` is the number of shards a created stream is published in
  (an existing stream with another count is refused; absent: the stream's
  own, one for a new stream); ``batch_bytes=N`` the most bytes of
  operations a producer packs into one message;
* ``creds=FILE`` (a ``.creds`` file: JWT and NKey seed) or ``nkey=FILE`` (an
  NKey seed file) authenticate with a key pair (needs the ``nkeys`` package,
  in the ``nats`` extra);
* ``tls_ca=FILE`` trusts that CA for the server's certificate (and turns TLS
  on); ``tls_cert=FILE`` and ``tls_key=FILE`` present a client certificate;
  ``tls_hostname=NAME`` checks the certificate against that name.

Files are checked when the URL is parsed (a missing or unreadable one is a
typed error naming the option). Credentials never appear in
:meth:`StreamAddress.display`, ``repr()`` or any message.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.integrity.shards import MAX_SHARDS
from audit_plugin.masking import mask_url, remember_secret

SCHEME = "nats"
TLS_SCHEME = "tls"
SCHEMES = (SCHEME, TLS_SCHEME)
DEFAULT_PORT = 4222
DEFAULT_BATCH_BYTES = 512 * 1024
"""Most bytes a producer packs into one JetStream message (the server's ``max_payload`` bounds it too)."""
MIN_BATCH_BYTES = 4096
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FILE_OPTIONS = ("creds", "nkey", "tls_ca", "tls_cert", "tls_key")
"""Options naming a file (checked to exist and be readable)."""
_OPTIONS = ("replicas", "shards", "batch_bytes", *FILE_OPTIONS, "tls_hostname")


@dataclass(frozen=True, slots=True)
class Credentials:
    """How the client authenticates (at most one of user/password, token, creds file or NKey seed file)."""

    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    creds_file: str | None = None
    nkey_file: str | None = None


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """TLS for the connection: the CA to trust, the client certificate and key, the name to check."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class StreamAddress:
    """A parsed ``nats://`` (or ``tls://``) URL: the server, the stream, and how to connect securely.

    ``replicas`` is used only when the stream does not exist yet and is
    created (an existing stream keeps its own settings). ``shards``: how
    many shards a created stream is published in (``None``: the stream's
    own, one for a new stream); an existing stream with another count is
    refused. ``batch_bytes``: most bytes of operations a producer packs
    into one message.
    """

    server: str
    """``nats://host:port`` (or ``tls://``) as the client connects to it, without credentials."""
    stream: str
    replicas: int = 1
    credentials: Credentials = dataclasses.field(default_factory=Credentials)
    tls: TLSFiles | None = None
    """TLS settings, ``None`` when neither ``tls://`` nor a TLS option is given."""
    shards: int | None = None
    batch_bytes: int = DEFAULT_BATCH_BYTES

    @property
    def record_subject(self) -> str:
        return f"{self.stream}.record"

    @property
    def status_subject(self) -> str:
        return f"{self.stream}.status"

    def ops_subject(self, shard: int) -> str:
        """Where format-2 batches of ``shard`` are published."""
        return f"{self.stream}.ops.{shard}"

    @property
    def subjects(self) -> str:
        """The wildcard covering every subject of the stream."""
        return f"{self.stream}.>"

    def display(self) -> str:
        """The address without any credential, for messages."""
        parts = urlsplit(self.server)
        return f"{parts.scheme}://{parts.hostname or '127.0.0.1'}:{parts.port or DEFAULT_PORT}/{self.stream}"


def parse_address(url: object, field: str = "database_url") -> StreamAddress:
    """Parse ``url``; raise a typed error naming ``field`` if it is not a usable ``nats://`` URL.

    No error message holds the URL's password or token.
    """
    if not isinstance(url, str):
        raise FieldTypeError(field, "a nats:// URL string", url)
    shown = mask_url(url)
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InvalidFieldError(field, f"{shown!r} is not a nats:// or tls:// URL (expected nats://host:4222/<stream>)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise InvalidFieldError(field, f"{shown!r} has an invalid port") from None
    stream = parts.path.strip("/")
    if not _STREAM_NAME.match(stream):
        raise InvalidFieldError(
            field, f"stream name {stream!r} must be 1-64 letters, digits, '_' or '-' (nats://host:4222/<stream>)"
        )
    options = {name: values[-1] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise InvalidFieldError(field, f"unknown option {unknown[0]!r} (known: {', '.join(_OPTIONS)})")
    replicas = _number(options, "replicas", 1, 5, field) or 1
    shards = _number(options, "shards", 1, MAX_SHARDS, field)
    batch_bytes = _number(options, "batch_bytes", MIN_BATCH_BYTES, 64 * 1024 * 1024, field) or DEFAULT_BATCH_BYTES
    for name in FILE_OPTIONS:
        if name in options:
            _check_file(field, name, options[name])
    credentials = _credentials(field, parts.username, parts.password, options)
    tls = _tls(field, parts.scheme, options)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    server = urlunsplit((parts.scheme, f"{host}:{port}", "", "", ""))
    return StreamAddress(server, stream, replicas, credentials, tls, shards, batch_bytes)


def _number(options: dict[str, str], name: str, low: int, high: int, field: str) -> int | None:
    """The URL option ``name`` as a whole number from ``low`` to ``high`` (``None`` when absent)."""
    if name not in options:
        return None
    text = options[name]
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise InvalidFieldError(field, f"{name} must be a number from {low:,} to {high:,}, got {text!r:.40}")
    return int(text)


def _check_file(field: str, option: str, path: str) -> None:
    if not path:
        raise InvalidFieldError(field, f"option {option!r} needs a file path")
    if not os.path.isfile(path):
        raise InvalidFieldError(field, f"option {option!r}: no file at {path!r}")
    if not os.access(path, os.R_OK):
        raise InvalidFieldError(field, f"option {option!r}: {path!r} is not readable")


def _credentials(field: str, user: str | None, password: str | None, options: dict[str, str]) -> Credentials:
    user = unquote(user) if user else None
    password = unquote(password) if password is not None else None
    creds, nkey = options.get("creds"), options.get("nkey")
    ways = [name for name, given in (("user part", user), ("creds", creds), ("nkey", nkey)) if given]
    if len(ways) > 1:
        raise InvalidFieldError(field, f"give one way to authenticate, not {' and '.join(ways)}")
    if user is not None and password is None:  # nats://TOKEN@host: a token
        remember_secret(user)
        return Credentials(token=user)
    if password is not None:
        if not user:
            raise InvalidFieldError(field, "a password needs a user name (nats://user:password@host)")
        remember_secret(password)
        return Credentials(user=user, password=password)
    return Credentials(creds_file=creds, nkey_file=nkey)


def _tls(field: str, scheme: str, options: dict[str, str]) -> TLSFiles | None:
    cert, key = options.get("tls_cert"), options.get("tls_key")
    if (cert is None) != (key is None):
        raise InvalidFieldError(field, "tls_cert and tls_key go together (the client certificate and its key)")
    hostname = options.get("tls_hostname")
    if hostname is not None and not re.fullmatch(r"[A-Za-z0-9.\-]{1,253}", hostname):
        raise InvalidFieldError(field, f"tls_hostname {hostname!r} is not a host name")
    if scheme != TLS_SCHEME and not any(name in options for name in ("tls_ca", "tls_cert", "tls_hostname")):
        return None
    return TLSFiles(options.get("tls_ca"), cert, key, hostname)
