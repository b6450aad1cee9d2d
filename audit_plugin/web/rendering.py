"""The Jinja2 environment: autoescaping on for every template, the shared filters, one ``render``."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from audit_plugin.web import format as fmt

TEMPLATES = files("audit_plugin.web") / "templates"
STATIC = files("audit_plugin.web") / "static"


@cache
def environment() -> jinja2.Environment:
    """Autoescape everything (``.html`` or not): every value from the store is text, never markup."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("audit_plugin.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt.FILTERS)
    return env


def render_text(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    state = request.app.state
    identity = getattr(request.state, "identity", None)
    html = render_text(
        template, request=request, store=state.store_name, path=request.url.path, identity=identity, **context
    )
    return HTMLResponse(html, status_code=status_code, headers={"cache-control": "no-store"})
