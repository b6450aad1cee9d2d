"""The ``message_audit_log`` table, shared by every SQL backend.

``MessageAuditLog`` is a SQLAlchemy declarative model, so it works with the ORM
too; the trail itself uses ``audit_log`` (its ``Table``) with Core statements.
The payload column holds JSON text, kept verbatim (the hash chain hashes
it as stored): ``json`` on PostgreSQL, ``TEXT`` on SQLite. Engines made by
the backends pass that text through unchanged in both directions (it is
serialised and checked once, before it is queued). Databases created by
earlier versions may hold ``jsonb`` on PostgreSQL, which works the same except
for the hash format (see :func:`audit_plugin.storage.integrity_schema.payload_text_kept`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Connection, DateTime, Index, Integer, MetaData, String, Table, Text, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateIndex, DropIndex
from sqlalchemy.types import TypeDecorator

TABLE_NAME = "message_audit_log"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones, so values are
    stored as naive UTC text (which sorts correctly) and come back aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


PayloadJSON = JSON(none_as_null=True)


def json_text_passthrough(value: object) -> str:
    """Engine ``json_serializer``: payloads arrive already serialised as text."""
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def json_text_identity(value: str) -> str:
    """Engine ``json_deserializer``: return the stored JSON text undecoded."""
    return value


class Base(DeclarativeBase):
    metadata = MetaData()


ID_TYPE = String(1024).with_variant(String(1024, collation="C"), "postgresql")
"""Ids compare byte by byte on PostgreSQL (as SQLite's ``BINARY`` does): the primary key and the correlation
index then serve "the id starts with" as a range, whatever the database's collation."""


class MessageAuditLog(Base):
    """One row per message: its envelope, payload and current status."""

    __tablename__ = TABLE_NAME

    message_id: Mapped[str] = mapped_column(ID_TYPE, primary_key=True)
    from_agent: Mapped[str] = mapped_column(String(1024), nullable=False)
    to_agent: Mapped[str] = mapped_column(String(1024), nullable=False)
    message_type: Mapped[str] = mapped_column(String(16), nullable=False)
    priority: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    correlation_id: Mapped[str | None] = mapped_column(ID_TYPE)
    reply_to: Mapped[str | None] = mapped_column(String(1024))
    payload_json: Mapped[str] = mapped_column(PayloadJSON, nullable=False)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ttl_seconds: Mapped[int | None] = mapped_column(Integer)
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    trace_id: Mapped[str | None] = mapped_column(String(32))
    span_id: Mapped[str | None] = mapped_column(String(16))

    # Fitted to the queries the trail, the CLI and the viewer run: newest first within a filter
    # (time window, sender, receiver, sender and receiver, status), a conversation, a trace, retention by age.
    __table_args__ = (
        Index("idx_timestamp_status", "timestamp", "status"),
        Index("idx_status_timestamp", "status", "timestamp"),
        Index("idx_from_agent_timestamp", "from_agent", "timestamp"),
        Index("idx_to_agent_timestamp", "to_agent", "timestamp"),
        Index("idx_from_to_timestamp", "from_agent", "to_agent", "timestamp"),
        Index("idx_correlation", "correlation_id"),
        Index("idx_trace", "trace_id"),
    )


audit_log: Table = MessageAuditLog.__table__  # type: ignore[assignment]
metadata = Base.metadata

RETIRED_INDEXES = ("idx_agents",)
"""Indexes earlier versions created that the queries no longer use (``(from_agent, to_agent)``)."""


def upgrade_indexes(connection: Connection) -> None:
    """Give a table made by an earlier version today's index set: create what is missing, drop what retired.

    Idempotent and cheap when nothing is missing (one catalogue read). Run it
    in a write transaction, after ``create_all``: building an index reads
    the table once, holding off writers meanwhile.
    """
    present = {index["name"] for index in inspect(connection).get_indexes(TABLE_NAME)}
    for index in audit_log.indexes:
        if index.name not in present:
            connection.execute(CreateIndex(index, if_not_exists=True))
    for name in RETIRED_INDEXES:
        if name in present:
            connection.execute(DropIndex(Index(name), if_exists=True))
