"""Tables for integrity and privacy, beside ``message_audit_log`` in the same metadata.

* ``message_audit_events``: the append-only lifecycle. One row per recorded
  message (``kind="record"``), per status change or retry (``"status"``) and
  per retention run (``"retention"``); rows are never updated. ``sequence``
  numbers the entries of one chain (``chain_id``) without gaps, and the hash
  columns link each entry to the one before it (see :mod:`audit_plugin.chain`).
* ``message_audit_chain``: one row per chain: its hash version and the prune
  point (sequence and hash of the last entry retention removed) where
  verification starts.
* ``message_audit_keys``: per-subject data keys, wrapped by the master key;
  erasing a subject nulls its wrapped keys (crypto-shredding).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text

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
    Column("entry_digest", String(64)),
    Column("prev_hash", String(64)),
    Column("entry_hash", String(64)),
    Index("idx_events_message", "message_id", "sequence"),
)

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
