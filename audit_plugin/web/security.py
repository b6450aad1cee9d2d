"""What keeps the web view safe to run: who may bind where, the token, and the response headers.

* Bound to a loopback address the view needs no token, but it answers only
  requests whose ``Host`` is a loopback name (so a web page cannot reach it
  through DNS rebinding).
* Bound to any other address it refuses to start without a token; every
  request must then carry it (``Authorization: Bearer``, or ``?token=`` once,
  which sets an HttpOnly, SameSite=Strict cookie and redirects to the same
  URL without it).
* Every response carries a Content-Security-Policy that allows scripts only
  from the view's own static files (no inline script, no ``eval``).
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.datastructures import URL, MutableHeaders, QueryParams
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_plugin.exceptions import InvalidFieldError

TOKEN_COOKIE = "audit_token"
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        # Mermaid writes <style> into each diagram's SVG; scripts stay 'self' only.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    name = host.strip().lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> str | None:
    """Validate the bind address and token before the server starts; return the token.

    Any address other than loopback needs a token (at least
    :data:`MIN_TOKEN_LENGTH` characters): the view shows payloads.
    """
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise InvalidFieldError("token", f"must be at least {MIN_TOKEN_LENGTH} characters")
    if token is None and not is_loopback(host):
        raise InvalidFieldError(
            "host", f"binding to {host!r} (not loopback) needs a token: pass --token or set AUDIT_WEB_TOKEN"
        )
    return token


class GuardMiddleware:
    """Adds the security headers to every response and enforces the Host rule and the token."""

    def __init__(self, app: ASGIApp, *, token: str | None, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        refusal = self.refusal(scope)
        await (refusal or self.app)(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> Response | None:
        """The response refusing this request, or ``None`` to let it through."""
        headers = dict(scope.get("headers") or [])
        if self.allowed_hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed_hosts:
                return PlainTextResponse("unknown Host header", status_code=421)
        if self.token is None:
            return None
        url = URL(scope=scope)
        offered = QueryParams(scope.get("query_string", b"")).get("token")
        if offered is not None and _same(offered, self.token):
            response = RedirectResponse(str(url.remove_query_params("token")), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/")
            return response
        bearer = headers.get(b"authorization", b"").decode("latin-1")
        if bearer.lower().startswith("bearer ") and _same(bearer[7:].strip(), self.token):
            return None
        cookie = _cookie(headers.get(b"cookie", b"").decode("latin-1"), TOKEN_COOKIE)
        if cookie is not None and _same(cookie, self.token):
            return None
        return PlainTextResponse(
            "this audit view needs its token: open it once with ?token=... or send Authorization: Bearer ...",
            status_code=401,
            headers={"www-authenticate": "Bearer"},
        )


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode("utf-8", "replace"), expected.encode("utf-8"))


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
