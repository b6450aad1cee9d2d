"""A chain in the store: its row in ``message_audit_chain``, its head, and retention's pruning of its prefix.

The :class:`~audit_plugin.integrity.ledger.Ledger` builds and links entries
without a database; these are the statements around it, run in the
writer's transaction with the chain's writer lock held (see
``SQLBackend.write_transaction``), except the reads of :func:`chain_head`
and :func:`prune_point`, which a reader may run on its own connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_plugin.exceptions import ChainError
from audit_plugin.integrity import chain
from audit_plugin.integrity.ledger import ChainHead, Ledger, PendingEntry
from audit_plugin.integrity.shards import SHARD_SEPARATOR, ShardedChains, shard_count
from audit_plugin.model.access import ACCESS_KIND
from audit_plugin.storage.integrity_schema import chains, events, payload_text_kept

e = events.c


async def ensure_chains(conn: AsyncConnection, sharded: ShardedChains) -> None:
    """Take the store's shard count for ``sharded`` (or refuse a different one), then :func:`ensure_chain` each shard.

    The shards of a chain are found by their rows (see
    :func:`~audit_plugin.integrity.shards.shard_count`); a new chain gets all
    its shards' rows in this transaction.
    """
    stored = await conn.scalars(
        select(chains.c.chain_id).where(
            (chains.c.chain_id == sharded.base_id)
            | chains.c.chain_id.startswith(sharded.base_id + SHARD_SEPARATOR, autoescape=True)
        )
    )
    sharded.adopt(shard_count(sharded.base_id, stored))
    for ledger in sharded.ledgers:
        await ensure_chain(conn, ledger)


async def ensure_chain(conn: AsyncConnection, ledger: Ledger) -> None:
    """Pick ``ledger``'s hash format for the store; create its chain's row, or move the row's version up.

    Format 2 hashes the payload text as stored, so it needs a payload column
    that keeps it verbatim; on one that does not (PostgreSQL ``jsonb``, made
    by earlier versions) entries stay in format 1. The chain's
    ``hash_version`` is the newest format written into it: a chain already
    moved to a format this version does not know is refused
    (:class:`~audit_plugin.exceptions.ChainError`), rather than extended with
    entries its other writers' ``verify()`` would not expect.
    """
    ledger.write_in_format(chain.HASH_VERSION if await conn.run_sync(payload_text_kept) else 1)
    where = chains.c.chain_id == ledger.chain_id
    stored = await conn.scalar(select(chains.c.hash_version).where(where))
    if stored is not None:
        if stored > chain.HASH_VERSION:
            raise ChainError(
                f"chain {ledger.chain_id!r} is written in hash format {stored}; this version of audit-plugin "
                f"writes format {chain.HASH_VERSION} at most: upgrade it"
            )
        if stored < ledger.hash_version:
            await conn.execute(update(chains).where(where).values(hash_version=ledger.hash_version))
        return
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(chains).values(
                    chain_id=ledger.chain_id,
                    hash_version=ledger.hash_version,
                    created_at=datetime.now(UTC),
                    pruned_sequence=0,
                    pruned_hash=chain.GENESIS_HASH,
                )
            )
    except IntegrityError:
        pass  # another writer created it first


async def chain_head(conn: AsyncConnection, chain_id: str) -> ChainHead:
    """The sequence number and hash of ``chain_id``'s last entry (its prune point when it has none)."""
    last = (
        await conn.execute(
            select(e.sequence, e.entry_hash).where(e.chain_id == chain_id).order_by(e.sequence.desc()).limit(1)
        )
    ).first()
    return ChainHead.of(last) if last is not None else await prune_point(conn, chain_id)


async def prune_point(conn: AsyncConnection, chain_id: str) -> ChainHead:
    """Where verification of ``chain_id`` starts: the last entry retention removed (genesis if none)."""
    row = (
        await conn.execute(select(chains.c.pruned_sequence, chains.c.pruned_hash).where(chains.c.chain_id == chain_id))
    ).first()
    return ChainHead.of(row)


async def append_entries(conn: AsyncConnection, ledger: Ledger, entries: Sequence[PendingEntry]) -> ChainHead | None:
    """Number, link and insert ``entries`` after the chain's head; return the new head (``None``: no entries)."""
    if not entries:
        return None
    rows, head = ledger.link(await chain_head(conn, ledger.chain_id), entries)
    await conn.execute(insert(events), rows)
    return head


async def access_entries(
    conn: AsyncConnection, chain_id: str, limit: int, before: int | None = None
) -> list[tuple[int, datetime, str, str | None]]:
    """``chain_id``'s access entries, newest first: ``(sequence, at, document, entry_hash)``, sequence < ``before``."""
    where = [e.chain_id == chain_id, e.kind == ACCESS_KIND]
    if before is not None:
        where.append(e.sequence < before)
    stmt = select(e.sequence, e.at, e.error, e.entry_hash).where(*where).order_by(e.sequence.desc()).limit(limit)
    return [(row[0], row[1], row[2], row[3]) for row in await conn.execute(stmt)]


class ChainPrefix:
    """How retention finds and removes a chain's prefix: portable SQL; a store with a faster way subclasses it."""

    async def first_at_or_after(self, conn: AsyncConnection, chain_id: str, cutoff: datetime) -> int | None:
        """The lowest sequence number of ``chain_id``'s entries with ``at >= cutoff`` (``None``: none)."""
        # In sequence order, stopping at the first match: reads the prefix being pruned, not the whole chain.
        return await conn.scalar(
            select(e.sequence).where(e.chain_id == chain_id, e.at >= cutoff).order_by(e.sequence).limit(1)
        )

    async def drop_through(self, conn: AsyncConnection, chain_id: str, last: int) -> None:
        """Delete ``chain_id``'s entries numbered ``<= last``."""
        await conn.execute(events.delete().where(e.chain_id == chain_id, e.sequence <= last))

    async def drop_prefixes(self, conn: AsyncConnection, lasts: Mapping[str, int]) -> None:
        """Delete each chain's entries up to its new prune point (``lasts``: chain id -> last pruned sequence).

        Called once per retention run, after every chain's row holds its new
        prune point, so a store that removes whole blocks of entries at once
        can see what no chain needs any more.
        """
        for chain_id, last in lasts.items():
            await self.drop_through(conn, chain_id, last)


async def prune_chain(
    conn: AsyncConnection,
    ledger: Ledger,
    cutoff: datetime,
    deleted: int,
    *,
    prefix: ChainPrefix,
    drop_prefix: bool = True,
) -> None:
    """:func:`prune_chains` for one chain."""
    await prune_chains(conn, ShardedChains.of(ledger), cutoff, deleted, prefix=prefix, drop_prefix=drop_prefix)


async def prune_chains(
    conn: AsyncConnection,
    sharded: ShardedChains,
    cutoff: datetime,
    deleted: int,
    *,
    prefix: ChainPrefix,
    drop_prefix: bool = True,
) -> None:
    """Record a retention run in every shard's chain and drop each chain's prefix older than ``cutoff``.

    Each chain's prefix ends just before its first entry at or after
    ``cutoff`` (the retention entry itself always stays); its last entry
    becomes the prune point that verification starts from. ``deleted`` (the
    records the run deleted, whichever shard they were in) is recorded in
    every chain's retention entry. A run deleting in chunks records every
    chunk and drops the prefixes after the last one. ``prefix`` finds and
    removes the entries (see :class:`ChainPrefix`). The caller holds every
    shard's writer lock.
    """
    lasts: dict[str, int] = {}
    for ledger in sharded.ledgers:
        chain_id = ledger.chain_id
        marker = await append_entries(conn, ledger, [ledger.retention_entry(cutoff, deleted)])
        assert marker is not None
        if not drop_prefix:
            continue
        newer = await prefix.first_at_or_after(conn, chain_id, cutoff)
        first_kept = marker.sequence if newer is None else min(newer, marker.sequence)
        last_pruned = (
            await conn.execute(
                select(e.sequence, e.entry_hash).where(e.chain_id == chain_id, e.sequence == first_kept - 1)
            )
        ).first()
        if last_pruned is None:
            continue
        lasts[chain_id] = last_pruned.sequence
        await conn.execute(
            update(chains)
            .where(chains.c.chain_id == chain_id)
            .values(
                pruned_sequence=last_pruned.sequence,
                pruned_hash=last_pruned.entry_hash or chain.GENESIS_HASH,
                pruned_at=datetime.now(UTC),
            )
        )
    if lasts:
        await prefix.drop_prefixes(conn, lasts)
