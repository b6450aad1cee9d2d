"""Input checks shared by messages, queries and records.

Everything that reaches a store passes through here first, so that a bad value
becomes a typed error naming its field instead of a driver error (or, worse, a
value one backend stores and the other refuses). The rules are the common
ground of SQLite and PostgreSQL: text must be valid UTF-8 without NUL
characters, JSON must be strict (no NaN or Infinity), datetimes are UTC.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from audit_plugin.exceptions import FieldTypeError, InvalidFieldError, PayloadNotSerializableError, PayloadTooDeepError

E = TypeVar("E", bound=Enum)

MAX_TEXT_LENGTH = 1024
"""Longest agent id, correlation id or message id accepted (characters)."""

DEFAULT_MAX_DEPTH = 64
"""How deeply dicts and lists may nest in a payload by default."""

MAX_DEPTH_LIMIT = 500
"""The largest ``max_depth`` accepted: deeper structures would come near Python's recursion limit in ``json``."""

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


def check_text(
    field: str, value: object, *, optional: bool = False, max_length: int | None = MAX_TEXT_LENGTH
) -> str | None:
    """Return ``value`` if it is storable text, else raise naming ``field``."""
    if value is None:
        if optional:
            return None
        raise FieldTypeError(field, "str", value)
    if not isinstance(value, str):
        raise FieldTypeError(field, "str" if not optional else "str or None", value)
    if not optional and not value:
        raise InvalidFieldError(field, "must not be empty")
    if max_length is not None and len(value) > max_length:
        raise InvalidFieldError(field, f"longer than {max_length} characters")
    _check_storable(field, value)
    return value


def _check_storable(field: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidFieldError(field, "contains a NUL character (\\x00), which PostgreSQL cannot store")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidFieldError(field, f"is not valid UTF-8 ({exc.reason})") from None


def check_enum(field: str, enum_type: type[E], value: object, *, optional: bool = False) -> E | None:
    """Coerce ``value`` (a member or its string value) to ``enum_type``."""
    if value is None and optional:
        return None
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        try:
            return enum_type(value.upper())
        except ValueError:
            pass
        member = enum_type.__members__.get(value.upper())  # members named apart from their values
        if member is not None:
            return member
    allowed = ", ".join(enum_names(enum_type))
    raise InvalidFieldError(field, f"{value!r:.80} is not a valid {enum_type.__name__} (one of: {allowed})")


def enum_names(enum_type: type[Enum]) -> list[str]:
    """How a member of ``enum_type`` is spelled as a string: its value when that is text, else its name."""
    return [member.value if isinstance(member.value, str) else member.name for member in enum_type]


def check_int(
    field: str, value: object, *, minimum: int | None = None, maximum: int | None = None, optional: bool = False
) -> int | None:
    """Return ``value`` if it is an int (not a bool) within bounds."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldTypeError(field, "int", value)
    if minimum is not None and value < minimum:
        raise InvalidFieldError(field, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidFieldError(field, f"must be <= {maximum}, got {value}")
    return value


def to_utc(field: str, value: object, *, optional: bool = False) -> datetime | None:
    """Return ``value`` as an aware UTC datetime.

    A naive datetime is taken to be UTC already (documented behaviour: this is
    what ``datetime.utcnow()`` produced for years).
    """
    if value is None and optional:
        return None
    if not isinstance(value, datetime):
        raise FieldTypeError(field, "datetime", value)
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def check_hex_id(field: str, value: object, length: int, *, optional: bool = True) -> str | None:
    """Return a lowercase hex trace id (32) or span id (16); reject anything else."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise FieldTypeError(field, "str", value)
    lowered = value.lower()
    pattern = _HEX32 if length == 32 else _HEX16
    if not pattern.fullmatch(lowered):
        raise InvalidFieldError(field, f"must be {length} hexadecimal characters, got {value!r:.80}")
    return lowered


encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""Strict compact JSON; made once (``json.dumps`` with options builds a new encoder on every call)."""


def check_depth(payload: object, max_depth: int = DEFAULT_MAX_DEPTH, field: str = "payload") -> None:
    """Raise :class:`PayloadTooDeepError` if dicts/lists in ``payload`` nest deeper than ``max_depth``.

    Iterative, so it never hits Python's recursion limit, and it terminates
    on reference cycles (a cycle is infinitely deep).
    """
    stack: list[tuple[object, int]] = [(payload, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise PayloadTooDeepError(field, max_depth)
        if isinstance(item, dict):
            stack.extend((value, depth + 1) for value in item.values() if isinstance(value, dict | list | tuple))
        elif isinstance(item, list | tuple):
            stack.extend((value, depth + 1) for value in item if isinstance(value, dict | list | tuple))


def encode_payload(payload: object, field: str = "payload", *, depth_checked: bool = False) -> str:
    """Serialise a payload to strict JSON text, or raise naming ``field``.

    Rejects what JSON cannot represent faithfully or PostgreSQL ``jsonb``
    cannot store: non-dict payloads, sets/bytes/objects, NaN and Infinity,
    nesting deeper than :data:`DEFAULT_MAX_DEPTH` (and reference cycles), NUL characters
    and lone surrogates. ``depth_checked=True`` skips the depth walk for a
    caller that has just done it.
    """
    if not isinstance(payload, dict):
        raise FieldTypeError(field, "dict", payload)
    if not depth_checked:
        check_depth(payload, DEFAULT_MAX_DEPTH, field)
    try:
        text = encode_json(payload)
    except (TypeError, ValueError) as exc:
        raise PayloadNotSerializableError(field, f"is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text and _contains_nul(payload):
        raise InvalidFieldError(field, "contains a NUL character (\\x00), which PostgreSQL cannot store")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidFieldError(field, f"contains text that is not valid UTF-8 ({exc.reason})") from None
    return text


def _contains_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
