"""An audit-plugin extension: e-mail addresses in payloads are recorded as ``***@domain``.

Installed (``pip install examples/my_redactor``), it is registered through the
``audit_plugin`` entry-point group and every ``MessageAuditTrail`` applies it
when it records a message; agents still receive the message unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from audit_plugin import hookimpl

EMAIL = re.compile(r"[^@\s]+@([^@\s]+\.[^@\s]+)")


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return EMAIL.sub(r"***@\1", value)
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


@hookimpl
def audit_redact(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Mask e-mail addresses anywhere in the payload; ``None`` (nothing to change) when there are none."""
    masked = _mask(payload)
    return masked if masked != payload else None
