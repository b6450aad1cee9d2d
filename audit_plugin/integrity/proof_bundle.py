"""Proof bundles: one record, its lifecycle entries, their inclusion proofs and a signed checkpoint, in one JSON file.

A bundle lets someone who holds no database check that a record is in the
log, unaltered: ``check_bundle(data, public_key)`` needs only this package's
hashing code, ``cryptography`` for Ed25519 and (for a time-stamp token)
``rfc3161-client``. It recomputes, in order:

1. the checkpoint note's signature, by the key the checker trusts;
2. each chain's tree head against the note (the note's own tree with one
   chain; an inclusion proof into the heads tree with several);
3. the record's digest from its columns and its payload text as stored
   (format 2), each entry's digest from its columns, and each entry's hash
   from its chain, sequence number, previous hash and digest;
4. each entry's inclusion proof (leaf ``SHA-256(0x00 || entry_hash)``) into
   its chain's tree head;
5. with a time-stamp token: that it time-stamps this note (and, given the
   TSA's CA certificates, that the TSA signed it).

Anything that does not hold gives a :class:`BundleCheck` with ``ok`` false
and a one-line ``reason``; a bundle that is not even well-formed (truncated,
wrong types, out-of-range numbers) gets one too, never an exception.

A bundle proves that these entries are in the log as the checkpoint stands;
it does not prove that they are all of the message's entries, nor anything
about messages that were never logged (see docs/integrity.md).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from audit_plugin.integrity import chain, merkle
from audit_plugin.integrity.note import MAX_SIZE, NoteError, NoteVerifier
from audit_plugin.integrity.tree_checkpoint import TreeCheckpoint, TreeHead
from audit_plugin.integrity.verify import ENTRY_COLUMNS

BUNDLE_FORMAT = "audit-plugin/proof-bundle"
BUNDLE_VERSION = 1
MAX_BUNDLE_BYTES = 64 << 20
"""The largest bundle read (a record's payload is at most 16 MiB by default)."""
MAX_ENTRIES = 10_000
CHAIN_KEYS = frozenset({"chain_id", "first_sequence", "size", "root", "heads_index", "heads_proof"})
"""The fields of a bundle's chain entry (its tree head and where it sits in the checkpoint's heads tree)."""
CHECKPOINT_KEYS = frozenset({"note", "at", "timestamp"})
"""The fields of a bundle's checkpoint: the signed note, when it was made, its RFC 3161 token (or null)."""
BUNDLE_KEYS = frozenset({"format", "version", "message_id", "record", "entries", "chains", "checkpoint"})
"""Exactly the fields of a bundle: a withheld record is ``null``, never a missing field."""

RECORD_KEYS: tuple[str, ...] = (*chain.RECORD_FIELDS, "payload_json")
"""A bundle's ``record``: the columns the record digest covers, in order, and the payload text as stored."""


@dataclass(frozen=True, slots=True)
class ProvedEntry:
    """An entry a bundle proves: its place and what it says."""

    chain_id: str
    sequence: int
    kind: str
    status: str | None
    at: str


@dataclass(frozen=True, slots=True)
class BundleCheck:
    """The outcome of :func:`check_bundle`."""

    ok: bool
    reason: str | None = None
    message_id: str | None = None
    origin: str | None = None
    tree_size: int | None = None
    entries: tuple[ProvedEntry, ...] = ()
    record_included: bool = False
    timestamp: datetime | None = None
    timestamp_verified: bool = False
    checkpoint_at: str | None = None

    def __str__(self) -> str:
        if not self.ok:
            return f"INVALID: {self.reason}"
        what = "the record and " if self.record_included else "(record withheld) "
        steps = ", ".join(f"#{e.sequence} {e.kind} {e.status or ''}".rstrip() for e in self.entries)
        text = (
            f"OK: message {self.message_id}: {what}{len(self.entries)} lifecycle entries ({steps}) are in the log "
            f"{self.origin!r} at tree size {self.tree_size}"
        )
        if self.timestamp is not None:
            checked = "verified" if self.timestamp_verified else "not verified: pass the TSA's CA certificate"
            text += f"; time-stamped {self.timestamp.isoformat()} ({checked})"
        return text


class _Invalid(Exception):
    """The bundle fails a check; the message is the reason."""


@dataclass(slots=True)
class ProofBundle:
    """A bundle being written (see :meth:`to_json`): the trail makes these (``trail.prove()``)."""

    message_id: str
    record: dict[str, Any] | None
    entries: list[dict[str, Any]]
    """Each entry's columns as stored (timestamps as RFC 3339 text), its ``leaf_index`` and ``proof`` (hex)."""
    checkpoint: TreeCheckpoint
    uncovered: int = 0
    """The message's entries after the checkpoint, left out (not written into the bundle)."""

    def document(self) -> dict[str, Any]:
        chains = []
        for chain_id in sorted({entry["chain_id"] for entry in self.entries}):
            head = self.checkpoint.head(chain_id)
            assert head is not None
            heads_proof = self.checkpoint.head_proof(chain_id)
            chains.append(
                {
                    **head.to_dict(),
                    "heads_index": heads_proof[0] if heads_proof else None,
                    "heads_proof": [node.hex() for node in heads_proof[1]] if heads_proof else None,
                }
            )
        return {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "message_id": self.message_id,
            "record": self.record,
            "entries": self.entries,
            "chains": chains,
            "checkpoint": {
                "note": self.checkpoint.note,
                "at": self.checkpoint.at.isoformat(),
                "timestamp": base64.b64encode(self.checkpoint.timestamp).decode()
                if self.checkpoint.timestamp
                else None,
            },
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.document(), option=orjson.OPT_INDENT_2) + b"\n"


# -- checking ------------------------------------------------------------------------------------------


def check_bundle(data: bytes | str, public_key: Any, *, tsa_roots: Sequence[Any] = ()) -> BundleCheck:
    """Check a proof bundle (its JSON) against the log's public key; see the module for what is checked.

    ``public_key`` is an ``Ed25519PublicKey`` (the checkpoint's origin is
    then its key name, as the trail signs) or a
    :class:`~audit_plugin.integrity.note.NoteVerifier` (a vkey).
    ``tsa_roots``: CA certificates (``cryptography`` ``x509.Certificate``) a
    time-stamp token must chain to.
    """
    try:
        return _check(data, public_key, tsa_roots)
    except _Invalid as problem:
        return BundleCheck(False, str(problem))
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, IndexError, RecursionError) as exc:
        return BundleCheck(False, f"the bundle is malformed ({type(exc).__name__}: {_short(exc)})")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("…" if len(text) > 160 else "")


def _check(data: bytes | str, public_key: Any, tsa_roots: Sequence[Any]) -> BundleCheck:
    if len(data) > MAX_BUNDLE_BYTES:
        raise _Invalid("the bundle is larger than 64 MiB")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(f"the bundle is not JSON ({_short(exc)})") from None
    bundle = _mapping(document, "the bundle", BUNDLE_KEYS)
    if bundle.get("format") != BUNDLE_FORMAT:
        raise _Invalid(f"not a proof bundle (format is not {BUNDLE_FORMAT!r})")
    if bundle.get("version") != BUNDLE_VERSION:
        raise _Invalid(f"bundle version {bundle.get('version')!r} is not one this version checks ({BUNDLE_VERSION})")
    message_id = _text(bundle, "message_id")

    sealed = _mapping(bundle.get("checkpoint"), "the checkpoint", CHECKPOINT_KEYS)
    note = _text(sealed, "note")
    try:
        checkpoint = _checkpoint(note, sealed)
    except NoteError as exc:
        raise _Invalid(f"the checkpoint is malformed: {exc}") from None
    if not checkpoint.signed_by(public_key):
        raise _Invalid("the checkpoint's signature is not valid for the given key (checkpoint altered, or another log)")
    body = checkpoint.body

    heads = _heads(bundle.get("chains"), body)
    record = bundle.get("record")
    if record is not None:
        record = _record(record, message_id)
    entries = _list(bundle.get("entries"), "entries")
    if not entries or len(entries) > MAX_ENTRIES:
        raise _Invalid(f"the bundle must prove 1 to {MAX_ENTRIES} entries")
    proved = []
    previous: tuple[str, int] | None = None
    for position, raw in enumerate(entries):
        entry = _mapping(raw, f"entry {position}")
        proved.append(_check_entry(entry, position, message_id, record, heads))
        place = (proved[-1].chain_id, proved[-1].sequence)
        if previous is not None and place <= previous:
            raise _Invalid("the entries are not in chain order")
        previous = place
    if sum(e.kind == "record" for e in proved) != 1:
        raise _Invalid("the entries must include the message's record entry, once")

    stamp_time, stamp_verified = None, False
    if checkpoint.timestamp is not None:
        from audit_plugin.integrity.timestamping import TimestampError, check_timestamp

        try:
            stamped = check_timestamp(checkpoint.timestamp, note, tsa_roots)
        except TimestampError as exc:
            raise _Invalid(str(exc)) from None
        stamp_time, stamp_verified = stamped.time, stamped.verified
    return BundleCheck(
        True,
        message_id=message_id,
        origin=body.origin,
        tree_size=body.size,
        entries=tuple(proved),
        record_included=record is not None,
        timestamp=stamp_time,
        timestamp_verified=stamp_verified,
        checkpoint_at=sealed.get("at") if isinstance(sealed.get("at"), str) else None,
    )


def _checkpoint(note: str, sealed: Mapping[str, Any]) -> TreeCheckpoint:
    token = sealed.get("timestamp")
    if token is not None:
        try:
            token = base64.b64decode(_text(sealed, "timestamp"), validate=True)
        except (binascii.Error, ValueError):
            raise _Invalid("the checkpoint's time-stamp token is not base64") from None
    return TreeCheckpoint(note, (), datetime.now(UTC), token or None)


def _heads(raw: Any, body: Any) -> dict[str, TreeHead]:
    """Each chain's tree head, checked against the signed note."""
    chains = _list(raw, "chains")
    if not chains:
        raise _Invalid("the bundle names no chain")
    heads: dict[str, TreeHead] = {}
    for position, item in enumerate(chains):
        data = _mapping(item, f"chain {position}", CHAIN_KEYS)
        head = TreeHead(
            _text(data, "chain_id"),
            _count(data, "size"),
            _digest(data, "root"),
            _count(data, "first_sequence"),
        )
        index, proof = data.get("heads_index"), data.get("heads_proof")
        if index is None and proof is None:
            if len(chains) != 1 or (head.size, head.root) != (body.size, body.root):
                raise _Invalid(f"chain {head.chain_id!r}'s tree head is not the checkpoint's")
        else:
            index = _number(index, "heads_index")
            path = [_hash(node, "heads_proof") for node in _list(proof, "heads_proof")]
            if not merkle.verify_inclusion(index, body.size, merkle.leaf_hash(head.leaf()), path, body.root):
                raise _Invalid(f"chain {head.chain_id!r}'s tree head is not in the checkpoint's heads tree")
        if head.chain_id in heads:
            raise _Invalid(f"chain {head.chain_id!r} is named twice")
        heads[head.chain_id] = head
    return heads


def _record(raw: Any, message_id: str) -> dict[str, Any]:
    record = _mapping(raw, "record")
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise _Invalid(f"the record lacks {', '.join(missing)}")
    if record["message_id"] != message_id:
        raise _Invalid("the record is of another message than the bundle names")
    _text(record, "payload_json")
    return record


def _check_entry(
    entry: Mapping[str, Any],
    position: int,
    message_id: str,
    record: Mapping[str, Any] | None,
    heads: Mapping[str, TreeHead],
) -> ProvedEntry:
    where = f"entry {position}"
    missing = [key for key in (*ENTRY_COLUMNS, "leaf_index", "proof") if key not in entry]
    if missing:
        raise _Invalid(f"{where} lacks {', '.join(missing)}")
    chain_id, sequence = _text(entry, "chain_id"), _count(entry, "sequence")
    where = f"entry {sequence} of chain {chain_id!r}"
    if entry["message_id"] != message_id:
        raise _Invalid(f"{where} is of another message")
    kind = _text(entry, "kind")
    version = entry["hash_version"]
    if version not in chain.HASH_VERSIONS:
        raise _Invalid(f"{where} is in hash format {version!r}, which this version cannot check")
    digest = _hex(entry, "entry_digest")
    if version == 2:
        if kind == "record" and record is not None:
            values = [record[name] for name in chain.RECORD_FIELDS]
            if chain.record_digest_of(values, record["payload_json"]) != entry["record_digest"]:
                raise _Invalid(f"{where}: the record does not match its digest (record or payload altered)")
        if chain.entry_digest_of([entry[name] for name in chain.EVENT_FIELDS_V2]) != digest:
            raise _Invalid(f"{where}: its columns do not match its digest (entry altered)")
    else:
        if kind == "record" and record is None:
            raise _Invalid(f"{where} is in hash format 1, whose digest needs the record: it cannot be withheld")
        if chain.entry_digest_v1(_event_v1(entry), _record_v1(record) if kind == "record" else None) != digest:
            raise _Invalid(f"{where}: its content does not match its digest (entry or record altered)")
    entry_hash = _hex(entry, "entry_hash")
    if chain.link_hash(chain_id, sequence, _hex(entry, "prev_hash"), digest, version) != entry_hash:
        raise _Invalid(f"{where}: its hash does not match its digest and place (entry altered)")
    head = heads.get(chain_id)
    if head is None:
        raise _Invalid(f"{where} is in a chain the bundle gives no tree head for")
    index = _count(entry, "leaf_index", minimum=0)
    if index != sequence - head.first_sequence:
        raise _Invalid(f"{where}: its leaf index does not match its sequence number")
    proof = [_hash(node, "proof") for node in _list(entry["proof"], "proof")]
    leaf = merkle.leaf_hash(bytes.fromhex(entry_hash))
    if not merkle.verify_inclusion(index, head.size, leaf, proof, head.root):
        raise _Invalid(f"{where}: its inclusion proof does not lead to the chain's tree head (entry or proof altered)")
    return ProvedEntry(chain_id, sequence, kind, entry["status"], str(entry["at"]))


def _event_v1(entry: Mapping[str, Any]) -> dict[str, Any]:
    event = {name: entry[name] for name in (*chain.EVENT_FIELDS, *chain.OPTIONAL_EVENT_FIELDS)}
    event["at"] = _moment(event["at"])
    event["delivered_at"] = _moment(event["delivered_at"]) if event["delivered_at"] is not None else None
    return event


def _record_v1(record: Mapping[str, Any] | None) -> dict[str, Any]:
    assert record is not None
    converted = dict(record)
    converted["timestamp"] = _moment(record["timestamp"])
    return converted


def _moment(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _Invalid("a timestamp is not text")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise _Invalid("a timestamp has no time zone")
    return moment


# -- well-formedness -------------------------------------------------------------------------------


def _mapping(value: Any, what: str, fields: frozenset[str] | None = None) -> Mapping[str, Any]:
    """``value`` as a JSON object; with ``fields``, one with exactly those (a field nothing checks is refused)."""
    if not isinstance(value, dict):
        raise _Invalid(f"{what} is not a JSON object")
    if fields is not None and set(value) != fields:
        raise _Invalid(f"{what}'s fields are not {', '.join(sorted(fields))}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(f"{what} is not a JSON array")
    if len(value) > MAX_ENTRIES:
        raise _Invalid(f"{what} has more than {MAX_ENTRIES} items")
    return value


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{key} is not text")
    return value


def _number(value: Any, what: str, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value <= MAX_SIZE:
        raise _Invalid(f"{what} is not a whole number from {minimum} to 2**63-1")
    return value


def _count(data: Mapping[str, Any], key: str, minimum: int = 1) -> int:
    return _number(data.get(key), key, minimum)


def _hex(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise _Invalid(f"{key} is not 64 lowercase hexadecimal characters")
    return value


def _digest(data: Mapping[str, Any], key: str) -> bytes:
    return bytes.fromhex(_hex(data, key))


def _hash(value: Any, what: str) -> bytes:
    return bytes.fromhex(_hex({what: value}, what))


def load_verifier(text: bytes) -> Any:
    """An Ed25519 public key from a PEM file's bytes, or a :class:`NoteVerifier` from a vkey (one line of text)."""
    stripped = text.strip()
    if stripped.startswith(b"-----BEGIN"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        key = serialization.load_pem_public_key(stripped)
        if not isinstance(key, Ed25519PublicKey):
            raise NoteError("the PEM key is not an Ed25519 public key")
        return key
    try:
        return NoteVerifier.from_vkey(stripped.decode())
    except UnicodeDecodeError:
        raise NoteError("the key is neither a PEM public key nor a vkey") from None
