"""Merkle trees as transparency logs hash them (RFC 9162 §2.1, the hashing of RFC 6962 / Certificate Transparency).

A tree over ``n`` leaves ``D[0:n]`` has the root ``MTH(D[0:n])``::

    MTH({})      = SHA-256()                                   the empty tree
    MTH({d0})    = SHA-256(0x00 || d0)                         a leaf hash
    MTH(D[0:n])  = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))  k: the largest power of two below n

The two prefixes keep leaves and interior nodes apart, so no leaf can pass
for a subtree. An *inclusion proof* (``PATH``, §2.1.3) shows that a leaf is
at an index of a tree with a given root; a *consistency proof*
(``PROOF``, §2.1.4) shows that a tree of ``m`` leaves is the first ``m``
leaves of a tree of ``n``: the log only grew.

This module only hashes: proofs are made over a function giving the hash of
any leaf range the algorithms ask for (:data:`RangeHash`), so the same code
serves a list of leaves in memory and tiles read from a store
(:mod:`audit_plugin.integrity.tiles`). The checks (:func:`verify_inclusion`,
:func:`verify_consistency`) follow the RFC's verification algorithms and need
nothing but the standard library.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree."""
MAX_PROOF_LENGTH = 64
"""Longer than any proof of a tree of up to 2**63 leaves (a path has one hash per level)."""

RangeHash = Callable[[int, int], bytes]
"""``(start, end) -> MTH(D[start:end])``, asked only for the ranges RFC 9162's algorithms split a tree into."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(NODE_PREFIX + left + right).digest()


def split_point(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` at least 2): where MTH splits ``D[0:size]``."""
    return 1 << ((size - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of ``leaf_hashes`` (already leaf-hashed), computed directly: the reference for the tiled tree."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])  # MTH's split leaves the odd right edge to be combined one level up
        level = paired
    return level[0]


def list_range_hash(leaf_hashes: Sequence[bytes]) -> RangeHash:
    """A :data:`RangeHash` over leaf hashes in memory (for tests and small trees)."""
    return lambda start, end: root_of(leaf_hashes[start:end])


# -- making proofs ---------------------------------------------------------------------------------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form the inclusion proof of leaf ``index`` in a tree of ``size`` (RFC 9162 PATH).

    In proof order: the leaf's sibling first, the root's other child last.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        middle = start + split_point(end - start)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes prove ``old_size`` leaves a prefix of ``new_size`` leaves (RFC 9162 PROOF).

    Empty when the sizes are equal.
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size} leaves (needs 0 < old <= new)")
    ranges: list[tuple[int, int]] = []
    start, end, whole = 0, new_size, True  # the old tree always ends at old_size: SUBPROOF's m is old_size - start
    while end != old_size:
        middle = start + split_point(end - start)
        if old_size <= middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start, whole = middle, False
    if not whole:  # SUBPROOF(m, D[m], false): the old tree's own subtree is part of the proof
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, range_hash: RangeHash) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves whose ranges ``range_hash`` gives."""
    return [range_hash(start, end) for start, end in inclusion_ranges(index, size)]


def consistency_proof(old_size: int, new_size: int, range_hash: RangeHash) -> list[bytes]:
    """The consistency proof from ``old_size`` to ``new_size`` leaves of the tree ``range_hash`` gives."""
    return [range_hash(start, end) for start, end in consistency_ranges(old_size, new_size)]


# -- checking proofs (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------------------------------


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """The root ``proof`` gives for ``leaf`` at ``index`` of a tree of ``size``, or ``None`` if it cannot be one."""
    if not 0 <= index < size or len(proof) > MAX_PROOF_LENGTH:
        return None
    node, last, result = index, size - 1, leaf
    for sibling in proof:
        if last == 0:
            return None
        if node & 1 or node == last:
            result = node_hash(sibling, result)
            if not node & 1:
                while node and not node & 1:
                    node >>= 1
                    last >>= 1
        else:
            result = node_hash(result, sibling)
        node >>= 1
        last >>= 1
    return result if last == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """True if ``proof`` shows ``leaf`` (a leaf hash) at ``index`` of the tree of ``size`` leaves with ``root``."""
    return root_from_inclusion(index, size, leaf, proof) == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """True if ``proof`` shows the tree (``old_size``, ``old_root``) a prefix of (``new_size``, ``new_root``).

    As in RFC 9162, a proof from the empty tree is meaningless (refused);
    equal sizes need equal roots and an empty proof.
    """
    if not 0 < old_size <= new_size or len(proof) > MAX_PROOF_LENGTH:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the proof's first node
        path.insert(0, old_root)
    first, second = old_size - 1, new_size - 1
    while first & 1:
        first >>= 1
        second >>= 1
    old_hash = new_hash = path[0]
    for node in path[1:]:
        if second == 0:
            return False
        if first & 1 or first == second:
            old_hash = node_hash(node, old_hash)
            new_hash = node_hash(node, new_hash)
            if not first & 1:
                while first and not first & 1:
                    first >>= 1
                    second >>= 1
        else:
            new_hash = node_hash(new_hash, node)
        first >>= 1
        second >>= 1
    return second == 0 and old_hash == old_root and new_hash == new_root
