"""Checkpoints: the chain's head, to be kept outside the database, optionally Ed25519-signed.

A hash chain alone proves that entries were not changed *relative to each
other*. It cannot show that the newest entries were cut off, or that the
whole chain was recomputed from scratch: a chain that was truncated or
rewritten is still a valid chain. A checkpoint kept elsewhere (a ticket, a
WORM bucket, another database, a signed e-mail) pins the head at a moment:
``trail.verify(against=checkpoint)`` then fails if the entry at that sequence
is missing or has another hash.

Signed form: ``Ed25519(b"audit-plugin/checkpoint\\x00v1\\x00" + chain_id + b"\\x00" +
str(sequence) + b"\\x00" + hash + b"\\x00" + at)`` with ``at`` the UTC ISO time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from audit_plugin.exceptions import ChainError, InvalidFieldError
from audit_plugin.integrity.chain import iso_utc
from audit_plugin.model import validation as v

_SIGNED_TAG = b"audit-plugin/checkpoint\x00v1\x00"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The head of a chain at time ``at``: ``sequence`` and its ``hash`` (hex); ``signature`` hex or ``None``."""

    chain_id: str
    sequence: int
    hash: str
    at: datetime
    signature: str | None = None

    def signed_bytes(self) -> bytes:
        text = f"{self.chain_id}\x00{self.sequence}\x00{self.hash}\x00{iso_utc(self.at)}"
        return _SIGNED_TAG + text.encode()

    def signed(self, private_key: Any) -> Checkpoint:
        """A copy signed with an ``Ed25519PrivateKey`` (from ``cryptography``)."""
        return replace(self, signature=private_key.sign(self.signed_bytes()).hex())

    def signature_valid(self, public_key: Any) -> bool:
        """True if ``signature`` was made by the private half of ``public_key`` (an ``Ed25519PublicKey``)."""
        from cryptography.exceptions import InvalidSignature

        if self.signature is None:
            return False
        try:
            public_key.verify(bytes.fromhex(self.signature), self.signed_bytes())
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_json(self) -> str:
        data = asdict(self)
        data["at"] = iso_utc(self.at)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        try:
            data = json.loads(text)
            checkpoint = cls(
                chain_id=data["chain_id"],
                sequence=data["sequence"],
                hash=data["hash"],
                at=datetime.fromisoformat(data["at"].replace("Z", "+00:00")),
                signature=data.get("signature"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidFieldError("checkpoint", f"is not a checkpoint in JSON form: {exc}") from None
        v.check_int("checkpoint.sequence", checkpoint.sequence, minimum=0)
        if not isinstance(checkpoint.hash, str) or len(checkpoint.hash) != 64:
            raise InvalidFieldError("checkpoint.hash", "must be 64 hexadecimal characters")
        return checkpoint


def require_checkpoint(value: object, chain_id: str) -> Checkpoint:
    if not isinstance(value, Checkpoint):
        raise v.FieldTypeError("against", "Checkpoint", value)
    if value.chain_id != chain_id:
        raise ChainError(f"checkpoint is of chain {value.chain_id!r}, this trail writes chain {chain_id!r}")
    return value
