"""Input checks shared by messages, queries and records.

Everything that reaches a store passes through here first, so that a bad value
becomes a typed error naming its field instead of a driver error (or, worse, a
value one backend stores and the other refuses). The rules are the common
ground of SQLite and PostgreSQL: text must be valid UTF-8 without NUL
characters, JSON must be strict (no NaN or Infinity), datetimes are UTC and
representable, integers fit the narrower column (PostgreSQL's ``INTEGER`` for
counts stored in a row, ``BIGINT`` for ``LIMIT``/``OFFSET``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import Enum
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, NoReturn, TypeVar

from audit_plugin.exceptions import (
    FieldTypeError,
    InvalidFieldError,
    PayloadNotSerializableError,
    PayloadTooDeepError,
    preview,
)

E = TypeVar("E", bound=Enum)

MAX_TEXT_LENGTH = 1024
"""Longest agent id, correlation id or message id accepted (characters)."""

DEFAULT_MAX_DEPTH = 64
"""How deeply dicts and lists may nest in a payload by default."""

MAX_DEPTH_LIMIT = 500
"""The largest ``max_depth`` accepted: deeper structures would come near Python's recursion limit in ``json``."""

INT32_MAX = 2**31 - 1
"""Largest value an ``INTEGER`` column holds on PostgreSQL (``ttl_seconds``, ``retry_count``); SQLite holds more."""

INT64_MAX = 2**63 - 1
"""Largest ``LIMIT``/``OFFSET`` either store accepts (PostgreSQL ``BIGINT``, SQLite's 64-bit integers)."""

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
    if not value.isascii() or "\x00" in value:  # the common case (ASCII, no NUL) needs no further call
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
    raise InvalidFieldError(field, f"{preview(value)} is not a valid {enum_type.__name__} (one of: {allowed})")


def enum_names(enum_type: type[Enum]) -> list[str]:
    """How a member of ``enum_type`` is spelled as a string: its value when that is text, else its name."""
    return [member.value if isinstance(member.value, str) else member.name for member in enum_type]


def check_int(
    field: str, value: object, *, minimum: int | None = None, maximum: int | None = None, optional: bool = False
) -> int | None:
    """Return ``value`` if it is an int (not a bool) within bounds.

    Callers storing or binding the value pass the column's limit as
    ``maximum`` (:data:`INT32_MAX`, :data:`INT64_MAX`), so a number the store
    cannot hold is refused here, the same way on every backend.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldTypeError(field, "int" if not optional else "int or None", value)
    if minimum is not None and value < minimum:
        raise InvalidFieldError(field, f"must be >= {minimum}, got {preview(value)}")
    if maximum is not None and value > maximum:
        raise InvalidFieldError(field, f"must be <= {maximum}, got {preview(value)}")
    return value


def check_seconds(field: str, value: object, *, optional: bool = False) -> float | None:
    """Return ``value`` if it is a finite number of seconds >= 0 (``nan`` and infinity are refused)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldTypeError(field, "a number of seconds" + (" or None" if optional else ""), value)
    if not math.isfinite(value) or value < 0:
        raise InvalidFieldError(field, f"must be a finite number of seconds >= 0, got {preview(value)}")
    return float(value)


def to_utc(field: str, value: object, *, optional: bool = False) -> datetime | None:
    """Return ``value`` as an aware UTC datetime.

    A naive datetime is taken to be UTC already (documented behaviour: this is
    what ``datetime.utcnow()`` produced for years).
    """
    if value is None and optional:
        return None
    if not isinstance(value, datetime):
        raise FieldTypeError(field, "datetime", value)
    if value.tzinfo is UTC:  # already what is wanted (every default timestamp)
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is in year 0 in UTC
        raise InvalidFieldError(field, f"{value.isoformat()} has no UTC equivalent between years 1 and 9999") from None


def days_ago(field: str, days: object, now: datetime | None = None) -> datetime:
    """The aware UTC time ``days`` whole days before ``now``; refuses a count that reaches before year 1."""
    count = check_int(field, days, minimum=0)
    assert count is not None
    now = now or datetime.now(UTC)
    try:
        return now - timedelta(days=count)
    except OverflowError:
        most = (now.replace(tzinfo=None) - datetime.min).days
        raise InvalidFieldError(field, f"must be <= {most} (that is back to year 1), got {preview(count)}") from None


def check_hex_id(field: str, value: object, length: int, *, optional: bool = True) -> str | None:
    """Return a lowercase hex trace id (32) or span id (16); reject anything else."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise FieldTypeError(field, "str", value)
    lowered = value.lower()
    pattern = _HEX32 if length == 32 else _HEX16
    if not pattern.fullmatch(lowered):
        raise InvalidFieldError(field, f"must be {length} hexadecimal characters, got {preview(value)}")
    return lowered


encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""Strict compact JSON; made once (``json.dumps`` with options builds a new encoder on every call)."""


def _not_serialisable(value: object) -> NoReturn:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")  # json's own wording


def _acyclic_encoder() -> Callable[[object], str]:
    """:data:`encode_json` for values known to hold no reference cycle, without its per-call set-up.

    ``JSONEncoder.encode`` builds its C encoder on every call, with a
    table of the containers it has entered to detect cycles; a payload
    whose depth :func:`check_depth` has bounded has none, so one encoder
    without that table is made once. Same text, same errors; where the C
    accelerator is missing, :data:`encode_json` itself.
    """
    if c_make_encoder is None:
        return encode_json
    encode = c_make_encoder(None, _not_serialisable, encode_basestring, None, ":", ",", False, False, False)
    return lambda value: "".join(encode(value, 0))


_encode_acyclic = _acyclic_encoder()


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
        text = _encode_acyclic(payload)  # the depth check has ruled out reference cycles
    except (TypeError, ValueError) as exc:
        raise PayloadNotSerializableError(field, f"is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text and contains_nul(payload):
        raise InvalidFieldError(field, "contains a NUL character (\\x00), which PostgreSQL cannot store")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidFieldError(field, f"contains text that is not valid UTF-8 ({exc.reason})") from None
    return text


def contains_nul(value: Any) -> bool:
    """Whether a NUL character is in any string of ``value`` (keys included), at any depth."""
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
