"""What keeps the web view safe to run: who may bind where, authentication at the door, the response headers.

* Every request is authenticated (:mod:`audit_plugin.web.auth`), on
  loopback too, unless the view runs with ``no_auth``, which only loopback allows.
* Bound to a loopback address the view answers only requests whose
  ``Host`` is a loopback name (so a web page cannot reach it through DNS rebinding).
* Every response carries a Content-Security-Policy that allows scripts only
  from the view's own static files (no inline script, no ``eval``),
  ``frame-ancestors 'none'``, ``nosniff`` and ``Referrer-Policy: no-referrer``;
  over TLS also ``Strict-Transport-Security``.
"""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.web.auth import SESSION_COOKIE, Authenticator, Identity
from audit_plugin.web.login import login_form

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


def check_bind(host: str, *, no_auth: bool = False) -> None:
    """Refuse ``no_auth`` anywhere but on loopback: off loopback every request must authenticate."""
    if no_auth and not is_loopback(host):
        raise InvalidFieldError(
            "host", f"--no-auth serves without authentication and is allowed on loopback only, not {host!r}"
        )


LOGIN_PATH = "/login"
STATIC_PREFIX = "/static/"
"""The login page and the static files are answered without authentication (no data in either)."""


class GuardMiddleware:
    """Security headers on every response, the Host rule on loopback, and authentication (see :mod:`.auth`).

    The request's :class:`~audit_plugin.web.auth.Identity` goes into
    ``scope["state"]["identity"]`` (``request.state.identity``).
    """

    def __init__(
        self, app: ASGIApp, *, auth: Authenticator | None, allowed_hosts: frozenset[str] | None, anonymous: Identity
    ) -> None:
        self.app = app
        self.auth = auth
        self.allowed_hosts = allowed_hosts
        self.anonymous = anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if tls:
                    headers.setdefault("strict-transport-security", "max-age=31536000")
            await send(message)

        refusal = self.refusal(scope)
        await (refusal or self.app)(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> Response | None:
        """The response refusing this request, or ``None`` to let it through (its identity set)."""
        headers = Headers(scope=scope)
        if self.allowed_hosts is not None:
            host = headers.get("host", "").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed_hosts:
                return PlainTextResponse("unknown Host header", status_code=421)
        if "token" in QueryParams(scope.get("query_string", b"")):
            return PlainTextResponse(
                "a token is never accepted in the URL: send Authorization: Bearer ... or sign in at /login",
                status_code=400,
            )
        path = scope.get("path", "")
        if self.auth is None:
            scope.setdefault("state", {})["identity"] = self.anonymous
            return None
        try:
            identity = self.identify(scope, headers)
        except InvalidFieldError as exc:
            return PlainTextResponse(f"{exc}", status_code=400)
        if identity is not None:
            scope.setdefault("state", {})["identity"] = identity
            return None
        if path == LOGIN_PATH or path.startswith(STATIC_PREFIX):
            return None
        return unauthenticated(scope, headers)

    def identify(self, scope: Scope, headers: Headers) -> Identity | None:
        assert self.auth is not None
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, offered = authorization.partition(" ")
            if scheme.lower() != "bearer" or not offered.strip():
                raise InvalidFieldError("authorization", "expected 'Bearer <token>'")
            return self.auth.by_token(offered.strip())
        if self.auth.proxy is not None:
            client = scope.get("client")
            peer = client[0] if client else None
            user = self.auth.by_proxy(peer, headers.get(self.auth.proxy.header))
            if user is not None:
                return user
        session = cookie_value(headers.get("cookie", ""), SESSION_COOKIE)
        return self.auth.sessions.identity(session) if session else None


def unauthenticated(scope: Scope, headers: Headers) -> Response:
    """401 with no data: the login form for a browser asking for a page, one line for anything else."""
    challenge = {"www-authenticate": 'Bearer realm="audit-plugin"'}
    if scope.get("method") == "GET" and "text/html" in headers.get("accept", ""):
        query = scope.get("query_string", b"").decode("latin-1")
        form = login_form(next_path=scope.get("path", "/") + (f"?{query}" if query else ""), error=None)
        return HTMLResponse(form, status_code=401, headers={**challenge, "cache-control": "no-store"})
    return PlainTextResponse(
        "this audit view needs authentication: send Authorization: Bearer <token> or sign in at /login",
        status_code=401,
        headers=challenge,
    )


def cookie_value(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None
