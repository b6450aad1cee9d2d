"""The read-only web view behind ``audit-plugin serve`` (extra ``web``: Starlette, Jinja2, uvicorn).

Pages: home, search, conversation (sequence diagram, reply tree, table),
message (payload, lifecycle, trace link, place in the hash chain), agent,
live (server-sent events) and integrity (``verify()``). Nothing here writes
to the store. Importing :mod:`audit_plugin` never imports this package.
"""

from __future__ import annotations

from audit_plugin.web.app import create_app
from audit_plugin.web.auth import ProxyUsers, ViewerToken, generate_token, read_token_file
from audit_plugin.web.security import check_bind

__all__ = ["ProxyUsers", "ViewerToken", "check_bind", "create_app", "generate_token", "read_token_file"]
