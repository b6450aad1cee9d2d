"""SQL storage of wrapped per-subject data keys (table ``message_audit_keys``).

Implements :class:`~audit_plugin.storage.backend.KeyStore` for every SQL backend;
database errors leave it as :class:`~audit_plugin.exceptions.AuditStoreError`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_plugin.storage.errors import store_errors
from audit_plugin.storage.integrity_schema import subject_keys

k = subject_keys.c


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One data key as stored: ``wrapped_key`` is ``None`` once the subject was erased."""

    key_id: str
    subject_id: str
    master_key_id: str
    wrapped_key: bytes | None
    erased_at: datetime | None


class SubjectKeyStore:
    """Reads and writes wrapped data keys through the trail's SQL engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def live_key(self, subject_id: str, master_key_id: str) -> StoredKey | None:
        """The newest unerased key of ``subject_id`` wrapped by ``master_key_id``, if any."""
        stmt = (
            select(subject_keys)
            .where(k.subject_id == subject_id, k.master_key_id == master_key_id, k.erased_at.is_(None))
            .order_by(k.created_at.desc(), k.key_id.desc())
            .limit(1)
        )
        with store_errors("reading a data key"):
            async with self.engine.connect() as conn:
                row = (await conn.execute(stmt)).mappings().first()
        return _stored(row) if row is not None else None

    async def add(self, key_id: str, subject_id: str, master_key_id: str, wrapped_key: bytes) -> None:
        stmt = insert(subject_keys).values(
            key_id=key_id,
            subject_id=subject_id,
            master_key_id=master_key_id,
            wrapped_key=wrapped_key,
            created_at=datetime.now(UTC),
        )
        with store_errors("storing a data key"):
            async with self.engine.begin() as conn:
                await conn.execute(stmt)

    async def load(self, key_ids: Collection[str]) -> dict[str, StoredKey]:
        if not key_ids:
            return {}
        with store_errors("reading data keys"):
            async with self.engine.connect() as conn:
                rows = (await conn.execute(select(subject_keys).where(k.key_id.in_(list(key_ids))))).mappings()
                return {row["key_id"]: _stored(row) for row in rows}

    async def erase(self, subject_id: str) -> int:
        """Destroy every wrapped key of ``subject_id``; return how many were destroyed."""
        stmt = (
            update(subject_keys)
            .where(k.subject_id == subject_id, k.erased_at.is_(None))
            .values(wrapped_key=None, erased_at=datetime.now(UTC))
        )
        with store_errors("erasing data keys"):
            async with self.engine.begin() as conn:
                return int((await conn.execute(stmt)).rowcount or 0)


def _stored(row: object) -> StoredKey:
    return StoredKey(
        key_id=row["key_id"],  # type: ignore[index]
        subject_id=row["subject_id"],  # type: ignore[index]
        master_key_id=row["master_key_id"],  # type: ignore[index]
        wrapped_key=row["wrapped_key"],  # type: ignore[index]
        erased_at=row["erased_at"],  # type: ignore[index]
    )
