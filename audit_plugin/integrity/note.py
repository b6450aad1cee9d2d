"""Signed notes and tlog checkpoints, as C2SP specifies them (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

A *signed note* is UTF-8 text ending in a newline, a blank line, and one
signature line per signer::

    example.com/audit          <- the text: here a checkpoint's body
    1042
    N2pY...base64 root...=

    — example.com/audit Az3g...base64(key ID || Ed25519 signature)...

The signature covers the text (its final newline included). A signer is
named (the *key name*) and identified by a 4-byte *key ID*,
``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` for Ed25519 (signature
type ``0x01``). A *verifier key* (vkey) is the text
``name+hex(key ID)+base64(0x01 || public key)``: everything a checker needs.

A *checkpoint* is a note whose text is a Merkle tree head: the log's
*origin* line, the tree size in decimal, the root hash in base64, and
optional extension lines.

Parsing here is strict (hostile input is expected: a proof bundle comes from
whoever hands it over) and raises :class:`NoteError` with a one-line reason.
Ed25519 comes from ``cryptography`` (the ``crypto`` extra), imported when a
key is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from audit_plugin.integrity.merkle import HASH_SIZE

SIGNATURE_TYPE_ED25519 = 0x01
EM_DASH = "\u2014"
MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 64
"""More than signed-note's minimum of 16: a checkpoint with cosignatures still parses."""
MAX_SIZE = (1 << 63) - 1
"""The largest tree size accepted (sizes are SQL BIGINTs)."""


class NoteError(ValueError):
    """A note, checkpoint or key that does not follow the format (the message says what is wrong)."""


def check_name(name: object, what: str = "key name") -> str:
    """A note key name or origin: non-empty text without spaces, ``+`` or control characters."""
    if not isinstance(name, str) or not name:
        raise NoteError(f"{what} must be non-empty text")
    if len(name.encode()) > 255:
        raise NoteError(f"{what} is longer than 255 bytes")
    if "+" in name or any(character.isspace() or not character.isprintable() for character in name):
        raise NoteError(f"{what} {name!r} must have no spaces, '+' or control characters")
    return name


def _raw_public_key(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # type: ignore[no-any-return]


def key_id(name: str, public_key: Any) -> bytes:
    """The 4-byte key ID of an Ed25519 public key under ``name``."""
    material = name.encode() + b"\n" + bytes([SIGNATURE_TYPE_ED25519]) + _raw_public_key(public_key)
    return hashlib.sha256(material).digest()[:4]


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A named Ed25519 public key that checks note signatures (a vkey)."""

    name: str
    public_key: Any
    """An ``Ed25519PublicKey``."""

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def vkey(self) -> str:
        """This key as a C2SP verifier key: ``name+hex(key ID)+base64(0x01 || key)``."""
        material = bytes([SIGNATURE_TYPE_ED25519]) + _raw_public_key(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(material).decode()}"

    @classmethod
    def from_vkey(cls, text: str) -> NoteVerifier:
        """Parse a verifier key (only Ed25519 ones: signature type 0x01)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        parts = text.strip().split("+")
        if len(parts) != 3:
            raise NoteError("a verifier key is name+keyid+key (three parts separated by '+')")
        name, hex_id, encoded = parts
        check_name(name)
        material = _b64(encoded, "the verifier key")
        if len(material) != 33 or material[0] != SIGNATURE_TYPE_ED25519:
            raise NoteError("the verifier key is not an Ed25519 key (type 0x01 and 32 bytes)")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(material[1:]))
        if hex_id.lower() != verifier.key_id.hex():
            raise NoteError("the verifier key's ID does not match its name and key")
        return verifier


def _b64(text: str, what: str) -> bytes:
    try:
        decoded = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what} is not base64") from None
    if base64.b64encode(decoded).decode() != text:
        raise NoteError(f"{what} is not canonical base64")
    return decoded


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A parsed signed note: its ``text`` (ending in a newline) and its signature lines."""

    text: str
    signatures: tuple[Signature, ...]

    def __str__(self) -> str:
        return (
            self.text
            + "\n"
            + "".join(
                f"{EM_DASH} {s.name} {base64.b64encode(s.key_id + s.signature).decode()}\n" for s in self.signatures
            )
        )

    def signed_by(self, verifier: NoteVerifier) -> bool:
        """True if a signature line of ``verifier`` (name and key ID) verifies; False if none does or one fails.

        Signatures of other keys are ignored, as signed-note says.
        """
        from cryptography.exceptions import InvalidSignature

        wanted = verifier.key_id
        found = False
        for signature in self.signatures:
            if signature.name != verifier.name or signature.key_id != wanted:
                continue
            try:
                verifier.public_key.verify(signature.signature, self.text.encode())
            except InvalidSignature:
                return False
            found = True
        return found


def sign(text: str, name: str, private_key: Any) -> SignedNote:
    """``text`` signed with an ``Ed25519PrivateKey`` under key ``name``."""
    check_name(name)
    check_text(text)
    identity = key_id(name, private_key.public_key())
    return SignedNote(text, (Signature(name, identity, private_key.sign(text.encode())),))


def check_text(text: str) -> None:
    if not text.endswith("\n") or "\n\n" in "\n" + text:
        raise NoteError("a note's text must end in a newline and have no empty line")
    if any(character < " " and character != "\n" for character in text):
        raise NoteError("a note must have no control characters other than newlines")


def parse(note: object) -> SignedNote:
    """Parse a signed note's text form (strictly: one reason on the first deviation)."""
    if not isinstance(note, str):
        raise NoteError("the note must be text")
    if len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise NoteError("the note is larger than 1 MiB")
    try:
        note.encode()
    except UnicodeEncodeError:
        raise NoteError("the note is not valid UTF-8") from None
    if any(character < " " and character != "\n" for character in note):
        raise NoteError("the note has control characters other than newlines")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("the note has no signature block (a blank line, then signature lines)")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        prefix, _, rest = line.partition(" ")
        name, _, encoded = rest.partition(" ")
        if prefix != EM_DASH or not encoded or " " in encoded:
            raise NoteError("a signature line is not '— name base64'")
        check_name(name)
        raw = _b64(encoded, "a signature")
        if len(raw) < 5:
            raise NoteError("a signature is shorter than a key ID and a signature")
        signatures.append(Signature(name, raw[:4], raw[4:]))
    return SignedNote(text, tuple(signatures))


# -- checkpoints (tlog-checkpoint's note text) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckpointBody:
    """A tree head as a checkpoint's text states it."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> CheckpointBody:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint's text is an origin, a size and a root hash, one per line")
        origin, size, root, *extensions = lines[:-1]
        check_name(origin, "the checkpoint's origin")
        if not size.isascii() or not size.isdigit() or (size != "0" and size.startswith("0")) or len(size) > 19:
            raise NoteError("the checkpoint's tree size is not a decimal number without leading zeros")
        if int(size) > MAX_SIZE:
            raise NoteError("the checkpoint's tree size is too large")
        digest = _b64(root, "the checkpoint's root hash")
        if len(digest) != HASH_SIZE:
            raise NoteError("the checkpoint's root hash is not 32 bytes")
        if any(not line for line in extensions):
            raise NoteError("a checkpoint's extension line is empty")
        return cls(origin, int(size), digest, tuple(extensions))
