"""Who is asking: the viewer's tokens, its login sessions, and a reverse proxy's authenticated user.

Every request but the login page and the static files must be
authenticated, on loopback too, unless the view runs with ``no_auth``
(loopback only). A request proves who it is in one of three ways:

* ``Authorization: Bearer <token>``, for scripts;
* a session cookie, set by the login page (``/login``) after the token was
  typed into its form: a random session id, kept server-side (as its
  SHA-256) with the token's name and role, valid :data:`SESSION_SECONDS`;
  ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, and ``Secure`` when served
  over TLS;
* the user header a reverse proxy sets after it authenticated the user
  (oauth2-proxy's ``X-Forwarded-User``, ...), believed only from the
  proxy's own addresses and only when configured (:class:`ProxyUsers`).

A token is never accepted in the URL (a ``token`` query parameter is refused
with 400: URLs end up in history, proxy logs and Referer headers). Tokens
are compared in constant time (:func:`hmac.compare_digest`), each against
every configured one. Unauthenticated requests get 401 and no data.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.masking import remember_secret
from audit_plugin.model.access import Role, check_role

MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 512
SESSION_COOKIE = "audit_session"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
_TOKEN_TEXT = re.compile(r"^[\x21-\x7e]+$")
MAX_PROXY_USER_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is: a name (a token's, or the proxy's user), a role, and how it proved it."""

    name: str
    role: Role
    via: str
    """``"token"``, ``"session"``, ``"proxy"`` or ``"none"`` (``no_auth``)."""


@dataclass(frozen=True, slots=True)
class ViewerToken:
    """A secret that lets its holder in as ``name`` with ``role``."""

    name: str
    role: Role
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOKEN_NAME.match(self.name):
            raise InvalidFieldError("token name", "must be 1-64 letters, digits or ._@+- characters")
        object.__setattr__(self, "role", check_role(self.role, "token role"))
        check_token(self.secret)
        remember_secret(self.secret)


def check_token(secret: object, field_name: str = "token") -> str:
    """A token: :data:`MIN_TOKEN_LENGTH` to :data:`MAX_TOKEN_LENGTH` printable ASCII characters, no spaces."""
    if not isinstance(secret, str):
        raise InvalidFieldError(field_name, "must be text")
    if not MIN_TOKEN_LENGTH <= len(secret) <= MAX_TOKEN_LENGTH:
        raise InvalidFieldError(
            field_name, f"must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters, got {len(secret)}"
        )
    if not _TOKEN_TEXT.match(secret):
        raise InvalidFieldError(field_name, "must be printable ASCII without spaces")
    return secret


def generate_token() -> str:
    """A new random token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def read_token_file(path: Path) -> list[ViewerToken]:
    """The tokens of a token file: one ``NAME ROLE TOKEN`` per line; ``#`` comments and blank lines are skipped.

    A file holding a single bare token (one word on one line) is one auditor
    token named ``token``. Names and tokens must be unique. A bad line is a
    typed error naming the file and the line number, never the token.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFieldError("token file", f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1)]
    lines = [(number, words) for number, words in lines if words and not words[0].startswith("#")]
    if len(lines) == 1 and len(lines[0][1]) == 1:
        return [_token_at(path, lines[0][0], "token", Role.AUDITOR, lines[0][1][0])]
    tokens = []
    for number, words in lines:
        if len(words) != 3:
            raise InvalidFieldError("token file", f"{path} line {number}: expected NAME ROLE TOKEN")
        tokens.append(_token_at(path, number, *words))
    if not tokens:
        raise InvalidFieldError("token file", f"{path} holds no token")
    return unique_tokens(tokens)


def _token_at(path: Path, number: int, name: str, role: object, secret: str) -> ViewerToken:
    try:
        return ViewerToken(name, role, secret)  # type: ignore[arg-type]
    except InvalidFieldError as exc:
        raise InvalidFieldError("token file", f"{path} line {number}: {exc.field} {exc.reason}") from None


def unique_tokens(tokens: Sequence[ViewerToken]) -> list[ViewerToken]:
    """``tokens``, checked to have distinct names and distinct secrets."""
    names = [token.name for token in tokens]
    if len(set(names)) != len(names):
        raise InvalidFieldError("tokens", "two tokens have the same name")
    if len({token.secret for token in tokens}) != len(tokens):
        raise InvalidFieldError("tokens", "two tokens have the same secret")
    return list(tokens)


@dataclass(frozen=True, slots=True)
class ProxyUsers:
    """Believe a reverse proxy's authenticated-user header (off unless configured).

    :param header: the header the proxy sets (``X-Forwarded-User`` for
        oauth2-proxy behind nginx, ``X-Auth-Request-User``...), matched in any case.
    :param trusted: the proxy's addresses (IPs or networks); the header from
        any other peer is ignored. Loopback by default.
    :param auditors: users given the auditor role; every other user the proxy
        lets through is a reader.
    """

    header: str
    trusted: tuple[str, ...] = ("127.0.0.1", "::1")
    auditors: frozenset[str] = frozenset()
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.header, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,64}", self.header):
            raise InvalidFieldError("proxy user header", f"{self.header!r} is not a header name")
        try:
            networks = tuple(ipaddress.ip_network(address, strict=False) for address in self.trusted)
        except ValueError as exc:
            raise InvalidFieldError("trusted proxy", str(exc)) from None
        if not networks:
            raise InvalidFieldError("trusted proxy", "name at least one address the proxy connects from")
        object.__setattr__(self, "_networks", networks)
        object.__setattr__(self, "auditors", frozenset(self.auditors))

    def trusts(self, peer: str | None) -> bool:
        if peer is None:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


def check_proxy_user(value: str) -> str:
    """A user name from the proxy's header: printable, no surrounding spaces, at most 256 characters."""
    if not value or len(value) > MAX_PROXY_USER_LENGTH or not value.isprintable() or value != value.strip():
        raise InvalidFieldError("proxy user header", "is not a printable user name of at most 256 characters")
    return value


class Sessions:
    """Login sessions kept in this process: the SHA-256 of a random id → the identity and its expiry."""

    def __init__(self, seconds: float = SESSION_SECONDS) -> None:
        self.seconds = seconds
        self._by_digest: dict[str, tuple[Identity, float]] = {}

    def open(self, identity: Identity) -> str:
        """A new session for ``identity``; returns the id for the cookie (kept only as its digest)."""
        self._forget_expired()
        if len(self._by_digest) >= MAX_SESSIONS:  # the oldest go first
            for digest in list(self._by_digest)[: len(self._by_digest) - MAX_SESSIONS + 1]:
                del self._by_digest[digest]
        session_id = secrets.token_urlsafe(32)
        session = Identity(identity.name, identity.role, "session")
        self._by_digest[_digest(session_id)] = (session, time.monotonic() + self.seconds)
        return session_id

    def identity(self, session_id: str) -> Identity | None:
        found = self._by_digest.get(_digest(session_id))
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def close(self, session_id: str) -> None:
        self._by_digest.pop(_digest(session_id), None)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for digest in [d for d, (_, expires) in self._by_digest.items() if expires < now]:
            del self._by_digest[digest]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


class Authenticator:
    """Tells who a request is, from its bearer token, session cookie or proxy header (see the module)."""

    def __init__(self, tokens: Iterable[ViewerToken] = (), proxy: ProxyUsers | None = None) -> None:
        self.tokens = unique_tokens(list(tokens))
        self.proxy = proxy
        self.sessions = Sessions()

    @property
    def configured(self) -> bool:
        """At least one way in: a token or a proxy."""
        return bool(self.tokens) or self.proxy is not None

    def by_token(self, offered: str) -> Identity | None:
        """The identity of the token ``offered``, compared with every token in constant time."""
        found = None
        encoded = offered.encode("utf-8", "replace")
        for token in self.tokens:
            if hmac.compare_digest(encoded, token.secret.encode()):
                found = Identity(token.name, token.role, "token")
        return found

    def by_proxy(self, peer: str | None, value: str | None) -> Identity | None:
        """The proxy's user, if the request comes from the proxy and carries its header."""
        if self.proxy is None or value is None or not self.proxy.trusts(peer):
            return None
        user = check_proxy_user(value)
        role = Role.AUDITOR if user in self.proxy.auditors else Role.READER
        return Identity(user, role, "proxy")
