"""Entry point: claims ``nats://`` and ``tls://`` URLs for the JetStream producer backend (when nats-py is installed).

Loaded with every plugin manager, so it must stay cheap and must not import
``nats``: the backend module is imported only when a ``nats://`` URL is used.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from audit_plugin.hookspecs import hookimpl
from audit_plugin.jetstream.address import SCHEMES


@hookimpl
def audit_create_backend(url: str) -> Any:
    if not url.startswith(tuple(f"{scheme}://" for scheme in SCHEMES)) or importlib.util.find_spec("nats") is None:
        return None  # without nats-py the registry names the extra to install
    from audit_plugin.jetstream.producer import JetStreamBackend

    return JetStreamBackend(url)
