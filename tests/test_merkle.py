"""The RFC 9162 tree: known answers from the CT vectors, random trees and proofs, tiles against the reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from audit_plugin.integrity import merkle
from audit_plugin.integrity.tiles import TileReader, TreeEdge, tile_keys_of_size, tiles_for

# The leaves, roots and proofs of the RFC 6962 test tree (transparency-dev/merkle testonly and testdata).
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657")] + [
    bytes.fromhex("606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [  # (index, size, proof)
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
HASHED = [merkle.leaf_hash(leaf) for leaf in LEAVES]


def test_roots_of_the_ct_test_tree() -> None:
    assert merkle.root_of([]).hex() == ROOTS[0] == merkle.EMPTY_ROOT.hex()
    for size in range(1, 9):
        assert merkle.root_of(HASHED[:size]).hex() == ROOTS[size]
        edge = TreeEdge()
        edge.extend(HASHED[:size])
        assert edge.root().hex() == ROOTS[size]


def test_inclusion_proofs_of_the_ct_test_tree() -> None:
    for index, size, expected in INCLUSION:
        proof = merkle.inclusion_proof(index, size, merkle.list_range_hash(HASHED[:size]))
        assert [node.hex() for node in proof] == expected
        root = bytes.fromhex(ROOTS[size])
        assert merkle.verify_inclusion(index, size, HASHED[index], proof, root)
        assert not merkle.verify_inclusion(index, size, HASHED[index], proof, bytes.fromhex(ROOTS[size - 1]))
        assert not merkle.verify_inclusion(index ^ 1, size, HASHED[index], proof, root) or size == 1


def test_consistency_proofs_of_the_ct_test_tree() -> None:
    for old, new, expected in CONSISTENCY:
        proof = merkle.consistency_proof(old, new, merkle.list_range_hash(HASHED[:new]))
        assert [node.hex() for node in proof] == expected
        roots = bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new])
        assert merkle.verify_consistency(old, new, *roots, proof)
        if old != new:
            assert not merkle.verify_consistency(old, new, roots[1], roots[0], proof)  # swapped roots
            assert not merkle.verify_consistency(old, new, *roots, proof[:-1])  # truncated
            assert not merkle.verify_consistency(old, new, *roots, [*proof, proof[0]])  # trailing garbage


def test_the_edge_cases_the_ct_vectors_name() -> None:
    empty, one = merkle.EMPTY_ROOT, bytes.fromhex(ROOTS[1])
    assert not merkle.verify_consistency(0, 1, empty, one, [])  # from the empty tree: meaningless
    assert not merkle.verify_consistency(0, 0, empty, empty, [])
    assert not merkle.verify_consistency(2, 1, one, one, [])  # shrank
    assert not merkle.verify_consistency(1, 1, one, one, [one])  # equal sizes need an empty proof
    assert not merkle.verify_inclusion(0, 0, one, [], empty)
    assert not merkle.verify_inclusion(1, 1, one, [], one)
    assert merkle.verify_inclusion(0, 1, one, [], one)


def _flip(proof: list[bytes], item: int, bit: int) -> list[bytes]:
    changed = bytearray(proof[item])
    changed[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:item], bytes(changed), *proof[item + 1 :]]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600), st.data())
def test_inclusion_proofs_verify_and_any_flipped_bit_fails(size: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    root = merkle.root_of(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(index, size, merkle.list_range_hash(leaves))
    assert merkle.verify_inclusion(index, size, leaves[index], proof, root)
    bit = data.draw(st.integers(0, 255))
    assert not merkle.verify_inclusion(index, size, _flip([leaves[index]], 0, bit)[0], proof, root)
    assert not merkle.verify_inclusion(index, size, leaves[index], proof, _flip([root], 0, bit)[0])
    if proof:
        item = data.draw(st.integers(0, len(proof) - 1))
        assert not merkle.verify_inclusion(index, size, leaves[index], _flip(proof, item, bit), root)
    other = data.draw(st.integers(0, size - 1))
    if other != index:
        assert not merkle.verify_inclusion(other, size, leaves[index], proof, root)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600), st.data())
def test_consistency_proofs_verify_and_any_flipped_bit_fails(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new))
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(new)]
    old_root, new_root = merkle.root_of(leaves[:old]), merkle.root_of(leaves)
    proof = merkle.consistency_proof(old, new, merkle.list_range_hash(leaves))
    assert merkle.verify_consistency(old, new, old_root, new_root, proof)
    bit = data.draw(st.integers(0, 255))
    assert not merkle.verify_consistency(old, new, _flip([old_root], 0, bit)[0], new_root, proof)
    assert not merkle.verify_consistency(old, new, old_root, _flip([new_root], 0, bit)[0], proof)
    if proof:
        item = data.draw(st.integers(0, len(proof) - 1))
        assert not merkle.verify_consistency(old, new, old_root, new_root, _flip(proof, item, bit))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=8), st.data())
def test_tiles_give_the_reference_tree_at_every_size(steps: list[int], data: st.DataObject) -> None:
    total = sum(steps)
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(total)]
    edge, stored, size = TreeEdge(), {}, 0
    for step in steps:
        edge.extend(leaves[size : size + step])
        size += step
        stored.update(edge.take_tiles())
        assert edge.root() == merkle.root_of(leaves[:size])
        reloaded = TreeEdge(size, {key: stored[key] for key in tile_keys_of_size(size)})
        assert reloaded.root() == edge.root()
    old = data.draw(st.integers(1, total))
    index = data.draw(st.integers(0, old - 1))
    ranges = merkle.inclusion_ranges(index, old)
    reader = TileReader({key: stored[key] for key in tiles_for([*ranges, (0, old)])})
    assert reader.root(old) == merkle.root_of(leaves[:old])  # an older size from the grown tiles
    assert merkle.inclusion_proof(index, old, reader.range_hash) == merkle.inclusion_proof(
        index, old, merkle.list_range_hash(leaves[:old])
    )
    proof = merkle.consistency_proof(old, total, TileReader(stored).range_hash)
    assert merkle.verify_consistency(old, total, merkle.root_of(leaves[:old]), edge.root(), proof)
