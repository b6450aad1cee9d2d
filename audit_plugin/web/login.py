"""The login page: a form that takes a token once and sets a session cookie, and signing out.

The form posts the token in the request body (never in the URL) to
``POST /login``; a right token opens a session (see
:class:`~audit_plugin.web.auth.Sessions`) and redirects to the page asked
for, a wrong one shows the form again with 401. The page has no script
(the Content-Security-Policy forbids inline script anyway). A form posted
from another site is refused: its ``Origin`` must be this view's own.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from audit_plugin.web.auth import SESSION_COOKIE, SESSION_SECONDS, Authenticator
from audit_plugin.web.rendering import render_text

MAX_FORM_BYTES = 4096


def login_form(next_path: str, error: str | None) -> str:
    return render_text("login.html", next_path=safe_next(next_path), error=error)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this view only (``/...``, never ``//host`` or a full URL)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def _form_page(next_path: str, error: str | None, status_code: int) -> HTMLResponse:
    return HTMLResponse(login_form(next_path, error), status_code=status_code, headers={"cache-control": "no-store"})


def _authenticator(request: Request) -> Authenticator | None:
    return request.app.state.auth  # type: ignore[no-any-return]


async def login_page(request: Request) -> Response:
    if _authenticator(request) is None:
        return RedirectResponse("/", status_code=303)
    return _form_page(request.query_params.get("next", "/"), None, 200)


def _same_origin(request: Request) -> bool:
    """Whether the form was posted from this view: ``Sec-Fetch-Site`` if the browser sends it, else ``Origin``.

    With ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` even
    for a same-origin form, so the fetch metadata decides when present; a
    client that sends neither (a script) is not a browser another site drives.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


async def login(request: Request) -> Response:
    auth = _authenticator(request)
    if auth is None:
        return RedirectResponse("/", status_code=303)
    if not _same_origin(request):
        return PlainTextResponse("this form may be posted only from this audit view", status_code=403)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return PlainTextResponse(f"the form is over {MAX_FORM_BYTES} bytes", status_code=413)
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return _form_page("/", "The form could not be read; type the token again.", 400)
    next_path = safe_next((fields.get("next") or ["/"])[-1])
    offered = (fields.get("token") or [""])[-1].strip()
    identity = auth.by_token(offered) if offered else None
    if identity is None:
        return _form_page(next_path, "That token is not valid here.", 401)
    session = auth.sessions.open(identity)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    auth = _authenticator(request)
    if auth is not None:
        if not _same_origin(request):
            return PlainTextResponse("this form may be posted only from this audit view", status_code=403)
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            auth.sessions.close(session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
