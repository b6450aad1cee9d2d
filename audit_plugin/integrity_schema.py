"""Tables for integrity and privacy, beside ``message_audit_log`` in the same metadata.

* ``message_audit_events``: the append-only lifecycle. One row per recorded
  message (``kind="record"``), per status change or retry (``"status"``), per
  update reported after the message's status was final (``"late"``: kept, not
  applied) and per retention run (``"retention"``); rows are never updated.
  ``operation_id`` is the identity a status update carried; a message holds
  each one at most once (a unique index), which is what makes a redelivered
  report a no-op. ``sequence``
  numbers the entries of one chain (``chain_id``) without gaps, and the hash
  columns link each entry to the one before it (see :mod:`audit_plugin.chain`).
* ``message_audit_chain``: one row per chain: its hash version and the prune
  point (sequence and hash of the last entry retention removed) where
  verification starts.
* ``message_audit_keys``: per-subject data keys, wrapped by the master key;
  erasing a subject nulls its wrapped keys (crypto-shredding).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, Index, Integer, LargeBinary, String, Table, Text, inspect, text
from sqlalchemy.schema import CreateIndex

from audit_plugin.schema import UTCDateTime, metadata

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


def upgrade(connection: Connection) -> None:
    """Add what a database made before ``operation_id`` existed lacks: the column and its unique index.

    Idempotent and cheap when nothing is missing (two catalogue reads). Run
    it in a write transaction, after ``create_all``: adding a nullable column
    is a catalogue change only; building the index reads the events table
    once, holding off writers meanwhile.
    """
    found = inspect(connection)
    if "operation_id" not in {column["name"] for column in found.get_columns(EVENTS_TABLE)}:
        if_not_exists = "IF NOT EXISTS " if connection.dialect.name == "postgresql" else ""
        connection.execute(text(f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN {if_not_exists}operation_id VARCHAR(1024)"))
    if operations_index.name not in {index["name"] for index in found.get_indexes(EVENTS_TABLE)}:
        connection.execute(CreateIndex(operations_index, if_not_exists=True))
