"""What the integrations share for payloads and fields: a body as bytes, its fallbacks, storable text.

Auditing never refuses what the broker or protocol accepts. A body is kept
readable where it can be; where the store cannot keep it as captured (a NUL,
nesting too deep, too large), it is kept as its exact bytes in base64 with
the content type, and if even that cannot be kept, as a marker
``{"$audit": "not_captured", "reason": ...}``. Text fields (agents, ids) are
cleaned up to what the store keeps instead of being refused. Bodies kept as
base64 or a marker are counted (:class:`DegradedBodies`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.metrics import MeterProvider

from audit_plugin.exceptions import AuditError
from audit_plugin.model.markers import MARKER_KEY
from audit_plugin.model.validation import MAX_TEXT_LENGTH
from audit_plugin.telemetry.metrics import CaptureMetrics

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain"

NOT_CAPTURED = "not_captured"
"""``$audit`` value of a payload that stands for a body that could not be captured."""


@dataclass(frozen=True, slots=True)
class Body:
    """One message body as bytes on the wire, with its content type (``None`` when the sender set none).

    Its payload is read as FastStream's ``decode_message`` reads bytes:

    ======================================  =========================================
    the bytes                               the payload
    ======================================  =========================================
    empty (``None`` was published)          ``{}``
    a JSON object                           that object
    other JSON (content type JSON or none)  ``{"body": value}``
    UTF-8 text                              ``{"body": text}``
    anything else                           ``{"body_base64": ..., "content_type":
                                            ...}`` (content type when known)
    ======================================  =========================================
    """

    data: bytes
    content_type: str | None = None

    def payload(self) -> dict[str, Any]:
        """The payload read from the bytes (see the module table); never raises."""
        data, kind = self.data, (self.content_type or "").split(";", 1)[0].strip().lower()
        if not data:
            return {}
        if not kind or kind == JSON_TYPE or kind.endswith("+json"):
            try:
                value = orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
            else:
                return value if isinstance(value, dict) else {"body": value}
        if not kind or kind.startswith("text/") or kind == JSON_TYPE:
            try:
                return {"body": data.decode("utf-8")}
            except UnicodeDecodeError:
                pass
        return self.base64()

    def base64(self) -> dict[str, Any]:
        """The exact bytes, base64-encoded, with the content type: a payload every store keeps."""
        payload: dict[str, Any] = {"body_base64": base64.b64encode(self.data).decode("ascii")}
        content_type = storable_text(self.content_type, None)
        if content_type:
            payload["content_type"] = content_type
        return payload

    def not_captured(self, reason: str) -> dict[str, Any]:
        """A marker for these bytes when even :meth:`base64` cannot be stored (too large for the trail)."""
        return not_captured(reason, size=len(self.data), sha256=hashlib.sha256(self.data).hexdigest())


def not_captured(reason: str, **details: Any) -> dict[str, Any]:
    """The payload standing for a body that could not be captured, saying why."""
    return {MARKER_KEY: NOT_CAPTURED, "reason": reason, **details}


def is_payload_error(exc: AuditError) -> bool:
    """A typed error about the payload (not JSON, a NUL, too deep, too large), not about the trail or store."""
    return str(getattr(exc, "field", "")).startswith("payload")


def storable_text(value: Any, default: str | None) -> str | None:
    """``value`` as text the store keeps, else ``default`` (``None`` or empty).

    Decoded from bytes, a NUL replaced, invalid UTF-8 replaced, and cut to
    1,024 characters (ending in ``…`` and 16 hex digits of its SHA-256), the
    same way wherever the same value is recorded.
    """
    if value is None:
        return default
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = str(value)
    if not value:
        return default
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    if len(value) > MAX_TEXT_LENGTH:  # cut, with a digest of the whole so two long values stay apart
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
        value = f"{value[: MAX_TEXT_LENGTH - len(digest) - 1]}\u2026{digest}"
    return value


class DegradedBodies:
    """Counts bodies recorded as base64 or as a not-captured marker (also ``audit_plugin.capture.degraded``)."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        self.metrics = CaptureMetrics.for_provider(meter_provider)
        self.count = 0

    def note(self, payload: dict[str, Any], system: str) -> None:
        """Count ``payload`` if it is base64 or a marker; else nothing."""
        if "body_base64" in payload:
            kind = "base64"
        elif payload.get(MARKER_KEY) == NOT_CAPTURED:
            kind = NOT_CAPTURED
        else:
            return
        self.count += 1
        self.metrics.record(system, kind)
