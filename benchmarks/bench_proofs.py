"""What the Merkle tree costs and how fast its proofs are.

* Write throughput of the same trail with and without the tree
  (``merkle_tree=False``), variants alternated in one run, median of the
  rounds; the time runs until ``close()`` returns, so the tree's last
  additions are counted too.
* An inclusion proof from the store's tiles at 1M (and, with ``--leaves
  10000000``, 10M) leaves: a synthetic tree of that size is stored (as the
  trail stores it, tile by tile), then proofs for random leaves are made the
  way ``prove()`` makes them (one tile query, then hashing).
* ``prove()`` on a real trail, and ``check_bundle()`` of its bundle (no
  database), in process; ``audit-plugin check-proof`` as a process.

Run: ``.venv/bin/python benchmarks/bench_proofs.py [--messages 20000] [--rounds 3] [--leaves 1000000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit_plugin import MessageAuditTrail, MessageStatus
from audit_plugin.integrity import merkle
from audit_plugin.integrity.proof_bundle import check_bundle
from audit_plugin.integrity.tiles import TileReader, TreeEdge, tiles_for
from benchmarks.common import make_messages


async def write_run(url: str, messages: int, tree: bool) -> float:
    batch = make_messages(messages)
    started = time.perf_counter()
    trail = MessageAuditTrail(url, merkle_tree=tree)
    await trail.initialize()
    futures = [await trail.enqueue_message(message) for message in batch]
    for message in batch[::2]:
        futures.append(await trail.enqueue_status(_delivered(message.message_id)))
    await asyncio.gather(*futures)
    await trail.close()
    return (messages * 1.5) / (time.perf_counter() - started)


def _delivered(message_id: str):  # type: ignore[no-untyped-def]
    from audit_plugin.model.records import StatusUpdate

    return StatusUpdate.build(message_id, MessageStatus.DELIVERED)


async def throughput(messages: int, rounds: int) -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    for round_number in range(rounds):
        for tree in (round_number % 2 == 0, round_number % 2 != 0):  # alternate which variant goes first
            with tempfile.TemporaryDirectory() as folder:
                rates[tree].append(await write_run(f"sqlite+aiosqlite:///{folder}/a.db", messages, tree))
    with_tree, without = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"sqlite: write throughput, {messages:,} messages + {messages // 2:,} status updates, median of {rounds}")
    print(f"  without the Merkle tree (baseline)  {without:10,.0f} operations/s  1.00x")
    print(f"  with the Merkle tree                {with_tree:10,.0f} operations/s  {with_tree / without:.2f}x")
    print(f"  runs: without {[round(r) for r in rates[False]]}, with {[round(r) for r in rates[True]]}")


async def proof_speed(leaves: int, samples: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        trail = MessageAuditTrail(f"sqlite+aiosqlite:///{folder}/t.db")
        await trail.initialize()
        storage = trail.backend.tree_storage()  # type: ignore[attr-defined]
        edge, started = TreeEdge(), time.perf_counter()
        for start in range(0, leaves, 100_000):
            edge.extend(merkle.leaf_hash(i.to_bytes(8, "big")) for i in range(start, min(leaves, start + 100_000)))
            await storage.save("synthetic", 1, edge.size, edge.root(), edge.take_tiles())
        built = time.perf_counter() - started
        root, times = edge.root(), []
        for _ in range(samples):
            index = random.randrange(leaves)
            began = time.perf_counter()
            ranges = merkle.inclusion_ranges(index, leaves)
            reader = TileReader(await storage.tiles("synthetic", tiles_for([*ranges, (0, leaves)])))
            proof = [reader.range_hash(a, b) for a, b in ranges]
            assert reader.root(leaves) == root
            times.append(time.perf_counter() - began)
            assert merkle.verify_inclusion(index, leaves, merkle.leaf_hash(index.to_bytes(8, "big")), proof, root)
        await trail.close()
    times.sort()
    print(f"inclusion proof from stored tiles at {leaves:,} leaves ({built:.0f} s to build), {samples} random leaves:")
    print(f"  median {statistics.median(times) * 1000:.2f} ms, p95 {times[int(samples * 0.95)] * 1000:.2f} ms, "
          f"max {times[-1] * 1000:.2f} ms")  # fmt: skip


async def prove_and_check(messages: int, samples: int) -> None:
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/p.db"
        async with MessageAuditTrail(url) as trail:
            batch = make_messages(messages)
            await asyncio.gather(*[await trail.enqueue_message(message) for message in batch])
            await trail.sign_checkpoint(key)
            prove_times, check_times, bundle = [], [], b""
            for _ in range(samples):
                message_id = random.choice(batch).message_id
                began = time.perf_counter()
                bundle = (await trail.prove(message_id)).to_json()
                prove_times.append(time.perf_counter() - began)
                began = time.perf_counter()
                assert check_bundle(bundle, key.public_key()).ok
                check_times.append(time.perf_counter() - began)
        path, public = Path(folder) / "b.json", Path(folder) / "k.pem"
        path.write_bytes(bundle)
        public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        cli = Path(sys.executable).with_name("audit-plugin")
        process_times = []
        for _ in range(5):
            began = time.perf_counter()
            subprocess.run([str(cli), "check-proof", str(path), "--public-key", str(public)], check=True,  # noqa: ASYNC221
                           capture_output=True, env={**os.environ, "NO_COLOR": "1"})  # fmt: skip
            process_times.append(time.perf_counter() - began)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import audit_plugin.cli"], check=True)  # noqa: ASYNC221
        imports = time.perf_counter() - began
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    print(f"a trail of {messages:,} messages, {samples} random records:")
    print(f"  trail.prove()   median {ms(prove_times):.2f} ms (record, entries, tiles: three queries)")
    print(f"  check_bundle()  median {ms(check_times):.2f} ms (no database)")
    print(f"  audit-plugin check-proof, the whole process: median {ms(process_times):.0f} ms "
          f"(of which starting Python and importing the CLI: {imports * 1000:.0f} ms)")  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--leaves", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--samples", type=int, default=200)
    arguments = parser.parse_args()
    await throughput(arguments.messages, arguments.rounds)
    for leaves in arguments.leaves:
        await proof_speed(leaves, arguments.samples)
    await prove_and_check(arguments.messages, arguments.samples)


if __name__ == "__main__":
    asyncio.run(main())
