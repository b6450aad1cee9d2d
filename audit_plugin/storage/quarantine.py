"""Quarantine: transport messages an ingester could not store, kept in the store beside the records.

A message on a transport (a JetStream stream) that does not decode as
operations, fails a check, or whose carried digest does not match what it
holds, is neither written nor dropped: its bytes go into
``message_audit_quarantine`` with where it came from and why, and only then
is it taken off the transport. ``verify()`` and ``audit-plugin ingest``
report how many are held; an operator reads them (``SELECT ... FROM
message_audit_quarantine``), fixes what produced them, and can publish them
again.

Each message is kept once: ``(source, position)`` is unique (the stream and
the message's sequence number in it), so a message quarantined again after a
crash between its insert and its removal from the stream is not doubled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_plugin.storage.schema import UTCDateTime, metadata

QUARANTINE_TABLE = "message_audit_quarantine"

quarantine_table = Table(
    QUARANTINE_TABLE,
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("source", String(1024), nullable=False),
    Column("position", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Index("idx_quarantine_position", "source", "position", unique=True),
)


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    """A transport message an ingester refused: where it was, why, and its bytes as they arrived."""

    source: str
    """The transport it came from, without credentials (``nats://host:4222/<stream>``)."""
    position: str
    """Where in the source (``stream sequence 1234, subject audit.ops.0``): unique within the source."""
    reason: str
    body: bytes


async def keep(conn: AsyncConnection, messages: Sequence[QuarantinedMessage]) -> None:
    """Insert ``messages`` (one already kept, by source and position, is left as it is)."""
    now = datetime.now(UTC)
    for message in messages:
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(quarantine_table).values(
                        received_at=now,
                        source=message.source,
                        position=message.position,
                        reason=message.reason,
                        body=message.body,
                    )
                )
        except IntegrityError:
            pass  # kept by an earlier delivery of the same message


async def quarantined_count(conn: AsyncConnection) -> int:
    """How many messages are held."""
    return int(await conn.scalar(select(func.count()).select_from(quarantine_table)) or 0)
