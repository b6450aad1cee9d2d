"""Tables of the Merkle trees over the chains, and of their signed checkpoints (same metadata as the others).

* ``message_audit_trees``: one row per chain that has a tree: the tree's
  size and root, and ``first_sequence``, the chain entry its leaf 0 is (1,
  unless the chain's prefix was pruned before the tree was first built).
* ``message_audit_tiles``: the tree's tiles (see
  :mod:`audit_plugin.integrity.tiles`), ``hashes`` the concatenated 32-byte
  node hashes of one tile, up to 256 of them; a partial tile is rewritten as
  it grows, never shortened. Tiles are not pruned with the chain: 32 bytes
  per entry keep old checkpoints checkable after retention.
* ``message_audit_checkpoints``: signed checkpoints (format 2): the note
  verbatim, the heads it commits to (JSON text), when it was taken, and an
  RFC 3161 time-stamp response, if one was obtained.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, SmallInteger, String, Table, Text

from audit_plugin.storage.schema import UTCDateTime, metadata

TREES_TABLE = "message_audit_trees"
TILES_TABLE = "message_audit_tiles"
CHECKPOINTS_TABLE = "message_audit_checkpoints"

_BIG_KEY = BigInteger().with_variant(Integer, "sqlite")

trees = Table(
    TREES_TABLE,
    metadata,
    Column("chain_id", String(64), primary_key=True),
    Column("first_sequence", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", String(64), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

tiles = Table(
    TILES_TABLE,
    metadata,
    Column("chain_id", String(64), primary_key=True),
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("tile_index", _BIG_KEY, primary_key=True, autoincrement=False),
    Column("hashes", LargeBinary, nullable=False),
)

checkpoints = Table(
    CHECKPOINTS_TABLE,
    metadata,
    Column("id", _BIG_KEY, primary_key=True, autoincrement=True),
    Column("origin", String(255), nullable=False),
    Column("at", UTCDateTime(), nullable=False, index=True),
    Column("note", Text, nullable=False),
    Column("heads", Text, nullable=False),
    Column("timestamp_token", LargeBinary),
)
