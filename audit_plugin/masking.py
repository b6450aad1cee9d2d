"""Secrets masked out of every text the package shows: URLs with credentials, tokens, keys.

One function for URLs (:func:`mask_url`) and one for free text that may
contain URLs or known secret values (:func:`mask_text`). Every message,
log line, ``repr()``, span or metric attribute, CLI line and viewer page
that could carry a database URL, a ``nats://`` address, a token or a key
goes through one of them, so a password never leaves the process in the
clear. What is masked becomes :data:`MASK`.

What counts as a secret:

* the password of ``scheme://user:password@host`` (the user stays);
* the whole user part of ``nats://token@host`` and ``tls://token@host``
  (NATS reads a user part without ``:`` as a token);
* query parameters whose name says secret (``password``, ``token``,
  ``sslpassword``, ``secret``... see :data:`SECRET_PARAMETERS`);
* any value registered with :func:`remember_secret` (the viewer's tokens,
  credentials given apart from a URL), wherever it appears in a text.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qsl, urlencode

MASK = "***"
"""What a secret is replaced with."""

TOKEN_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
"""Schemes whose URLs take a bare user part (no ``:``) as a token (NATS)."""

SECRET_PARAMETERS = frozenset(
    {"password", "pass", "passwd", "pwd", "sslpassword", "token", "auth_token", "secret", "api_key", "apikey", "key"}
)
"""URL query parameters whose values are secrets (compared in lower case)."""

MIN_REMEMBERED = 6
"""Shortest value :func:`remember_secret` keeps (shorter ones would mask ordinary words)."""

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>\S*)")
_remembered: set[str] = set()
_remembered_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Mask ``value`` wherever :func:`mask_text` meets it from now on (for the rest of the process)."""
    if isinstance(value, str) and len(value) >= MIN_REMEMBERED:
        with _remembered_lock:
            _remembered.add(value)


def mask_url(url: str) -> str:
    """``url`` with its password (or NATS token) and secret query parameters replaced by :data:`MASK`.

    Never raises: text that is not a URL is returned with any remembered
    secret masked.
    """
    if not isinstance(url, str):
        return MASK
    return _mask_remembered(_URL.sub(_masked_match, url))


def mask_text(text: object) -> str:
    """``str(text)`` with every URL's credentials and every remembered secret masked."""
    try:
        value = text if isinstance(text, str) else str(text)
    except Exception:
        return f"<{type(text).__name__}>"
    return _mask_remembered(_URL.sub(_masked_match, value))


def _masked_match(match: re.Match[str]) -> str:
    scheme, rest = match["scheme"], match["rest"]
    at = rest.rfind("@")  # the last "@": a raw "/", "?" or "#" in a password stays inside what is masked
    userinfo = rest[:at] if at >= 0 else None
    authority, separator, tail = _split_authority(rest[at + 1 :] if userinfo is not None else rest)
    if userinfo is not None:
        host = authority
        user, colon, _password = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:{MASK}"
        elif scheme.lower() in TOKEN_SCHEMES and userinfo:
            userinfo = MASK
        authority = f"{userinfo}@{host}"
    if separator == "/":
        path, question, tail = tail.partition("?")
        if not question:
            return f"{scheme}://{authority}/{path}"
        separator = f"/{path}?"
    if separator.endswith("?"):
        query, hash_mark, fragment = tail.partition("#")
        tail = f"{_masked_pairs(query)}{hash_mark}{fragment}"
    return f"{scheme}://{authority}{separator}{tail}"


def _split_authority(rest: str) -> tuple[str, str, str]:
    """The host part, the character that ends it (``/``, ``?``, ``#`` or nothing) and what follows it."""
    for index, character in enumerate(rest):
        if character in "/?#":
            return rest[:index], character, rest[index + 1 :]
    return rest, "", ""


def _masked_pairs(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name.lower() in SECRET_PARAMETERS for name, _ in pairs):
        return query
    return urlencode([(name, MASK if name.lower() in SECRET_PARAMETERS else value) for name, value in pairs], safe="*/")


def _mask_remembered(text: str) -> str:
    if not _remembered:
        return text
    with _remembered_lock:
        secrets = sorted(_remembered, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
