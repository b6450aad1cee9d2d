"""Each page read as the signed-in identity: its role applied, and what it read recorded in the chain.

:func:`audited` wraps a page: it makes the request's
:class:`~audit_plugin.model.access.Reading` (the identity as an actor of
the ``viewer`` channel, the page as the action, its query string as the
filter), the page passes it to every read of the trail
(``actor=reading_of(request)``), and once the page is rendered, before it
is sent, the reading is recorded as one access entry (when the view records
reads, the default). A read that cannot be recorded is not shown: the page
becomes the store's 503.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from audit_plugin.model.access import Actor, Reading
from audit_plugin.trail import MessageAuditTrail
from audit_plugin.web.auth import Identity

Page = Callable[[Request], Awaitable[Response]]


def identity_of(request: Request) -> Identity:
    return request.state.identity  # type: ignore[no-any-return]


def actor_of(request: Request) -> Actor:
    identity = identity_of(request)
    return Actor(identity.name, identity.role, "viewer")


def reading_of(request: Request) -> Reading:
    """The reading the current page's reads add to (see :func:`audited`)."""
    return request.state.reading  # type: ignore[no-any-return]


def audited(action: str) -> Callable[[Page], Page]:
    """Make a page read as the request's identity and record what it read (see the module)."""

    def wrap(page: Page) -> Page:
        @functools.wraps(page)
        async def handler(request: Request) -> Response:
            filters = {"page": request.url.path, **request.query_params}
            request.state.reading = Reading(actor_of(request), action, filters)
            response = await page(request)
            if request.app.state.record_reads:
                trail: MessageAuditTrail = request.app.state.trail
                await trail.record_access(request.state.reading)
            return response

        return handler

    return wrap
