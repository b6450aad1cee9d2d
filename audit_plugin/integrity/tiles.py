"""A Merkle tree kept as tiles: the layout of C2SP tlog-tiles, in rows instead of files.

A *tile* holds up to 256 consecutive node hashes of one tree level: tile
``(level L, index k)`` holds the hashes of the nodes at tree level ``8·L``
numbered ``256·k`` to ``256·k + 255`` (tree level 0 are the leaf hashes; a
node at tree level 8 is the root of 256 leaves). Only nodes of complete
subtrees are stored, so a node never changes once written: a tree of ``n``
leaves is its tiles cut to the first ``n >> 8·L`` hashes of each level, and
every older tree size is still there in the same tiles. Every node and
range hash of the tree follows from the tiles by hashing at most 127 pairs,
so an inclusion proof reads one tile per tile level (four rows for 4
billion leaves). Storage is 32 bytes per leaf, plus 1/255 of that above.

:class:`TreeEdge` grows a tree leaf by leaf, keeping only the right-most
(partial) tile of each level, and hands back the tiles that changed;
:class:`TileReader` answers the range hashes the proofs of
:mod:`audit_plugin.integrity.merkle` ask for, from tiles read from a store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from audit_plugin.integrity.merkle import EMPTY_ROOT, HASH_SIZE, node_hash, split_point

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
TILE_BYTES = TILE_WIDTH * HASH_SIZE

TileKey = tuple[int, int]
"""``(tile level, tile index)``."""


def perfect_root(hashes: bytes | memoryview) -> bytes:
    """The root over a power-of-two count of consecutive node hashes of one level (concatenated)."""
    level = [bytes(hashes[offset : offset + HASH_SIZE]) for offset in range(0, len(hashes), HASH_SIZE)]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def tile_keys_of_size(size: int) -> list[TileKey]:
    """The partial (right-most) tile of each level of a tree of ``size`` leaves: a :class:`TreeEdge`'s tiles."""
    keys = []
    level, count = 0, size
    while count:
        if count % TILE_WIDTH:
            keys.append((level, count // TILE_WIDTH))
        level, count = level + 1, count // TILE_WIDTH
    return keys


def _perfect_pieces(start: int, end: int) -> Iterable[tuple[int, int]]:
    """``range(start, end)`` split as MTH splits it, down to perfect subtrees: ``(tree level, node index)`` each."""
    size = end - start
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        yield level, start >> level
        return
    middle = start + split_point(size)
    yield from _perfect_pieces(start, middle)
    yield from _perfect_pieces(middle, end)


def _tile_of(level: int, index: int) -> tuple[TileKey, int, int]:
    """The tile holding the base nodes of perfect node ``(level, index)``: its key, first slot, and how many."""
    tile_level, height = divmod(level, TILE_HEIGHT)
    first = index << height
    return (tile_level, first // TILE_WIDTH), first % TILE_WIDTH, 1 << height


def tiles_for(ranges: Iterable[tuple[int, int]]) -> set[TileKey]:
    """The tiles needed to hash every one of the leaf ``ranges`` (those of a proof)."""
    return {_tile_of(level, index)[0] for start, end in ranges for level, index in _perfect_pieces(start, end)}


class TileReader:
    """Range hashes (:data:`~audit_plugin.integrity.merkle.RangeHash`) of a tree, from its tiles.

    Raises :class:`LookupError` for a range the given tiles do not reach
    (a tile missing or shorter than the range needs).
    """

    def __init__(self, tiles: Mapping[TileKey, bytes]) -> None:
        self.tiles = tiles

    def node(self, level: int, index: int) -> bytes:
        """The hash of perfect node ``index`` of tree ``level``."""
        key, first, count = _tile_of(level, index)
        tile = self.tiles.get(key)
        if tile is None or len(tile) < (first + count) * HASH_SIZE:
            raise LookupError(f"the tree's tile {key} does not reach node {index} of level {level}")
        return perfect_root(memoryview(tile)[first * HASH_SIZE : (first + count) * HASH_SIZE])

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves ``[start, end)``."""
        if end == start:
            return EMPTY_ROOT
        pieces = [self.node(level, index) for level, index in _perfect_pieces(start, end)]
        return _fold(pieces)

    def root(self, size: int) -> bytes:
        return self.range_hash(0, size)


def _fold(peaks: list[bytes]) -> bytes:
    """The root over perfect subtrees left to right, combined as MTH combines a right edge (from the right)."""
    result = peaks[-1]
    for peak in reversed(peaks[:-1]):
        result = node_hash(peak, result)
    return result


class TreeEdge:
    """The right edge of a growing tree: its size, and the partial tile of each level.

    :meth:`append` adds leaf hashes; :meth:`take_tiles` returns every tile
    changed since it was last called (tiles that filled up, and the partial
    tiles), ready to be stored.
    """

    def __init__(self, size: int = 0, partials: Mapping[TileKey, bytes] | None = None) -> None:
        """The edge of a tree of ``size`` leaves, given its partial tiles (:func:`tile_keys_of_size`) as stored.

        A stored tile may be longer than the tree of ``size`` needs (the
        store grew meanwhile): only its first hashes are taken.
        """
        self.size = size
        self._partial: list[bytearray] = []
        level, count = 0, size
        while count:
            width = count % TILE_WIDTH
            stored = (partials or {}).get((level, count // TILE_WIDTH), b"")
            if len(stored) < width * HASH_SIZE:
                raise LookupError(f"tile {(level, count // TILE_WIDTH)} is missing or too short for {size} leaves")
            self._partial.append(bytearray(stored[: width * HASH_SIZE]))
            level, count = level + 1, count // TILE_WIDTH
        self._changed: dict[TileKey, bytes | None] = {}

    def copy(self) -> TreeEdge:
        edge = TreeEdge()
        edge.size = self.size
        edge._partial = [bytearray(tile) for tile in self._partial]
        return edge

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at index ``size``."""
        self.extend((leaf,))

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Add leaf hashes at index ``size`` on, filling tiles a run at a time (a full tile's root is its parent)."""
        nodes = list(leaves)
        old_size = self.size
        self.size += len(nodes)
        level = 0
        while nodes:
            if level == len(self._partial):
                self._partial.append(bytearray())
            tile, count, parents = self._partial[level], old_size >> (TILE_HEIGHT * level), []
            start = 0
            while start < len(nodes):
                room = TILE_WIDTH - len(tile) // HASH_SIZE
                run = nodes[start : start + room]
                tile += b"".join(run)
                key = (level, count // TILE_WIDTH)
                start, count = start + len(run), count + len(run)
                if len(tile) == TILE_BYTES:
                    self._changed[key] = bytes(tile)
                    parents.append(perfect_root(tile))
                    tile = bytearray()
                else:
                    self._changed[key] = None  # partial: its content is read when taken
            self._partial[level] = tile
            nodes, level = parents, level + 1

    def take_tiles(self) -> dict[TileKey, bytes]:
        """The tiles changed since the last call, with their content (a partial tile as it is now)."""
        changed, self._changed = self._changed, {}
        tiles: dict[TileKey, bytes] = {}
        for key, content in changed.items():
            if content is None:
                level = key[0]
                if level >= len(self._partial) or not self._partial[level]:
                    continue  # filled up and taken as full since
                content = bytes(self._partial[level])
            tiles[key] = content
        return tiles

    def root(self) -> bytes:
        """The tree's root hash now."""
        peaks: list[bytes] = []
        for tile in reversed(self._partial):
            offset, width = 0, len(tile) // HASH_SIZE
            for height in range(TILE_HEIGHT - 1, -1, -1):
                if width & (1 << height):
                    end = offset + (1 << height)
                    peaks.append(perfect_root(memoryview(tile)[offset * HASH_SIZE : end * HASH_SIZE]))
                    offset = end
        return _fold(peaks) if peaks else EMPTY_ROOT
