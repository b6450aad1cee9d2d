"""The hash chain's formats are fixed: known answers, and the fast serialisers agreeing with reference ones."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from audit_plugin.integrity import chain
from audit_plugin.integrity.ledger import LINKED_COLUMNS
from audit_plugin.integrity.verify import _moment
from audit_plugin.storage.integrity_schema import events

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
NUMBERS = '{"a":1,"b":[1.5,15e-1,1e20,-0,0.0,-0.0,123000,1E-7,-12.340],"c":{"z":null,"y":true,"é":"ü\\n"}}'


def _stdlib_canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def test_v1_record_entry_digest_is_the_published_one() -> None:
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
    assert chain.entry_digest_v1(event, record) == "71322072761941a3a8c8f7b2b49d4f338f76b5c531f98a1335339fff1bbfbbbd"


def test_v1_status_entry_digest_is_the_published_one() -> None:
    event = {
        "kind": "status",
        "message_id": "m0",
        "status": "DELIVERED",
        "at": AT,
        "retry_count": 0,
        "error": None,
        "delivered_at": AT,
    }
    assert chain.entry_digest_v1(event) == "e691cbc3e0b8db4619171aa4f9b0d1c7955c779dcb3ec55bb92dc2975d39adad"
    assert chain.link_hash("default", 1, chain.GENESIS_HASH, "00" * 32, version=1) == (
        "22406bc8fbc4a501266e8bcad9c3915ec965ea5db7a1bd81e72b901cabe69976"
    )


V2_RECORD = {
    "message_id": "m0",
    "from_agent": "a",
    "to_agent": "b",
    "message_type": "COMMAND",
    "priority": "NORMAL",
    "correlation_id": None,
    "reply_to": "é\n\u2028",
    "timestamp": AT.astimezone(timezone(timedelta(hours=2))),  # the same instant, another offset
    "ttl_seconds": 30,
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "payload_json": '{"b": 1.50, "a":1e20}',  # hashed as stored: spacing, key order and number forms count
}
V2_EVENT = {
    "kind": "record",
    "message_id": "m0",
    "status": "PENDING",
    "at": AT,
    "retry_count": 0,
    "error": None,
    "delivered_at": None,
    "operation_id": None,
}


def test_v2_record_and_entry_digests_are_the_published_ones() -> None:
    record_digest = chain.record_digest(V2_RECORD)
    assert record_digest == "36e72ac722ccf7c86f97ea77c6b54e33c69ed7751359684743379802ed749c1c"
    assert chain.entry_digest({**V2_EVENT, "record_digest": record_digest}) == (
        "0d6d9d519d7f0094420ce32b7d4aa088de0589fd4a8c529d4181fec79d3eaa0a"
    )
    status = {**V2_EVENT, "kind": "status", "status": "DELIVERED", "delivered_at": AT.replace(microsecond=7)}
    assert chain.entry_digest({**status, "operation_id": "op-1", "record_digest": None}) == (
        "a8d3dff805eac06f699307cef89deb4ab94840325def22a6221d738a2339cad9"
    )
    assert chain.link_hash("default", 1, chain.GENESIS_HASH, "00" * 32) == (
        "ea8d6abbc3077fce1b159110105ccc27afabb8cd15804e799f15451b3e056414"
    )


def _reference_array(values: list[object]) -> bytes:
    """Format 2's ``json_array`` as the module docstring specifies it, with the standard library only."""

    def moment(value: object) -> object:
        if not isinstance(value, datetime):
            return value
        return value.astimezone(UTC).isoformat(timespec="microseconds" if value.microsecond else "seconds")

    return json.dumps([moment(v) for v in values], ensure_ascii=False, separators=(",", ":")).encode()


def _reference_v2(record: dict[str, object], event: dict[str, object]) -> tuple[str, str]:
    payload = str(record["payload_json"]).encode()
    fields = _reference_array([record[name] for name in chain.RECORD_FIELDS])
    record_digest = hashlib.sha256(b"audit-plugin/record\x00v2\x00" + fields + b"\x00" + payload).hexdigest()
    covered = _reference_array([{**event, "record_digest": record_digest}[name] for name in chain.EVENT_FIELDS_V2])
    return record_digest, hashlib.sha256(b"audit-plugin/entry\x00v2\x00" + covered).hexdigest()


def test_v2_digests_match_the_reference_implementation() -> None:
    rng = random.Random(20261129)
    for _ in range(2000):
        at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(10**13) * rng.choice([0, 1]))
        zone = timezone(timedelta(minutes=rng.choice([0, 90, -300])))
        record = {**V2_RECORD, "timestamp": at.astimezone(zone), "reply_to": _random_text(rng)}
        record["payload_json"] = json.dumps({_random_text(rng): _random_text(rng)}, ensure_ascii=rng.random() < 0.5)
        event = {**V2_EVENT, "at": at, "error": rng.choice([None, _random_text(rng)]), "retry_count": rng.randrange(9)}
        expected_record, expected_entry = _reference_v2(record, event)
        assert chain.record_digest(record) == expected_record
        assert chain.entry_digest({**event, "record_digest": expected_record}) == expected_entry


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


@pytest.mark.parametrize("microsecond", [0, 5, 999999])
def test_sqlite_timestamp_text_hashes_as_its_datetime(microsecond: int) -> None:
    """verify() hashes SQLite's stored timestamp text without parsing it: the same bytes as the datetime."""
    moment = AT.replace(microsecond=microsecond)
    stored = moment.strftime("%Y-%m-%d %H:%M:%S.%f")  # UTCDateTime's form on SQLite
    at = chain.EVENT_FIELDS_V2.index("at")
    as_read, as_written = ([None] * len(chain.EVENT_FIELDS_V2) for _ in range(2))
    as_read[at], as_written[at] = _moment(stored), moment
    assert chain.entry_digest_of(as_read) == chain.entry_digest_of(as_written)
