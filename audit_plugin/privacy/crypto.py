"""Encryption at rest (opt-in): AES-256-GCM per data subject, keys wrapped by a master key.

Each data subject gets its own random 256-bit data key. Data keys are stored
in ``message_audit_keys`` only wrapped (encrypted) by a master key that a
:class:`KeyProvider` holds outside the database; :class:`LocalKeyFileProvider`
keeps it in a file. A payload is stored as an envelope::

    {"$audit": "encrypted", "alg": "A256GCM", "kid": "<data key id>", "nonce": "<b64>", "ct": "<b64>"}

The associated data binds the ciphertext to its ``message_id`` (and key id),
so a ciphertext moved to another row fails to decrypt. Erasing a subject
destroys its wrapped keys (crypto-shredding): the ciphertext stays, and with
it the hash chain, but nobody can read it.

Requires the ``cryptography`` package: ``pip install 'audit-plugin[crypto]'``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from audit_plugin.exceptions import EncryptionError
from audit_plugin.model import validation as v
from audit_plugin.model.markers import MARKER_KEY
from audit_plugin.model.messages import Message
from audit_plugin.model.records import AuditRecord
from audit_plugin.storage.backend import KeyStore
from audit_plugin.storage.keystore import StoredKey

SUBJECT_HEADER = "audit-subject"
"""Message header naming the data subject; without it the subject is ``from_agent``."""

ALGORITHM = "A256GCM"
_PAYLOAD_AD = b"audit-plugin/payload/v1\x00"
_DATA_KEY_AD = b"audit-plugin/data-key/v1\x00"
_KEY_CACHE_LIMIT = 4096

SubjectResolver = Callable[[Message], str]


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - exercised only without the extra installed
        raise EncryptionError("encryption needs the cryptography package: pip install 'audit-plugin[crypto]'") from None
    return AESGCM(key)


@runtime_checkable
class KeyProvider(Protocol):
    """Holds the master key and wraps/unwraps data keys with it.

    ``context`` is associated data the wrapping must be bound to (the data
    key id and subject id): unwrapping with another context must fail. A KMS
    or HSM provider implements the same three members.
    """

    @property
    def key_id(self) -> str:
        """A stable, non-secret id of the master key (stored with each wrapped key)."""
        ...

    def wrap_key(self, data_key: bytes, context: bytes) -> bytes: ...

    def unwrap_key(self, wrapped: bytes, context: bytes) -> bytes: ...


class LocalKeyFileProvider:
    """A master key kept in a local file (32 random bytes, base64), created with mode 0600 if missing.

    Keep the file out of the database's backups: whoever holds both can read
    every unerased payload.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise EncryptionError(f"master key file {self.path} does not exist")
            self._write_new_key()
        try:
            key = base64.b64decode(self.path.read_text().strip(), validate=True)
        except (ValueError, OSError) as exc:
            raise EncryptionError(f"cannot read master key file {self.path}: {exc}") from None
        if len(key) != 32:
            raise EncryptionError(f"master key file {self.path} must hold 32 bytes (base64), found {len(key)}")
        self._cipher = _aesgcm(key)
        self._key_id = hashlib.sha256(b"audit-plugin/master-key-id\x00" + key).hexdigest()[:32]

    def _write_new_key(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap_key(self, data_key: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._cipher.encrypt(nonce, data_key, context)

    def unwrap_key(self, wrapped: bytes, context: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._cipher.decrypt(wrapped[:12], wrapped[12:], context)
        except InvalidTag:
            raise EncryptionError("a data key failed to unwrap: wrong master key or tampered key row") from None


def default_subject(message: Message) -> str:
    """The ``audit-subject`` header if the sender set one, else ``from_agent``."""
    return message.headers.get(SUBJECT_HEADER) or message.from_agent


def _key_context(key_id: str, subject_id: str) -> bytes:
    return _DATA_KEY_AD + key_id.encode() + b"\x00" + subject_id.encode("utf-8")


def _payload_ad(message_id: str, key_id: str) -> bytes:
    return _PAYLOAD_AD + message_id.encode("utf-8") + b"\x00" + key_id.encode()


def is_envelope(payload: object) -> bool:
    return (
        isinstance(payload, dict)
        and payload.get(MARKER_KEY) == "encrypted"
        and isinstance(payload.get("ct"), str)
        and isinstance(payload.get("kid"), str)
    )


class PayloadSealer:
    """Encrypts payload text for a subject's current data key (creating the key on first use)."""

    def __init__(self, provider: KeyProvider, keys: KeyStore, subject_of: SubjectResolver = default_subject) -> None:
        if not isinstance(provider, KeyProvider):
            raise v.FieldTypeError("key_provider", "a KeyProvider (key_id, wrap_key, unwrap_key)", provider)
        self.provider = provider
        self.keys = keys
        self.subject_of = subject_of
        self._current: dict[str, tuple[str, Any]] = {}

    def subject(self, message: Message) -> str:
        subject = self.subject_of(message)
        v.check_text("subject_id", subject)
        return subject

    def has_key(self, message: Message) -> bool:
        return self.subject(message) in self._current

    async def ensure_key(self, message: Message) -> None:
        """Load (or create and store) the subject's data key, so :meth:`seal` can run without waiting."""
        subject = self.subject(message)
        if subject in self._current:
            return
        stored = await self.keys.live_key(subject, self.provider.key_id)
        if stored is not None and stored.wrapped_key is not None:
            data_key = self.provider.unwrap_key(stored.wrapped_key, _key_context(stored.key_id, subject))
            key_id = stored.key_id
        else:
            key_id, data_key = uuid.uuid4().hex, secrets.token_bytes(32)
            wrapped = self.provider.wrap_key(data_key, _key_context(key_id, subject))
            await self.keys.add(key_id, subject, self.provider.key_id, wrapped)
        if len(self._current) >= _KEY_CACHE_LIMIT:
            self._current.clear()
        self._current[subject] = (key_id, _aesgcm(data_key))

    def seal(self, message: Message, text: str) -> str:
        subject = self.subject(message)
        try:
            key_id, cipher = self._current[subject]
        except KeyError:
            raise EncryptionError(f"no data key loaded for subject {subject!r}; await ensure_key() first") from None
        nonce = secrets.token_bytes(12)
        ciphertext = cipher.encrypt(nonce, text.encode("utf-8"), _payload_ad(message.message_id, key_id))
        envelope = {
            MARKER_KEY: "encrypted",
            "alg": ALGORITHM,
            "kid": key_id,
            "nonce": base64.b64encode(nonce).decode(),
            "ct": base64.b64encode(ciphertext).decode(),
        }
        return v.encode_json(envelope)

    def forget(self, subject_id: str) -> None:
        self._current.pop(subject_id, None)


class PayloadOpener:
    """Replaces envelopes in read records: decrypted payloads, or a marker saying why not.

    Markers: ``{"$audit": "erased", "subject_id", "erased_at"}`` for a
    crypto-shredded subject; ``{"$audit": "encrypted", "kid"}`` when the trail
    has no key provider (or another master key); ``{"$audit": "unreadable",
    "kid", "reason"}`` when authentication fails (tampered ciphertext, or a
    ciphertext moved to another message).

    Keys are looked up once per call (per stream), never cached across
    calls, so an erasure made by another process is honoured at once.
    """

    def __init__(self, provider: KeyProvider | None, keys: KeyStore | None) -> None:
        self.provider = provider
        self.keys = keys
        self._ciphers: dict[str, Any] = {}
        self._stored: dict[str, StoredKey | None] = {}

    async def open_all(self, records: Iterable[AuditRecord]) -> list[AuditRecord]:
        records = list(records)
        wanted = {r.payload["kid"] for r in records if is_envelope(r.payload)} - self._stored.keys()
        if wanted and self.keys is not None:
            found = await self.keys.load(wanted)
            self._stored.update({key_id: found.get(key_id) for key_id in wanted})
        return [self._open(record) if is_envelope(record.payload) else record for record in records]

    def _open(self, record: AuditRecord) -> AuditRecord:
        return replace(record, payload=self._decrypt(record.message_id, record.payload))

    def _decrypt(self, message_id: str, envelope: dict[str, Any]) -> dict[str, Any]:
        key_id = envelope["kid"]
        stored = self._stored.get(key_id)
        if stored is not None and stored.wrapped_key is None:
            erased_at = stored.erased_at.isoformat() if stored.erased_at else None
            return {MARKER_KEY: "erased", "subject_id": stored.subject_id, "erased_at": erased_at}
        if stored is None or self.provider is None or stored.master_key_id != self.provider.key_id:
            return {MARKER_KEY: "encrypted", "kid": key_id}
        from cryptography.exceptions import InvalidTag

        try:
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                assert stored.wrapped_key is not None
                data_key = self.provider.unwrap_key(stored.wrapped_key, _key_context(key_id, stored.subject_id))
                cipher = self._ciphers[key_id] = _aesgcm(data_key)
            nonce = base64.b64decode(envelope["nonce"])
            ciphertext = base64.b64decode(envelope["ct"])
            plaintext = cipher.decrypt(nonce, ciphertext, _payload_ad(message_id, key_id))
        except (InvalidTag, EncryptionError, ValueError, KeyError) as exc:
            reason = "authentication failed" if isinstance(exc, InvalidTag) else str(exc) or type(exc).__name__
            return {MARKER_KEY: "unreadable", "kid": key_id, "reason": reason}
        return json.loads(plaintext)
