"""The hash chain's format is fixed: known answers, and the fast serialiser agreeing with the reference one."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from audit_plugin import chain
from audit_plugin.integrity_schema import events
from audit_plugin.ledger import LINKED_COLUMNS

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
NUMBERS = '{"a":1,"b":[1.5,15e-1,1e20,-0,0.0,-0.0,123000,1E-7,-12.340],"c":{"z":null,"y":true,"é":"ü\\n"}}'


def _stdlib_canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def test_record_entry_digest_is_the_published_one() -> None:
    event = {
        "kind": "record",
        "message_id": "m0",
        "status": "PENDING",
        "at": AT,
        "retry_count": 0,
        "error": None,
        "delivered_at": None,
    }
    record = {
        "message_id": "m0",
        "from_agent": "a",
        "to_agent": "b",
        "message_type": "command",
        "priority": "normal",
        "correlation_id": None,
        "reply_to": None,
        "timestamp": AT.astimezone(timezone(timedelta(hours=2))),  # the same instant, another offset
        "ttl_seconds": 30,
        "trace_id": None,
        "span_id": None,
        "payload_json": NUMBERS,
    }
    assert chain.entry_digest(event, record) == "71322072761941a3a8c8f7b2b49d4f338f76b5c531f98a1335339fff1bbfbbbd"


def test_status_entry_digest_is_the_published_one() -> None:
    event = {
        "kind": "status",
        "message_id": "m0",
        "status": "DELIVERED",
        "at": AT,
        "retry_count": 0,
        "error": None,
        "delivered_at": AT,
    }
    assert chain.entry_digest(event) == "e691cbc3e0b8db4619171aa4f9b0d1c7955c779dcb3ec55bb92dc2975d39adad"


@pytest.mark.parametrize(
    "literal", ["0", "-0", "7", "-7", "10", "-1200", "123000", "100000000000000000000", "12345678901234567890123"]
)
def test_integer_normal_form_is_the_decimal_one(literal: str) -> None:
    assert chain._integer(literal) == chain._number(literal)


def _random_text(rng: random.Random) -> str:
    alphabet = [chr(code) for code in range(0x00, 0x250)] + ["\u2028", "\ufeff", "€", "𝄞", "\U0010ffff", "\x7f"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))


def _random_document(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return _random_text(rng)
    if kind == 1:
        return rng.choice([None, True, False, 0, -1, 2**63 - 1, -(2**63)])
    if kind == 2:
        return rng.randint(-(10**12), 10**12)
    if kind == 3:
        return chain._NUMBER_TAG + str(rng.randint(0, 99))
    if kind == 4:
        return [_random_document(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_random_text(rng): _random_document(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_fast_canonical_json_matches_the_standard_library_byte_for_byte() -> None:
    rng = random.Random(20261127)
    for _ in range(3000):
        document = {"record": _random_document(rng), "kind": _random_text(rng)}
        assert chain.canonical_json(document) == _stdlib_canonical(document), document


def test_what_the_fast_serialiser_refuses_gets_the_standard_library_form() -> None:
    wide = {"retry_count": 2**70, "b": [-(2**65)]}
    assert chain.canonical_json(wide) == _stdlib_canonical(wide)
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate is not UTF-8, whichever serialiser runs
        chain.canonical_json({"error": "\ud800"})


def test_backends_bind_every_lifecycle_column() -> None:
    assert sorted(LINKED_COLUMNS) == sorted(column.name for column in events.columns)
