"""The Starlette application: routes, the trail it reads, error pages.

``create_app(database_url)`` opens a :class:`~audit_plugin.trail.MessageAuditTrail`
when the server starts and closes it when it stops. Errors become pages: a
bad parameter is a 400 naming it, an unknown id a 404, a store failure a
503 that shows no database text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from audit_plugin.exceptions import AccessDeniedError, AuditError, FieldTypeError, InvalidFieldError
from audit_plugin.model.access import Role
from audit_plugin.trail import MessageAuditTrail
from audit_plugin.web import live, login, views
from audit_plugin.web.auth import Authenticator, Identity, ProxyUsers, ViewerToken
from audit_plugin.web.rendering import STATIC, render
from audit_plugin.web.security import LOOPBACK_NAMES, GuardMiddleware, check_bind, is_loopback

log = logging.getLogger(__name__)


def create_app(
    database_url: str | MessageAuditTrail,
    *,
    host: str = "127.0.0.1",
    token: str | None = None,
    tokens: Sequence[ViewerToken] = (),
    proxy: ProxyUsers | None = None,
    no_auth: bool = False,
    record_reads: bool = True,
    live_interval: float = 1.0,
    **trail_options: Any,
) -> Starlette:
    """The web view of the trail at ``database_url``, to serve on ``host``.

    Every request must authenticate (see :mod:`audit_plugin.web.auth`): with
    ``token`` (one auditor token named ``token``), ``tokens`` (named tokens
    with their roles) or ``proxy`` (a reverse proxy's user header); or, on
    loopback only, ``no_auth=True`` (every visitor is the auditor
    ``anonymous``). Giving none of them is an error. ``record_reads``: record
    each page's reads in the hash chain as access entries (the default).

    ``trail_options`` go to :class:`MessageAuditTrail` (``trace_url_template``,
    ``key_provider``, ``chain_id``...). Given a trail instead of a URL (an
    application serving the view of the trail it writes to), the view uses
    it as it is, initialised by the application and left open for it to
    close; its commits then reach the live page at once.
    """
    check_bind(host, no_auth=no_auth)
    all_tokens = [*tokens, *([ViewerToken("token", Role.AUDITOR, token)] if token is not None else [])]
    authenticator = Authenticator(all_tokens, proxy)
    if no_auth and authenticator.configured:
        raise InvalidFieldError("no_auth", "cannot be combined with tokens or a proxy")
    if not no_auth and not authenticator.configured:
        raise InvalidFieldError(
            "auth", "the view needs a way to authenticate: token=, tokens= or proxy= (or no_auth=True on loopback)"
        )
    if not isinstance(record_reads, bool):
        raise FieldTypeError("record_reads", "bool", record_reads)
    # On loopback, answer only loopback Host names; a DNS-rebinding page cannot read the trail.
    allowed = frozenset({*LOOPBACK_NAMES, host.lower()}) if is_loopback(host) else None
    given = database_url if isinstance(database_url, MessageAuditTrail) else None
    if given is not None and trail_options:
        raise TypeError(f"trail options ({', '.join(sorted(trail_options))}) go with a URL, not a trail")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        trail = given or MessageAuditTrail(database_url, **trail_options)  # type: ignore[arg-type]
        if given is None:
            await trail.initialize()
        commits = live.CommitSignal()
        trail.plugin_manager.register(commits)
        app.state.trail, app.state.commits, app.state.store_name = trail, commits, trail.backend.name
        try:
            yield
        finally:
            trail.plugin_manager.unregister(commits)
            if given is None:
                await trail.close()

    routes = [
        Route("/", views.home, name="home"),
        Route("/search", views.search, name="search"),
        Route("/conversation", views.conversation, name="conversation"),
        Route("/message", views.message, name="message"),
        Route("/agent", views.agent, name="agent"),
        Route("/live", views.live, name="live"),
        Route("/live/events", live.events, name="live_events"),
        Route("/integrity", views.integrity, name="integrity"),
        Route("/proof", views.proof, name="proof"),
        Route("/login", login.login_page, methods=["GET"], name="login_page"),
        Route("/login", login.login, methods=["POST"], name="login"),
        Route("/logout", login.logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(
                GuardMiddleware,
                auth=None if no_auth else authenticator,
                allowed_hosts=allowed,
                anonymous=Identity("anonymous", Role.AUDITOR, "none"),
            )
        ],
        exception_handlers={
            AccessDeniedError: access_denied,
            AuditError: audit_error,
            views.NotFound: not_found,
            SQLAlchemyError: store_error,
            OSError: store_error,
            404: missing_page,
        },
    )
    app.state.live_interval = live_interval
    app.state.auth = None if no_auth else authenticator
    app.state.record_reads = record_reads
    app.state.store_name = "store"
    return app


def field_name(exc: BaseException) -> str:
    field = str(getattr(exc, "field", "") or "")
    return field.removeprefix("AuditQuery.")


async def audit_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ValueError | TypeError):
        return render(
            request, "error.html", status_code=400, title="Bad request", field=field_name(exc), detail=str(exc)
        )
    return await store_error(request, exc)


async def store_error(request: Request, exc: Exception) -> Response:
    log.warning("audit web view: reading the store failed: %s", type(exc).__name__, exc_info=exc)
    return render(
        request,
        "error.html",
        status_code=503,
        title="The audit store could not be read",
        field=None,
        detail="The database did not answer as expected; the server log has the details. Try again shortly.",
    )


async def access_denied(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", status_code=403, title="Not allowed", field=None, detail=str(exc))


async def not_found(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", status_code=404, title="Not found", field=None, detail=str(exc))


async def missing_page(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", status_code=404, title="Not found", field=None, detail="No such page.")
