"""The trail's payload protection in one place: capture on write, open on read, erase on request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace

import pluggy

from audit_plugin.exceptions import EncryptionError
from audit_plugin.model import validation as v
from audit_plugin.model.access import Role
from audit_plugin.model.markers import MARKER_KEY
from audit_plugin.model.messages import Message
from audit_plugin.model.records import AuditRecord
from audit_plugin.privacy.capture import PayloadCapture, PayloadPolicy
from audit_plugin.privacy.crypto import (
    KeyProvider,
    PayloadOpener,
    PayloadSealer,
    SubjectResolver,
    default_subject,
    is_envelope,
)
from audit_plugin.privacy.redaction import masked_values
from audit_plugin.storage.backend import AuditBackend, SupportsSubjectKeys


class PayloadProtection:
    """Redaction, limits and (opt-in) encryption of payloads for one trail.

    :param manager: the trail's plugin manager (``audit_redact`` rules).
    :param backend: the trail's backend; encryption and erasure need one that keeps data keys
        (:class:`~audit_plugin.storage.backend.SupportsSubjectKeys`).
    :param policy: size cap, depth limit, redacted field names.
    :param key_provider: encrypt payloads at rest with per-subject keys wrapped
        by this provider's master key (``None``: store payloads in clear).
    :param subject_of: maps a message to its data subject id (default: the
        ``audit-subject`` header, else ``from_agent``).
    """

    def __init__(
        self,
        manager: pluggy.PluginManager,
        backend: AuditBackend,
        policy: PayloadPolicy | None = None,
        key_provider: KeyProvider | None = None,
        subject_of: SubjectResolver | None = None,
    ) -> None:
        if policy is not None and not isinstance(policy, PayloadPolicy):
            raise v.FieldTypeError("payload_policy", "PayloadPolicy", policy)
        if subject_of is not None and not callable(subject_of):
            raise v.FieldTypeError("subject_of", "a callable taking a Message", subject_of)
        self.keys = backend.subject_keys() if isinstance(backend, SupportsSubjectKeys) else None
        self.backend_name = backend.name
        self.key_provider = key_provider
        self.sealer: PayloadSealer | None = None
        if key_provider is not None:
            if self.keys is None:
                raise EncryptionError(
                    f"encryption at rest needs a store that keeps data keys; {backend.name!r} does not"
                )
            self.sealer = PayloadSealer(key_provider, self.keys, subject_of or default_subject)
        self.capture = PayloadCapture(manager, policy or PayloadPolicy(), self.sealer)

    def ready(self, message: Message) -> bool:
        """True if ``message``'s payload can be encoded now (no data key has to be loaded or stored first)."""
        return self.sealer is None or self.sealer.has_key(message)

    async def prepare(self, message: Message) -> None:
        """Load or create the data key ``message`` will be encrypted with."""
        if self.sealer is not None:
            await self.sealer.ensure_key(message)

    async def open(self, records: Iterable[AuditRecord]) -> list[AuditRecord]:
        """``records`` with encrypted payloads decrypted, or replaced by a marker saying why not."""
        return await PayloadOpener(self.key_provider, self.keys).open_all(records)

    async def open_stream(self, records: AsyncIterator[AuditRecord]) -> AsyncIterator[AuditRecord]:
        opener = PayloadOpener(self.key_provider, self.keys)
        async for record in records:
            [opened] = await opener.open_all([record])
            yield opened

    async def open_as(self, records: Sequence[AuditRecord], role: Role) -> tuple[list[AuditRecord], list[str]]:
        """``records`` as ``role`` sees them, and the ids of those whose payload was decrypted for it.

        A reader's payloads are never decrypted: their values are masked
        (:func:`~audit_plugin.privacy.redaction.masked_values`).
        """
        if not role.may_decrypt:
            return [replace(record, payload=masked_values(record.payload)) for record in records], []
        opened = await self.open(records)
        decrypted = [
            after.message_id
            for before, after in zip(records, opened, strict=True)
            if is_envelope(before.payload) and MARKER_KEY not in after.payload
        ]
        return opened, decrypted

    async def open_stream_as(
        self, records: AsyncIterator[AuditRecord], role: Role
    ) -> AsyncIterator[tuple[AuditRecord, bool]]:
        """Each of ``records`` as ``role`` sees it, with whether its payload was decrypted (one key lookup each)."""
        opener = PayloadOpener(self.key_provider, self.keys)
        async for record in records:
            if not role.may_decrypt:
                yield replace(record, payload=masked_values(record.payload)), False
                continue
            [opened] = await opener.open_all([record])
            yield opened, is_envelope(record.payload) and MARKER_KEY not in opened.payload

    async def erase_subject(self, subject_id: str) -> int:
        """Destroy ``subject_id``'s data keys; return how many were destroyed."""
        v.check_text("subject_id", subject_id)
        if self.keys is None:
            raise EncryptionError(f"erasure needs a store that keeps data keys; {self.backend_name!r} does not")
        if self.sealer is not None:
            self.sealer.forget(subject_id)
        return await self.keys.erase(subject_id)
