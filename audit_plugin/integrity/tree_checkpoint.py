"""Signed tree checkpoints (checkpoint format 2): every chain's Merkle tree head, in one C2SP signed note.

Each chain (one per trail today; one per shard in a sharded trail) has its
own Merkle tree over its lifecycle entries (:mod:`audit_plugin.integrity.tiles`);
its *tree head* is ``(chain_id, first_sequence, size, root)``: leaf ``i`` is
the entry numbered ``first_sequence + i``. A checkpoint commits to the heads
of all the chains of the store at once, as a tlog checkpoint (see
:mod:`audit_plugin.integrity.note`) whose tree is:

* with **one chain**, that chain's tree: the note is a plain C2SP tlog
  checkpoint (size and root of the chain's tree), which any tlog tool checks;
* with **several chains**, the *heads tree*: a Merkle tree (the same RFC 9162
  hashing) whose leaves are the chains' heads in ``chain_id`` order, each
  ``HEAD_TAG || chain_id || 0x00 || first_sequence || 0x00 || size || 0x00 ||
  root``; the note's size is the number of chains. An entry's proof is then
  two proofs: the entry in its chain's tree, the chain's head in the heads tree.

The heads tree is not append-only (a chain's leaf changes as the chain grows),
so a note in the second form is not one for tlog witnesses; the log's growth
is shown per chain, by consistency proofs between the heads of consecutive
checkpoints (``audit-plugin checkpoints``).

Checkpoint format 1 is :class:`~audit_plugin.integrity.checkpoint.Checkpoint`
(one chain's last entry and its hash, JSON), still written and read by
``trail.checkpoint()`` and ``verify --checkpoint``: it pins the chain for a
holder of the database; format 2 lets anyone check single entries.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.integrity import merkle
from audit_plugin.integrity.note import CheckpointBody, NoteVerifier, SignedNote, check_name, parse, sign
from audit_plugin.model import validation as v

CHECKPOINT_FORMAT = 2
HEAD_TAG = b"audit-plugin/chain-head\x00v1\x00"
DEFAULT_ORIGIN = "audit-plugin/trail"
"""The origin (and key name) of checkpoints when none is configured: name your log (``example.com/audit``)."""


@dataclass(frozen=True, slots=True)
class TreeHead:
    """One chain's Merkle tree at a size: leaf ``i`` is the chain's entry numbered ``first_sequence + i``."""

    chain_id: str
    size: int
    root: bytes
    first_sequence: int = 1

    def leaf(self) -> bytes:
        """This head as a leaf of the heads tree (see the module)."""
        text = f"{self.chain_id}\x00{self.first_sequence}\x00{self.size}\x00".encode()
        return HEAD_TAG + text + self.root

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "first_sequence": self.first_sequence,
            "size": self.size,
            "root": self.root.hex(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> TreeHead:
        return cls(data["chain_id"], int(data["size"]), bytes.fromhex(data["root"]), int(data["first_sequence"]))


def tree_of_heads(heads: Sequence[TreeHead]) -> tuple[int, bytes]:
    """The size and root a checkpoint of ``heads`` (sorted by chain id) states: see the module."""
    if len(heads) == 1:
        return heads[0].size, heads[0].root
    return len(heads), merkle.root_of([merkle.leaf_hash(head.leaf()) for head in heads])


@dataclass(frozen=True, slots=True)
class TreeCheckpoint:
    """A signed checkpoint of every chain's tree head (format 2), as stored and handed out.

    ``note`` is the signed note, verbatim; ``heads`` the chains' heads it
    commits to (sorted by chain id); ``at`` when it was taken (the store's
    clock: not signed); ``timestamp`` an RFC 3161 time-stamp response over
    the note, if one was obtained; ``id`` its number in the store.
    """

    note: str
    heads: tuple[TreeHead, ...]
    at: datetime
    timestamp: bytes | None = None
    id: int | None = None
    _parsed: SignedNote = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parsed", parse(self.note))

    @classmethod
    def take(
        cls, heads: Iterable[TreeHead], signing_key: Any, origin: str = DEFAULT_ORIGIN, at: datetime | None = None
    ) -> TreeCheckpoint:
        """Sign the heads with an ``Ed25519PrivateKey``; the key name in the signature line is ``origin``."""
        ordered = tuple(sorted(heads, key=lambda head: head.chain_id))
        size, root = tree_of_heads(ordered)
        body = CheckpointBody(check_name(origin, "origin"), size, root)
        return cls(str(sign(body.text(), origin, signing_key)), ordered, at or datetime.now(UTC))

    @property
    def body(self) -> CheckpointBody:
        return CheckpointBody.parse(self._parsed.text)

    @property
    def origin(self) -> str:
        return self.body.origin

    def signed_by(self, verifier: NoteVerifier | Any) -> bool:
        """True if the note carries a valid signature of ``verifier``.

        ``verifier`` is a :class:`~audit_plugin.integrity.note.NoteVerifier`
        (a vkey), or a bare ``Ed25519PublicKey``, whose key name is then the
        checkpoint's origin (as the trail signs).
        """
        if not isinstance(verifier, NoteVerifier):
            verifier = NoteVerifier(self.origin, verifier)
        return self._parsed.signed_by(verifier)

    def states_heads(self) -> bool:
        """True if the note's size and root are those of :attr:`heads` (the stored heads were not altered)."""
        body = self.body
        return (body.size, body.root) == tree_of_heads(self.heads)

    def head(self, chain_id: str) -> TreeHead | None:
        return next((head for head in self.heads if head.chain_id == chain_id), None)

    def head_proof(self, chain_id: str) -> tuple[int, list[bytes]] | None:
        """The inclusion proof of ``chain_id``'s head in the heads tree: ``(index, proof)``; ``None`` with one chain."""
        if len(self.heads) == 1:
            return None
        leaves = [merkle.leaf_hash(head.leaf()) for head in self.heads]
        index = next(i for i, head in enumerate(self.heads) if head.chain_id == chain_id)
        return index, merkle.inclusion_proof(index, len(leaves), merkle.list_range_hash(leaves))

    def with_timestamp(self, token: bytes) -> TreeCheckpoint:
        return replace(self, timestamp=token)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "note": self.note,
            "heads": [head.to_dict() for head in self.heads],
            "at": self.at.isoformat(),
            "timestamp": base64.b64encode(self.timestamp).decode() if self.timestamp else None,
        }


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When a trail signs and stores checkpoints by itself: every ``every`` seconds the tree grew, and at close.

    :param signing_key: the log's ``Ed25519PrivateKey``.
    :param origin: the log's name: the checkpoint's origin line and key name.
    :param every: seconds between checkpoints (0: only at close).
    :param tsa_url: an RFC 3161 time-stamp authority to time-stamp each one (needs the ``tsa`` extra).
    """

    signing_key: Any
    origin: str = DEFAULT_ORIGIN
    every: float = 3600.0
    tsa_url: str | None = None

    def __post_init__(self) -> None:
        check_signing_key(self.signing_key)
        check_origin(self.origin)
        v.check_seconds("every", self.every)
        v.check_text("tsa_url", self.tsa_url, optional=True)


def check_signing_key(key: object) -> Any:
    """``key`` if it can sign (an ``Ed25519PrivateKey``), else a typed error naming ``signing_key``."""
    if not callable(getattr(key, "sign", None)) or not callable(getattr(key, "public_key", None)):
        raise v.FieldTypeError("signing_key", "Ed25519PrivateKey", key)
    return key


def check_origin(origin: object) -> str:
    """``origin`` if it can name a log (a note key name: no spaces, no ``+``), else an error naming ``origin``."""
    try:
        return check_name(origin, "origin")
    except ValueError as exc:
        raise InvalidFieldError("origin", str(exc)) from None
