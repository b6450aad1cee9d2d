"""Audit every message a FastStream broker publishes and consumes (``pip install "audit-plugin[faststream]"``).

::

    from audit_plugin.integrations.faststream import AuditMiddleware

    broker = RedisBroker(url, middlewares=[AuditMiddleware(trail, agent="billing")])

See :mod:`audit_plugin.integrations.faststream.middleware` and ``docs/integrations.md``.
"""

from __future__ import annotations

try:
    import faststream  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'audit_plugin.integrations.faststream needs FastStream: pip install "audit-plugin[faststream]"'
    ) from exc

from audit_plugin.integrations.faststream.fields import UNKNOWN_SENDER
from audit_plugin.integrations.faststream.middleware import AuditMiddleware

__all__ = ["UNKNOWN_SENDER", "AuditMiddleware"]
