"""The Merkle trees over the chains, kept right after each commit; the proofs and signed checkpoints made from them.

**When the tree grows.** Not in the write transaction: after each committed
batch the trail hands :meth:`TreeLog.note` the entries the batch appended
(their sequence numbers and hashes are known then), and a background task
adds them to the chain's tree and stores the tiles that changed, in a small
transaction of its own. The writer never waits for the tree, and its batch
write (:mod:`audit_plugin.storage.batch_write`) does not change. The tree
is a function of the chain alone, so nothing is lost if the process dies
before the tree is stored: when the task starts, and whenever the entries
it was handed do not follow on from the tree (another writer, a retention
run), it reads the chain's entries after the tree's size from
``message_audit_events`` and adds them (:meth:`TreeLog._extend`). Proofs and
checkpoints first bring every tree up to its chain's head
(:meth:`TreeLog.synced_heads`).

**What it makes.** Inclusion proofs of a message's entries against a signed
checkpoint (:meth:`TreeLog.prove`, a
:class:`~audit_plugin.integrity.proof_bundle.ProofBundle`), signed
checkpoints of every chain's tree head (:meth:`TreeLog.sign_checkpoint`,
time-stamped by an RFC 3161 authority if configured), stored in
``message_audit_checkpoints``, on a schedule
(:class:`~audit_plugin.integrity.tree_checkpoint.CheckpointPolicy`) and on
demand, and the consistency check of consecutive stored checkpoints
(:meth:`TreeLog.check_checkpoints`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from audit_plugin.exceptions import ChainError
from audit_plugin.integrity import merkle
from audit_plugin.integrity.ledger import AppendedEntries
from audit_plugin.integrity.merkle import leaf_hash as _leaf
from audit_plugin.integrity.proof_bundle import ProofBundle
from audit_plugin.integrity.tiles import TileReader, TreeEdge, tiles_for
from audit_plugin.integrity.timestamping import TimestampError, request_timestamp
from audit_plugin.integrity.tree_checkpoint import DEFAULT_ORIGIN, CheckpointPolicy, TreeCheckpoint, TreeHead
from audit_plugin.storage.backend import TreeStorage

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 10_000
"""Entries read per query when a tree catches up with its chain (and stored per transaction)."""
GATHER_SECONDS = 0.5
"""How long the task lets committed batches gather before adding them: fewer, larger tree transactions."""
RETRY_SECONDS = 5.0
"""How long the task waits after failing to store a tree (the store unavailable) before it tries again."""


class ProofError(ChainError):
    """No proof can be made (the record is not in the chain, or no checkpoint covers it); the message says why."""


@dataclass(frozen=True, slots=True)
class CheckpointCheck:
    """One stored checkpoint, checked: ``problem`` is ``None`` when it is sound and consistent with the one before."""

    checkpoint: TreeCheckpoint
    problem: str | None
    signature_checked: bool


@dataclass(slots=True)
class _Tree:
    first_sequence: int
    edge: TreeEdge
    stuck_at: int | None = None
    """The sequence number the tree cannot pass (a missing or unhashed entry), once warned about."""


class TreeLog:
    """Keeps each chain's Merkle tree in the store; makes proofs and checkpoints (see the module).

    :param storage: the store's trees (:class:`~audit_plugin.storage.backend.TreeStorage`).
    :param chain_ids: the chains this trail writes, whose committed entries it is handed.
    :param policy: sign and store checkpoints on a schedule, and at :meth:`stop`.
    """

    def __init__(self, storage: TreeStorage, chain_ids: Sequence[str], policy: CheckpointPolicy | None = None) -> None:
        self.storage = storage
        self.chain_ids = tuple(chain_ids)
        self.policy = policy
        self._trees: dict[str, _Tree] = {}
        self._noted: list[AppendedEntries] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._last_checkpoint = time.monotonic()
        self._grown = False

    # -- keeping the trees -----------------------------------------------------------------------

    def start(self, chain_ids: Sequence[str] | None = None) -> None:
        """Start the task that catches the trees up with their chains, then extends them after each commit.

        ``chain_ids``: the chains the trail writes, when they are known only
        once the store is open (the store's shard count).
        """
        if chain_ids is not None:
            self.chain_ids = tuple(chain_ids)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-plugin merkle tree")

    def note(self, appended: AppendedEntries) -> None:
        """A batch committed these entries: add them to their chain's tree soon (cheap; called in the writer)."""
        if appended.links:
            self._noted.append(appended)
            self._wake.set()

    async def stop(self) -> None:
        """Add what was noted, sign a last checkpoint if the policy says so, and end the task."""
        self._stopping = True
        self._stop_requested.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.policy is not None and self._grown:
            try:
                await self.sign_checkpoint(self.policy.signing_key, self.policy.origin, self.policy.tsa_url)
            except Exception:
                log.exception("audit-plugin: the checkpoint at close could not be signed and stored")

    async def _run(self) -> None:
        await self._round(self.chain_ids)
        while not self._stopping:
            timeout = None
            if self.policy is not None and self.policy.every:
                timeout = max(0.0, self._last_checkpoint + self.policy.every - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if not self._stopping:  # let more batches commit first: one tree transaction for all of them
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), GATHER_SECONDS)
            if not await self._round(()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RETRY_SECONDS)
            if self._scheduled_checkpoint_due():
                await self._scheduled_checkpoint()
        await self._round(())

    async def _round(self, catch_up: Iterable[str]) -> bool:
        """Add the noted entries (and catch up the ``catch_up`` chains); False if the store failed."""
        noted, self._noted = self._noted, []
        by_chain: dict[str, list[tuple[int, str | None]]] = {chain_id: [] for chain_id in catch_up}
        for appended in noted:
            by_chain.setdefault(appended.chain_id, []).extend((link[0], link[2]) for link in appended.links)
        ok = True
        async with self._lock:
            for chain_id, leaves in by_chain.items():
                try:
                    await self._extend(chain_id, leaves)
                except Exception as exc:
                    ok = False
                    self._trees.pop(chain_id, None)  # read it again from the store next time
                    log.warning(
                        "audit-plugin: the Merkle tree of chain %r was not stored (%s): will catch up", chain_id, exc
                    )
        return ok

    async def _tree(self, chain_id: str) -> _Tree:
        tree = self._trees.get(chain_id)
        if tree is None:
            stored = await self.storage.tree(chain_id)
            if stored is None:
                tree = _Tree(await self.storage.first_sequence(chain_id), TreeEdge())
            else:
                first, size, edge_tiles = stored
                tree = _Tree(first, TreeEdge(size, edge_tiles))
            self._trees[chain_id] = tree
        return tree

    async def _extend(self, chain_id: str, noted: Sequence[tuple[int, str | None]]) -> None:
        """Add ``noted`` entries of ``chain_id`` if they follow on from its tree; else read its chain from there."""
        tree = await self._tree(chain_id)
        edge = tree.edge
        following = [leaf for leaf in noted if leaf[0] >= tree.first_sequence + edge.size]
        expected = tree.first_sequence + edge.size
        if following and all(sequence == expected + i for i, (sequence, _) in enumerate(following)):
            self._add(tree, chain_id, following)
        else:
            while True:
                leaves = await self.storage.leaves(chain_id, tree.first_sequence + edge.size, CATCH_UP_CHUNK)
                if self._add(tree, chain_id, leaves) < CATCH_UP_CHUNK:  # the chain's end (or a gap, an unhashed entry)
                    break
                await self._save(chain_id, tree)
        await self._save(chain_id, tree)

    def _add(self, tree: _Tree, chain_id: str, leaves: Sequence[tuple[int, str | None]]) -> int:
        """Append ``leaves`` while they follow on and are hashed; how many were added."""
        expected = tree.first_sequence + tree.edge.size
        added = 0
        for sequence, entry_hash in leaves:
            if sequence != expected + added or entry_hash is None:
                break
            added += 1
        tree.edge.extend([_leaf(bytes.fromhex(entry_hash)) for _, entry_hash in leaves[:added]])  # type: ignore[arg-type]
        if added < len(leaves) and tree.stuck_at != expected + added:
            tree.stuck_at = expected + added
            why = "is not hashed" if leaves[added][0] == expected + added else "is missing"
            log.warning(
                "audit-plugin: entry %d of chain %r %s: its Merkle tree stops there (run verify())",
                expected + added,
                chain_id,
                why,
            )
        if added:
            self._grown = True
        return added

    async def _save(self, chain_id: str, tree: _Tree) -> None:
        changed = tree.edge.take_tiles()
        if changed:
            await self.storage.save(chain_id, tree.first_sequence, tree.edge.size, tree.edge.root(), changed)

    async def synced_heads(self) -> list[TreeHead]:
        """Every chain of the store with its tree caught up to the chain's last entry: their heads, by chain id."""
        chain_ids = sorted({*await self.storage.chain_ids(), *self.chain_ids})
        async with self._lock:
            for chain_id in chain_ids:
                await self._extend(chain_id, ())
            return [
                TreeHead(chain_id, tree.edge.size, tree.edge.root(), tree.first_sequence)
                for chain_id in chain_ids
                if (tree := self._trees[chain_id]).edge.size
            ]

    # -- checkpoints -----------------------------------------------------------------------------

    def _scheduled_checkpoint_due(self) -> bool:
        policy = self.policy
        return (
            policy is not None
            and policy.every > 0
            and self._grown
            and time.monotonic() >= self._last_checkpoint + policy.every
        )

    async def _scheduled_checkpoint(self) -> None:
        assert self.policy is not None
        try:
            await self.sign_checkpoint(self.policy.signing_key, self.policy.origin, self.policy.tsa_url)
        except Exception:
            log.exception("audit-plugin: the scheduled checkpoint could not be signed and stored")
            self._last_checkpoint = time.monotonic()

    async def sign_checkpoint(
        self, signing_key: Any, origin: str = DEFAULT_ORIGIN, tsa_url: str | None = None
    ) -> TreeCheckpoint:
        """Catch every tree up, sign their heads, time-stamp the note if ``tsa_url`` is given, store and return it."""
        checkpoint = TreeCheckpoint.take(await self.synced_heads(), signing_key, origin)
        self._grown = False
        self._last_checkpoint = time.monotonic()
        if tsa_url is not None:
            try:
                checkpoint = checkpoint.with_timestamp(
                    await asyncio.to_thread(request_timestamp, tsa_url, checkpoint.note)
                )
            except TimestampError as exc:
                log.warning("audit-plugin: checkpoint stored without a time-stamp: %s", exc)
        identity = await self.storage.add_checkpoint(checkpoint)
        return TreeCheckpoint(checkpoint.note, checkpoint.heads, checkpoint.at, checkpoint.timestamp, identity)

    async def checkpoints(self, limit: int | None = None) -> list[TreeCheckpoint]:
        """Stored checkpoints, newest first."""
        return await self.storage.checkpoints(limit)

    async def check_checkpoints(self, public_key: Any = None) -> list[CheckpointCheck]:
        """Every stored checkpoint, oldest first, checked: its note states its heads, its signature (given a key),
        and its trees are consistent with those of the checkpoint before it of the same origin and with the trees now.
        """
        current = {head.chain_id: head for head in await self.synced_heads()}
        checks: list[CheckpointCheck] = []
        previous: dict[str, TreeCheckpoint] = {}
        for checkpoint in await self.storage.checkpoints(newest_first=False):
            problem = None
            if not checkpoint.states_heads():
                problem = "its note does not state the heads stored with it (altered)"
            elif public_key is not None and not checkpoint.signed_by(public_key):
                problem = "its signature is not valid for the given key"
            else:
                before = previous.get(checkpoint.origin)
                problem = await self._grew_from(before.heads if before else (), checkpoint.heads)
                if problem is None:
                    problem = await self._grew_from(checkpoint.heads, current.values(), now=True)
            checks.append(CheckpointCheck(checkpoint, problem, public_key is not None))
            previous[checkpoint.origin] = checkpoint
        return checks

    async def _grew_from(
        self, older: Iterable[TreeHead], newer: Iterable[TreeHead], *, now: bool = False
    ) -> str | None:
        """Why the trees ``newer`` are not the trees ``older`` grown (consistency proofs from the stored tiles)."""
        later = {head.chain_id: head for head in newer}
        what = "the trees now" if now else "the checkpoint before it"
        for old in older:
            new = later.get(old.chain_id)
            if new is None or new.first_sequence != old.first_sequence or new.size < old.size:
                return f"chain {old.chain_id!r} did not grow from it to {what} (tree cut or replaced)"
            ranges = merkle.consistency_ranges(old.size, new.size) if old.size else []
            reader = TileReader(await self.storage.tiles(old.chain_id, tiles_for(ranges)))
            try:
                proof = [reader.range_hash(start, end) for start, end in ranges]
            except LookupError as exc:
                return f"chain {old.chain_id!r}'s tree is incomplete: {exc}"
            if old.size and not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
                return f"chain {old.chain_id!r}'s tree is not consistent with {what} (history rewritten)"
        return None

    # -- proofs ----------------------------------------------------------------------------------

    async def prove(
        self,
        message_id: str,
        *,
        signing_key: Any = None,
        origin: str | None = None,
        include_record: bool = True,
    ) -> ProofBundle:
        """A proof bundle of ``message_id``'s record and lifecycle entries against the newest stored checkpoint.

        With ``signing_key``, a fresh checkpoint is signed and stored when the
        newest does not cover every entry of the message yet. Without it, the
        entries after the newest checkpoint are left out
        (``bundle.uncovered`` counts them); if it does not cover even the
        record entry, :class:`ProofError`. ``include_record=False`` leaves the
        record's columns and payload out: the bundle then proves the entries
        and the record's digest only.
        """
        record, entries = await self.storage.material(message_id)
        if not any(entry["kind"] == "record" for entry in entries):
            raise ProofError(f"message {message_id!r} has no record entry in the chain (never logged, or pruned)")
        if any(entry["entry_hash"] is None for entry in entries):
            raise ProofError(f"message {message_id!r} has entries without hashes (written with hash_chain=False)")
        stored = await self.storage.checkpoints(1)
        checkpoint = stored[0] if stored else None
        if signing_key is not None and not (checkpoint and all(_covers(checkpoint, entry) for entry in entries)):
            policy = self.policy
            checkpoint = await self.sign_checkpoint(
                signing_key,
                origin or (policy.origin if policy else DEFAULT_ORIGIN),
                policy.tsa_url if policy else None,
            )
        record_entry = next(entry for entry in entries if entry["kind"] == "record")
        if checkpoint is None or not _covers(checkpoint, record_entry):
            raise ProofError(
                f"no stored checkpoint covers message {message_id!r} yet: sign one (a signing key), "
                "or wait for the next scheduled checkpoint"
            )
        covered = [entry for entry in entries if _covers(checkpoint, entry)]
        for chain_id in {entry["chain_id"] for entry in covered}:
            head = checkpoint.head(chain_id)
            assert head is not None
            mine = [entry for entry in covered if entry["chain_id"] == chain_id]
            paths = {
                id(entry): merkle.inclusion_ranges(entry["sequence"] - head.first_sequence, head.size) for entry in mine
            }
            reader = TileReader(
                await self.storage.tiles(chain_id, tiles_for([(0, head.size), *(r for p in paths.values() for r in p)]))
            )
            try:
                if reader.root(head.size) != head.root:
                    raise ProofError(f"chain {chain_id!r}'s stored tree differs from the checkpoint's (tiles altered)")
                for entry in mine:
                    entry["leaf_index"] = entry["sequence"] - head.first_sequence
                    entry["proof"] = [reader.range_hash(start, end).hex() for start, end in paths[id(entry)]]
            except LookupError as exc:
                raise ProofError(f"chain {chain_id!r}'s stored tree is incomplete: {exc}") from None
        return ProofBundle(
            message_id,
            record if include_record else None,
            covered,
            checkpoint,
            uncovered=len(entries) - len(covered),
        )


def _covers(checkpoint: TreeCheckpoint, entry: dict[str, Any]) -> bool:
    head = checkpoint.head(entry["chain_id"])
    return head is not None and head.first_sequence <= entry["sequence"] < head.first_sequence + head.size
