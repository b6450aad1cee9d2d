"""The SQL of the Merkle trees: tiles and tree rows, the chain's leaves, a record's material, signed checkpoints.

:class:`SQLTreeStorage` is what :class:`~audit_plugin.storage.tree_log.TreeLog`
asks a SQL store for (the :class:`~audit_plugin.storage.backend.TreeStorage`
contract). Tiles and tree rows are written with upserts that only ever grow
them (a tile's hashes get longer, a tree's size larger), so two processes
extending the same tree write the same rows and never undo each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Text, func, insert, select, tuple_, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_plugin.integrity.proof_bundle import RECORD_KEYS
from audit_plugin.integrity.tiles import TileKey, tile_keys_of_size
from audit_plugin.integrity.tree_checkpoint import TreeCheckpoint, TreeHead
from audit_plugin.integrity.verify import ENTRY_COLUMNS
from audit_plugin.storage.integrity_schema import chains, events
from audit_plugin.storage.schema import audit_log
from audit_plugin.storage.tree_schema import checkpoints, tiles, trees

e = events.c


def json_time(value: Any) -> str | None:
    """A timestamp as read (an aware datetime, or SQLite's stored UTC text) in the RFC 3339 form format 2 hashes."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return orjson.dumps(value).decode()[1:-1]


def _upsert(conn: AsyncConnection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class SQLTreeStorage:
    """Trees, tiles and checkpoints in a SQL store (see the module)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that takes the write lock at its start (SQLite ``BEGIN IMMEDIATE``), as writers do."""
        async with self.engine.connect() as conn:
            await conn.execution_options(audit_writer=True)
            async with conn.begin():
                yield conn

    async def chain_ids(self) -> list[str]:
        """Every chain of the store, sorted."""
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(chains.c.chain_id).order_by(chains.c.chain_id))).scalars())

    async def tree(self, chain_id: str) -> tuple[int, int, dict[TileKey, bytes]] | None:
        """``(first_sequence, size, tiles)`` of ``chain_id``'s stored tree, with the tiles of its right edge."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(trees.c.first_sequence, trees.c.size).where(trees.c.chain_id == chain_id))
            ).first()
            if row is None:
                return None
            edge = await self._tiles(conn, chain_id, tile_keys_of_size(row.size))
        return row.first_sequence, row.size, edge

    async def first_sequence(self, chain_id: str) -> int:
        """Where a new tree of ``chain_id`` starts: the entry after its prune point (1 for an unpruned chain)."""
        async with self.engine.connect() as conn:
            pruned = await conn.scalar(select(chains.c.pruned_sequence).where(chains.c.chain_id == chain_id))
        return int(pruned or 0) + 1

    async def leaves(self, chain_id: str, first: int, limit: int) -> list[tuple[int, str | None]]:
        """``(sequence, entry_hash)`` of ``chain_id``'s entries from ``first`` on, in order, at most ``limit``."""
        statement = (
            select(e.sequence, e.entry_hash)
            .where(e.chain_id == chain_id, e.sequence >= first)
            .order_by(e.sequence)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [(row[0], row[1]) for row in await conn.execute(statement)]

    async def save(
        self, chain_id: str, first_sequence: int, size: int, root: bytes, changed: Mapping[TileKey, bytes]
    ) -> None:
        """Store a grown tree: its changed tiles and its row, in one transaction, never shrinking either."""
        async with self._writing() as conn:
            if changed:
                rows = [
                    {"chain_id": chain_id, "level": level, "tile_index": index, "hashes": content}
                    for (level, index), content in sorted(changed.items())
                ]
                statement = _upsert(conn, tiles)
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[tiles.c.chain_id, tiles.c.level, tiles.c.tile_index],
                        set_={"hashes": statement.excluded.hashes},
                        where=func.length(tiles.c.hashes) < func.length(statement.excluded.hashes),
                    ),
                    rows,
                )
            statement = _upsert(conn, trees).values(
                chain_id=chain_id,
                first_sequence=first_sequence,
                size=size,
                root=root.hex(),
                updated_at=datetime.now(UTC),
            )
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[trees.c.chain_id],
                    set_={
                        "size": statement.excluded.size,
                        "root": statement.excluded.root,
                        "updated_at": statement.excluded.updated_at,
                    },
                    where=trees.c.size < statement.excluded.size,
                )
            )

    async def tiles(self, chain_id: str, keys: Collection[TileKey]) -> dict[TileKey, bytes]:
        async with self.engine.connect() as conn:
            return await self._tiles(conn, chain_id, keys)

    async def _tiles(self, conn: AsyncConnection, chain_id: str, keys: Collection[TileKey]) -> dict[TileKey, bytes]:
        if not keys:
            return {}
        found = await conn.execute(
            select(tiles.c.level, tiles.c.tile_index, tiles.c.hashes).where(
                tiles.c.chain_id == chain_id, tuple_(tiles.c.level, tiles.c.tile_index).in_(list(keys))
            )
        )
        return {(row[0], row[1]): bytes(row[2]) for row in found}

    async def material(self, message_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """A message's record as stored (the covered columns, the payload text) and its lifecycle entries, in order.

        Timestamps are RFC 3339 text (as format 2 hashes them); the record is
        ``None`` if it is not stored (deleted by retention).
        """
        log = audit_log.c
        record_columns = [
            type_coerce(log[name], Text()).label(name) if name in ("timestamp", "payload_json") else log[name]
            for name in RECORD_KEYS
        ]
        entry_columns = [
            type_coerce(e[name], Text()).label(name) if name in ("at", "delivered_at") else e[name]
            for name in ENTRY_COLUMNS
        ]
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*record_columns).where(log.message_id == message_id))).first()
            found = await conn.execute(
                select(*entry_columns).where(e.message_id == message_id).order_by(e.chain_id, e.sequence)
            )
            entries = [dict(zip(ENTRY_COLUMNS, entry, strict=True)) for entry in found]
        for entry in entries:
            entry["at"], entry["delivered_at"] = json_time(entry["at"]), json_time(entry["delivered_at"])
        record = None
        if row is not None:
            record = dict(zip(RECORD_KEYS, row, strict=True))
            record["timestamp"] = json_time(record["timestamp"])
        return record, entries

    # -- checkpoints ---------------------------------------------------------------------------

    async def add_checkpoint(self, checkpoint: TreeCheckpoint) -> int:
        async with self._writing() as conn:
            result = await conn.execute(
                insert(checkpoints).values(
                    origin=checkpoint.origin,
                    at=checkpoint.at,
                    note=checkpoint.note,
                    heads=orjson.dumps([head.to_dict() for head in checkpoint.heads]).decode(),
                    timestamp_token=checkpoint.timestamp,
                )
            )
            return int(result.inserted_primary_key[0])

    async def checkpoints(self, limit: int | None = None, *, newest_first: bool = True) -> list[TreeCheckpoint]:
        """Stored checkpoints, newest first (or oldest first), at most ``limit``."""
        order = checkpoints.c.id.desc() if newest_first else checkpoints.c.id.asc()
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(checkpoints).order_by(order).limit(limit))).mappings().all()
        return [_checkpoint(row) for row in rows]


def _checkpoint(row: Mapping[str, Any]) -> TreeCheckpoint:
    heads: Sequence[Any] = orjson.loads(row["heads"])
    token = row["timestamp_token"]
    return TreeCheckpoint(
        row["note"],
        tuple(TreeHead.from_dict(head) for head in heads),
        row["at"],
        bytes(token) if token is not None else None,
        row["id"],
    )
