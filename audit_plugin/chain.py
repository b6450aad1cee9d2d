"""The hash chain's format: canonical serialisation of entries, entry digests, link hashes.

Every entry appended to ``message_audit_events`` (a recorded message, a
status change or retry, a retention run) is linked to the one before it::

    entry_digest = SHA-256( b"audit-plugin/entry\\x00" || canonical_json(entry_document) )
    entry_hash   = SHA-256( b"audit-plugin/chain\\x00" || b"v1\\x00" || chain_id || b"\\x00"
                            || str(sequence) || b"\\x00" || prev_hash (32 bytes) || entry_digest (32 bytes) )

``prev_hash`` of the first entry is 32 zero bytes (or, after retention, the
hash of the last pruned entry). Hashes are stored as lowercase hex.

``entry_document`` (see :func:`entry_document`) holds the event's columns
(``operation_id`` only when the entry has one, so entries written before it
existed verify unchanged) and, for a ``"record"`` entry, the message's
immutable columns with its stored payload. Canonical JSON: keys sorted, no whitespace, UTF-8, timestamps as UTC
ISO-8601 strings with microseconds and ``+00:00``; payload numbers are replaced
by an exact normalised decimal form, so the digest does not depend on how a
database re-renders JSON (PostgreSQL ``jsonb`` reorders keys and rewrites
``1e+20`` as ``100000000000000000000``). With encryption on, the stored
payload is the ciphertext envelope, so the chain hashes the ciphertext and
erasing a subject's key never breaks it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

HASH_VERSION = 1
DOMAIN_TAG = b"audit-plugin/chain\x00"
ENTRY_TAG = b"audit-plugin/entry\x00"
GENESIS_HASH = "0" * 64
"""``prev_hash`` of a chain's first entry."""

RECORD_FIELDS: tuple[str, ...] = (
    "message_id",
    "from_agent",
    "to_agent",
    "message_type",
    "priority",
    "correlation_id",
    "reply_to",
    "timestamp",
    "ttl_seconds",
    "trace_id",
    "span_id",
)
"""Columns of ``message_audit_log`` that never change after insert, covered by the record entry."""

EVENT_FIELDS: tuple[str, ...] = ("kind", "message_id", "status", "at", "retry_count", "error", "delivered_at")
"""Columns of ``message_audit_events`` covered by every entry."""

OPTIONAL_EVENT_FIELDS: tuple[str, ...] = ("operation_id",)
"""Columns covered by an entry only when they hold a value: an entry without one hashes as it always did."""

_NUMBER_TAG = "\x00n:"  # payload strings never contain NUL (refused at capture), so tagged numbers cannot collide


def iso_utc(value: datetime | None) -> str | None:
    """``2026-01-15T12:00:00.000000+00:00``: the chain's timestamp form (UTC, microseconds)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def _number(literal: str) -> str:
    """An exact, normalised form of a JSON number: ``1.50`` and ``15e-1`` give the same text."""
    number = Decimal(literal)
    if number.is_zero():
        return _NUMBER_TAG + "0"
    sign, digits, exponent = number.as_tuple()
    coefficient = "".join(map(str, digits)).rstrip("0")
    exponent = int(exponent) + (len(digits) - len(coefficient))
    return f"{_NUMBER_TAG}{'-' if sign else ''}{coefficient}e{exponent}"


def _integer(literal: str) -> str:
    """:func:`_number` for a JSON integer literal, without ``Decimal`` (most payload numbers are integers)."""
    digits = literal.removeprefix("-")
    coefficient = digits.rstrip("0")
    if not coefficient:
        return _NUMBER_TAG + "0"
    sign = "-" if len(digits) != len(literal) else ""
    return f"{_NUMBER_TAG}{sign}{coefficient}e{len(digits) - len(coefficient)}"


_decode_canonical = json.JSONDecoder(parse_int=_integer, parse_float=_number).decode
"""Made once: ``json.loads`` with options builds a new decoder on every call."""
_encode_canonical = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def canonical_payload(payload_json: str) -> Any:
    """The stored payload text as a value whose canonical JSON is the same on every database."""
    return _decode_canonical(payload_json)


def canonical_json(document: Any) -> bytes:
    """Keys sorted, no whitespace, UTF-8, only JSON's mandatory escapes.

    ``orjson`` writes this form about ten times faster than the standard
    library and byte for byte the same for the documents the chain hashes
    (strings, integers, ``None``, booleans, dicts and lists: payload numbers
    are tagged strings by then); the standard library takes over for what
    ``orjson`` refuses (integers beyond 64 bits, lone surrogates), so the
    result never depends on which one ran.
    """
    try:
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return _encode_canonical(document).encode()


def entry_document(event: Mapping[str, Any], record: Mapping[str, Any] | None) -> dict[str, Any]:
    """What an entry's digest covers: the event's columns, plus the record for a ``"record"`` entry."""
    document = {name: event[name] for name in EVENT_FIELDS}
    for name in OPTIONAL_EVENT_FIELDS:
        if event.get(name) is not None:
            document[name] = event[name]
    document["at"] = at = iso_utc(event["at"])
    document["delivered_at"] = iso_utc(event["delivered_at"])
    if record is not None:
        covered = {name: record[name] for name in RECORD_FIELDS}
        covered["timestamp"] = at if record["timestamp"] is event["at"] else iso_utc(record["timestamp"])
        covered["payload"] = canonical_payload(record["payload_json"])
        document["record"] = covered
    return document


def entry_digest(event: Mapping[str, Any], record: Mapping[str, Any] | None = None) -> str:
    return hashlib.sha256(ENTRY_TAG + canonical_json(entry_document(event, record))).hexdigest()


def link_hash(chain_id: str, sequence: int, prev_hash: str, digest: str) -> str:
    """The hash of entry ``sequence`` of ``chain_id``, chained to ``prev_hash``."""
    header = DOMAIN_TAG + f"v{HASH_VERSION}\x00{chain_id}\x00{sequence}\x00".encode()
    return hashlib.sha256(header + bytes.fromhex(prev_hash) + bytes.fromhex(digest)).hexdigest()
