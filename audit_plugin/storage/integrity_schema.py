"""Tables for integrity and privacy, beside ``message_audit_log`` in the same metadata.

* ``message_audit_events``: the append-only lifecycle. One row per recorded
  message (``kind="record"``), per status change or retry (``"status"``), per
  update reported after the message's status was final (``"late"``: kept, not
  applied), per retention run (``"retention"``) and per recorded read of the
  trail (``"access"``: no message, its document in ``error``, the records
  read in ``retry_count``; see :mod:`audit_plugin.model.access`); rows are never updated.
  ``operation_id`` is the identity a status update carried; a message holds
  each one at most once (a unique index), which is what makes a redelivered
  report a no-op. ``sequence``
  numbers the entries of one chain (``chain_id``) without gaps, and the hash
  columns link each entry to the one before it (see :mod:`audit_plugin.integrity.chain`):
  ``hash_version`` is the entry's format (``NULL`` for format 1, written
  before the column existed), ``record_digest`` a format-2 record entry's
  digest of its record.
* ``message_audit_chain``: one row per chain: the newest hash format written
  into it and the prune point (sequence and hash of the last entry retention
  removed) where verification starts.
* ``message_audit_keys``: per-subject data keys, wrapped by the master key;
  erasing a subject nulls its wrapped keys (crypto-shredding).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.schema import CreateIndex

from audit_plugin.storage.schema import TABLE_NAME, UTCDateTime, metadata

EVENTS_TABLE = "message_audit_events"
CHAINS_TABLE = "message_audit_chain"
KEYS_TABLE = "message_audit_keys"

events = Table(
    EVENTS_TABLE,
    metadata,
    Column("chain_id", String(64), primary_key=True),
    Column("sequence", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("message_id", String(1024)),
    Column("status", String(16)),
    Column("at", UTCDateTime(), nullable=False),
    Column("retry_count", Integer),
    Column("error", Text),
    Column("delivered_at", UTCDateTime()),
    Column("operation_id", String(1024)),
    Column("record_digest", String(64)),
    Column("hash_version", SmallInteger),
    Column("entry_digest", String(64)),
    Column("prev_hash", String(64)),
    Column("entry_hash", String(64)),
    Index("idx_events_message", "message_id", "sequence"),
)

operations_index = Index(
    "idx_events_operation",
    events.c.message_id,
    events.c.operation_id,
    unique=True,
    sqlite_where=text("operation_id IS NOT NULL"),
    postgresql_where=text("operation_id IS NOT NULL"),
)
"""Each operation applies to a message once; entries without an operation id are not indexed."""

access_index = Index(
    "idx_events_access",
    events.c.chain_id,
    events.c.sequence,
    sqlite_where=text("kind = 'access'"),
    postgresql_where=text("kind = 'access'"),
)
"""The access entries of each chain, newest first for ``audit-plugin access-log``; other entries are not indexed."""

chains = Table(
    CHAINS_TABLE,
    metadata,
    Column("chain_id", String(64), primary_key=True),
    Column("hash_version", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("pruned_sequence", BigInteger, nullable=False, default=0),
    Column("pruned_hash", String(64), nullable=False),
    Column("pruned_at", UTCDateTime()),
)

subject_keys = Table(
    KEYS_TABLE,
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("subject_id", String(1024), nullable=False),
    Column("master_key_id", String(64), nullable=False),
    Column("wrapped_key", LargeBinary),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("erased_at", UTCDateTime()),
    Index("idx_keys_subject", "subject_id"),
)


ADDED_EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("operation_id", "VARCHAR(1024)"),
    ("record_digest", "VARCHAR(64)"),
    ("hash_version", "SMALLINT"),
)
"""Columns of ``message_audit_events`` added after its first release, with their SQL types."""


def upgrade(connection: Connection) -> None:
    """Add what a database made by an earlier version lacks: ``ADDED_EVENT_COLUMNS``, the operations and access indexes.

    Idempotent and cheap when nothing is missing (two catalogue reads). Run
    it in a write transaction, after ``create_all``: adding a nullable column
    is a catalogue change only (existing entries read as hash format 1);
    building the index reads the events table once, holding off writers
    meanwhile.
    """
    found = inspect(connection)
    present = {column["name"] for column in found.get_columns(EVENTS_TABLE)}
    if_not_exists = "IF NOT EXISTS " if connection.dialect.name == "postgresql" else ""
    for name, sql_type in ADDED_EVENT_COLUMNS:
        if name not in present:
            connection.execute(text(f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN {if_not_exists}{name} {sql_type}"))
    present_indexes = {index["name"] for index in found.get_indexes(EVENTS_TABLE)}
    for index in (operations_index, access_index):
        if index.name not in present_indexes:
            connection.execute(CreateIndex(index, if_not_exists=True))


def payload_text_kept(connection: Connection) -> bool:
    """Whether ``message_audit_log.payload_json`` keeps the payload text byte for byte (hash format 2 needs it).

    Every column type does but a binary JSON one: PostgreSQL ``jsonb``
    (the type earlier versions created) re-renders numbers and reorders
    keys. ``ALTER TABLE message_audit_log ALTER COLUMN payload_json TYPE
    json`` converts such a table (see docs/integrity.md).
    """
    if connection.dialect.name != "postgresql":
        return True
    # The catalogue directly: reflecting the table's columns would parse JSON the engine keeps as text.
    kind = connection.execute(
        text("SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attname = :c"),
        {"t": TABLE_NAME, "c": "payload_json"},
    ).scalar()
    return kind != "jsonb"
