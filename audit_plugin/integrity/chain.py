"""The hash chain's formats: entry digests and link hashes, version 2 (written) and 1 (still read).

Every entry appended to ``message_audit_events`` (a recorded message, a
status change or retry, a retention run) is linked to the one before it::

    entry_hash = SHA-256( b"audit-plugin/chain\\x00" || b"v<version>\\x00" || chain_id || b"\\x00"
                          || str(sequence) || b"\\x00" || prev_hash (32 bytes) || entry_digest (32 bytes) )

``prev_hash`` of the first entry is 32 zero bytes (or, after retention, the
hash of the last pruned entry). Hashes are stored as lowercase hex. Each
entry stores its format in ``hash_version`` (``NULL``: version 1, written
before the column existed).

**Version 2** hashes the values as stored, in two separate digests, so the
event's own columns stay checkable after retention deleted its record::

    record_digest = SHA-256( b"audit-plugin/record\\x00v2\\x00" || json_array(RECORD_FIELDS) || b"\\x00"
                             || payload_json (UTF-8, the stored text byte for byte) )
    entry_digest  = SHA-256( b"audit-plugin/entry\\x00v2\\x00" || json_array(EVENT_FIELDS_V2) )

``json_array`` is the compact JSON array of the values in field order
(``orjson``'s output: no whitespace, UTF-8, only JSON's mandatory escapes,
datetimes as UTC RFC 3339 ``2026-01-15T12:00:00+00:00``, with ``.ffffff``
only when the microseconds are not zero). ``record_digest`` is stored in the
record entry's own column (``NULL`` in other entries) and is one of the
values ``entry_digest`` covers. The payload is hashed as the stored text, not
re-serialised: the column must keep the text verbatim (SQLite ``TEXT``,
PostgreSQL ``json``; PostgreSQL ``jsonb`` does not, see
:func:`audit_plugin.storage.integrity_schema.payload_text_kept`).

**Version 1** (:func:`entry_digest_v1`) hashes one canonical JSON document
per entry. Its ``entry_document`` holds the event's columns
(``operation_id`` only when the entry has one, so entries written before it
existed verify unchanged) and, for a ``"record"`` entry, the message's
immutable columns with its stored payload. Canonical JSON: keys sorted, no whitespace, UTF-8, timestamps as UTC
ISO-8601 strings with microseconds and ``+00:00``; payload numbers are replaced
by an exact normalised decimal form, so the digest does not depend on how a
database re-renders JSON (PostgreSQL ``jsonb`` reorders keys and rewrites
``1e+20`` as ``100000000000000000000``).

In both versions the chain hashes the stored payload: with encryption on,
that is the ciphertext envelope, so erasing a subject's key never breaks it.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

HASH_VERSION = 2
"""The format new entries are written in."""
HASH_VERSIONS = frozenset({1, 2})
"""The formats :mod:`audit_plugin.integrity.verify` checks."""
DOMAIN_TAG = b"audit-plugin/chain\x00"
ENTRY_TAG = b"audit-plugin/entry\x00"
ENTRY_TAG_V2 = b"audit-plugin/entry\x00v2\x00"
RECORD_TAG_V2 = b"audit-plugin/record\x00v2\x00"
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
"""Columns of ``message_audit_events`` covered by every version-1 entry."""

OPTIONAL_EVENT_FIELDS: tuple[str, ...] = ("operation_id",)
"""Columns covered by a version-1 entry only when they hold a value: an entry without one hashes as it always did."""

EVENT_FIELDS_V2: tuple[str, ...] = (*EVENT_FIELDS, *OPTIONAL_EVENT_FIELDS, "record_digest")
"""Columns of ``message_audit_events`` a version-2 ``entry_digest`` covers, in this order."""

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


def entry_digest_v1(event: Mapping[str, Any], record: Mapping[str, Any] | None = None) -> str:
    """A version-1 entry's digest: its event's columns and, for a record entry, the record's."""
    return hashlib.sha256(ENTRY_TAG + canonical_json(entry_document(event, record))).hexdigest()


def _utc(value: Any) -> Any:
    """A datetime in UTC (naive ones are UTC already, as stored); anything else unchanged."""
    if isinstance(value, datetime) and value.tzinfo is not UTC:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _in_utc(values: Sequence[Any], indexes: tuple[int, ...]) -> Sequence[Any]:
    """``values`` with the datetimes at ``indexes`` in UTC: the same sequence when they are already."""
    for index in indexes:
        moment = values[index]
        if moment is not None and moment.tzinfo is not UTC:
            converted = list(values)
            for each in indexes:
                converted[each] = _utc(converted[each])
            return converted
    return values


def record_digest(record: Mapping[str, Any]) -> str:
    """A version-2 record's digest: its immutable columns and its stored payload text, byte for byte."""
    return record_digest_of(_in_utc(_record_values(record), _RECORD_TIMES), record["payload_json"])


def _plain_datetime(value: Any) -> str:
    """A ``datetime`` subclass (freezegun's ``FakeDatetime``) as the text orjson writes for a plain ``datetime``.

    orjson takes only the exact type; this is its RFC 3339 form (``isoformat``), so the digest is the one
    the stored value gives when verified.
    """
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def record_digest_of(values: Sequence[Any], payload_json: str) -> str:
    """:func:`record_digest` of the values of ``RECORD_FIELDS`` (in that order) and the payload text.

    Datetimes must be in UTC already, or be their ``json_array`` text.
    """
    fields = orjson.dumps(values, default=_plain_datetime)
    return hashlib.sha256(RECORD_TAG_V2 + fields + b"\x00" + payload_json.encode()).hexdigest()


def entry_digest(event: Mapping[str, Any]) -> str:
    """A version-2 entry's digest: its event's own columns, ``record_digest`` included (see the module)."""
    return entry_digest_of(_in_utc(_event_values(event), _EVENT_TIMES))


def entry_digest_of(values: Sequence[Any]) -> str:
    """:func:`entry_digest` of the values of ``EVENT_FIELDS_V2``, in that order.

    Datetimes must be in UTC already, or be their ``json_array`` text.
    """
    return hashlib.sha256(ENTRY_TAG_V2 + orjson.dumps(values, default=_plain_datetime)).hexdigest()


_record_values = operator.itemgetter(*RECORD_FIELDS)
_event_values = operator.itemgetter(*EVENT_FIELDS_V2)
_RECORD_TIMES = (RECORD_FIELDS.index("timestamp"),)
_EVENT_TIMES = (EVENT_FIELDS_V2.index("at"), EVENT_FIELDS_V2.index("delivered_at"))
_LINK_TAGS = {version: DOMAIN_TAG + f"v{version}\x00".encode() for version in HASH_VERSIONS}


def link_hash(chain_id: str, sequence: int, prev_hash: str, digest: str, version: int = HASH_VERSION) -> str:
    """The hash of entry ``sequence`` of ``chain_id`` in format ``version``, chained to ``prev_hash``."""
    header = _LINK_TAGS[version] + f"{chain_id}\x00{sequence}\x00".encode()
    return hashlib.sha256(header + bytes.fromhex(prev_hash) + bytes.fromhex(digest)).hexdigest()
