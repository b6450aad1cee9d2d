"""The Starlette application: routes, the trail it reads, error pages.

``create_app(database_url)`` opens a :class:`~audit_plugin.trail.MessageAuditTrail`
when the server starts and closes it when it stops. Errors become pages: a
bad parameter is a 400 naming it, an unknown id a 404, a store failure a
503 that shows no database text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from audit_plugin.exceptions import AuditError
from audit_plugin.trail import MessageAuditTrail
from audit_plugin.web import live, views
from audit_plugin.web.rendering import STATIC, render
from audit_plugin.web.security import LOOPBACK_NAMES, GuardMiddleware, check_bind, is_loopback

log = logging.getLogger(__name__)


def create_app(
    database_url: str,
    *,
    host: str = "127.0.0.1",
    token: str | None = None,
    live_interval: float = 1.0,
    **trail_options: Any,
) -> Starlette:
    """The web view of the trail at ``database_url``, to serve on ``host`` (see :func:`check_bind`).

    ``trail_options`` go to :class:`MessageAuditTrail` (``trace_url_template``,
    ``key_provider``, ``chain_id``...).
    """
    check_bind(host, token)
    # On loopback, answer only loopback Host names; a DNS-rebinding page cannot read the trail.
    allowed = frozenset({*LOOPBACK_NAMES, host.lower()}) if is_loopback(host) else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        trail = MessageAuditTrail(database_url, **trail_options)
        await trail.initialize()
        app.state.trail = trail
        app.state.store_name = trail.backend.name
        try:
            yield
        finally:
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
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(GuardMiddleware, token=token, allowed_hosts=allowed)],
        exception_handlers={
            AuditError: audit_error,
            views.NotFound: not_found,
            SQLAlchemyError: store_error,
            OSError: store_error,
            404: missing_page,
        },
    )
    app.state.live_interval = live_interval
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


async def not_found(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", status_code=404, title="Not found", field=None, detail=str(exc))


async def missing_page(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", status_code=404, title="Not found", field=None, detail="No such page.")
