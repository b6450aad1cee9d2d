"""Framework objects as JSON a trail stores: as faithful as JSON allows, and never an exception.

Agent frameworks hand the adapters pydantic models, dataclasses, enums,
bytes, datetimes and objects of their own. :func:`to_json` turns any of
them into plain JSON values (dicts with string keys, lists, strings,
finite numbers, booleans, ``None``) that the trail accepts, so an odd
payload never fails the user's agent:

* pydantic models go through their own JSON dump (``model_dump(mode="json")``),
  dataclasses field by field, mappings and sequences item by item;
* enums become their value, datetimes and dates ISO 8601 text, UUIDs,
  decimals and paths their text, bytes ``{"$audit": "bytes", "size", "base64"}``;
* what JSON cannot hold becomes a marker naming what was there:
  ``{"$audit": "not-json", "type": ..., "repr": ...}`` for NaN, infinities and
  objects with no JSON form, ``{"$audit": "too-deep"}`` past
  :data:`MAX_DEPTH` levels, ``{"$audit": "cycle"}`` for a reference cycle;
* text keeps every character the stores can hold: NUL becomes the
  four characters ``\\x00`` and lone surrogates their ``\\udcXX`` escape.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from audit_plugin.model.markers import MARKER_KEY

MAX_DEPTH = 48
"""Deepest nesting kept (the trail's default limit is 64; the adapters' envelopes add a few levels)."""

REPR_LIMIT = 200
"""Characters of ``repr()`` kept in a not-JSON marker."""


def to_json(value: Any) -> Any:
    """``value`` as plain JSON values (see the module docs); never raises."""
    try:
        return _convert(value, 0, set())
    except Exception as exc:  # a model_dump or a __repr__ that raises: keep what can be said
        return not_json(value, exc)


def not_json(value: Any, exc: BaseException | None = None) -> dict[str, Any]:
    """The marker stored in place of a value JSON cannot hold."""
    marker: dict[str, Any] = {MARKER_KEY: "not-json", "type": type_name(value), "repr": safe_repr(value)}
    if exc is not None:
        marker["error"] = text(f"{type(exc).__name__}: {exc}")
    return marker


def type_name(value: Any) -> str:
    """``module.Qualname`` of ``value``'s type (``builtins.`` omitted)."""
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def safe_repr(value: Any) -> str:
    """``repr(value)``, shortened to :data:`REPR_LIMIT` characters; a placeholder when ``__repr__`` raises."""
    try:
        shown = repr(value)
    except Exception:
        return f"<{type_name(value)} object>"
    return text(shown if len(shown) <= REPR_LIMIT else shown[: REPR_LIMIT - 1] + "…")


def text(value: str) -> str:
    """``value`` with what PostgreSQL and UTF-8 cannot store escaped (NUL, lone surrogates)."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _convert(value: Any, depth: int, path: set[int]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _convert(value.value, depth, path)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return text(str(value))
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else not_json(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | PurePath):
        return str(value)
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else not_json(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return {MARKER_KEY: "bytes", "size": len(raw), "base64": base64.b64encode(raw).decode("ascii")}
    if depth >= MAX_DEPTH:
        return {MARKER_KEY: "too-deep"}
    if id(value) in path:
        return {MARKER_KEY: "cycle"}
    path.add(id(value))
    try:
        return _convert_container(value, depth, path)
    finally:
        path.discard(id(value))


def _convert_container(value: Any, depth: int, path: set[int]) -> Any:
    if isinstance(value, Mapping):
        return {_key(key): _convert(item, depth + 1, path) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_convert(item, depth + 1, path) for item in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):  # a pydantic model: its own JSON form
        return _convert(dump(mode="json"), depth + 1, path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _convert(getattr(value, field.name, None), depth + 1, path)
            for field in dataclasses.fields(value)
        }
    return not_json(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return text(key)
    if isinstance(key, enum.Enum):
        return _key(key.value)
    return text(str(key))
