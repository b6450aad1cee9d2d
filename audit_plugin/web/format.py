"""Small formatting helpers shared by the templates (registered as Jinja2 filters)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from audit_plugin.model.markers import MARKER_KEY
from audit_plugin.model.messages import short_id


def duration_text(seconds: float | None) -> str:
    """``0.0042`` → ``4.2 ms``; ``None`` → ``-``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def time_text(moment: datetime | None) -> str:
    """UTC time to the millisecond, ``2026-11-29 13:40:05.123``."""
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def clock_text(moment: datetime | None) -> str:
    """Just the time of day, ``13:40:05.123``."""
    return time_text(moment)[11:]


def pretty_json(payload: Any) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False)


def payload_summary(payload: Any, width: int = 60) -> str:
    text = json.dumps(payload, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= width else text[: width - 1] + "…"


def payload_marker(payload: Any) -> str | None:
    """``"encrypted"``, ``"erased"``, ``"unreadable"`` or ``"truncated"`` when the payload is a marker."""
    if isinstance(payload, dict):
        marker = payload.get(MARKER_KEY)
        if isinstance(marker, str):
            return marker
    return None


FILTERS = {
    "short_id": short_id,
    "duration": duration_text,
    "time": time_text,
    "clock": clock_text,
    "pretty_json": pretty_json,
    "summary": payload_summary,
    "marker": payload_marker,
}
