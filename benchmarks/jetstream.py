"""The multi-machine path measured against its own floors: NATS JetStream publish, and COPY into PostgreSQL.

    python benchmarks/jetstream.py                 # 20,000 messages, 3 repetitions
    python benchmarks/jetstream.py --messages 5000 --repeat 1

Per repetition, the same messages (16 agents, ~200-byte payloads) go:

* ``publish``: through a ``nats://`` trail (``?shards=2``) into a fresh
  stream: captured, checked, digested, queued, packed per shard into
  batches and published, until the stream acknowledged all (``flush()``);
* ``bare publish, same bytes``: the very messages that trail published
  (read back from its stream: subjects, headers, bodies), published again
  with nats-py's ``publish_async`` into another stream, every
  acknowledgement awaited: the transport's floor;
* ``bare publish, one per record``: each record encoded alone and published
  as its own message the same way: what a producer without batching does;
* ``least producer``: the least any producer of these records can do, as a
  tight loop in this file rather than the library, packing as many records
  per message as the trail did and publishing the same way: each message's
  fields and payload encoded, with or without the message's field checks
  (``Message.validate``, which the trail runs at the edge) and with or
  without two SHA-256 digests per record (format 2 carries the record's and
  its lifecycle entry's). Each is a lower bound of what the trail's publish
  does, so it shows in the same run how close to the bare publish a producer
  that checks and digests each record can get at all;
* ``ingest x1`` / ``ingest x2``: one ingester process owning both shards /
  two owning one each drain one of those streams into a fresh PostgreSQL
  database (the default layout: partitioned, statistics rollups), timed
  from the moment they are connected until the last message is acknowledged.
  Each process's CPU seconds per 10,000 records are printed (to estimate
  machines with more cores), and the rest of the machine's CPU (PostgreSQL,
  NATS and anything else running) over the same interval;
* ``COPY``: asyncpg ``copy_records_to_table`` of the same rows (each record
  and its lifecycle entry, as the ingesters store them) into the same
  schema in a fresh database, as many per transaction as the ingesters'
  writers take.

The compared variants alternate within each repetition; the table shows
medians with the spread (max - min over median) and the ratios per
repetition. NATS on ``AUDIT_BENCH_NATS_URL`` (default
``nats://127.0.0.1:4222``); PostgreSQL as the other benchmarks
(``AUDIT_BENCH_POSTGRES_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import msgspec
import nats
import orjson

from audit_plugin import Message, MessageAuditTrail
from audit_plugin.integrity.shards import ShardedChains
from audit_plugin.jetstream import wire
from audit_plugin.model.records import record_row
from benchmarks import stores
from benchmarks.common import make_messages, median, postgres_available, postgres_store, spread

NATS_URL = os.environ.get("AUDIT_BENCH_NATS_URL", "nats://127.0.0.1:4222")
SHARDS = 2
BATCH = 5000
"""Operations per transaction, for the ingesters' writers and for ``COPY``."""


# -- publishing ------------------------------------------------------------------------------


async def publish(source: str, messages: list[Message]) -> float:
    """Seconds to publish every record through a ``nats://`` trail (until the stream acknowledged all)."""
    async with MessageAuditTrail(source, batch_size=1000) as trail:
        started = time.perf_counter()
        for message in messages:
            if trail.enqueue_message_nowait(message) is None:
                await trail.enqueue_message(message)
            if trail.writer_stats.queue_depth >= 1000:
                await asyncio.sleep(0)
        await trail.flush()
        return time.perf_counter() - started


async def read_back(stream: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """Every message of ``stream`` (subject, body, headers), left in place."""
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        state = (await js.stream_info(stream)).state
        found = []
        for sequence in range(state.first_seq, state.last_seq + 1):
            message = await js.get_msg(stream, sequence)
            found.append((message.subject, message.data, dict(message.headers or {})))
        return found
    finally:
        await client.close()


async def bare_publish(stream: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> float:
    """Seconds for nats-py alone to publish ``messages`` (renamed into ``stream``) and get every acknowledgement."""
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"], retention="workqueue", storage="file")
        renamed = [(f"{stream}.{subject.split('.', 1)[1]}", body, headers) for subject, body, headers in messages]
        started = time.perf_counter()
        futures = [await js.publish_async(s, body, headers=headers or None) for s, body, headers in renamed]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await client.close()


LEAST_PRODUCERS: dict[str, tuple[bool, bool]] = {
    "least producer: encode only": (False, False),
    "least producer: check and encode": (True, False),
    "least producer: encode and digest": (False, True),
    "least producer: check, encode and digest": (True, True),
}
"""The variants of :func:`least_producer`: whether each checks the message's fields, whether it digests each record."""


async def least_producer(stream: str, messages: list[Message], per_message: int, *, check: bool, digest: bool) -> float:
    """Seconds for the least a producer can do per record (see the module docs), published into ``stream``.

    Each record's fields and payload are encoded; with ``check``, the
    message's field checks run first; with ``digest``, two SHA-256 digests of
    the record are computed (of its encoded bytes: cheaper than the canonical
    forms the trail digests). Records are packed ``per_message`` to a
    MessagePack body and every publish's acknowledgement is awaited, as the
    trail does.
    """
    encode = msgspec.msgpack.Encoder().encode
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"], retention="workqueue", storage="file")
        subject = f"{stream}.ops"
        started = time.perf_counter()
        futures, chunk = [], []
        for message in messages:
            if check:
                message.validate()
            item: tuple[Any, ...] = (
                message.message_id,
                message.from_agent,
                message.to_agent,
                message.message_type,
                message.priority,
                message.correlation_id,
                message.reply_to,
                message.timestamp,
                message.ttl_seconds,
                orjson.dumps(message.payload),
            )
            if digest:
                record_digest = hashlib.sha256(encode(item)).hexdigest()
                item = (*item, record_digest, hashlib.sha256(record_digest.encode()).hexdigest())
            chunk.append(item)
            if len(chunk) == per_message:
                futures.append(await js.publish_async(subject, encode(chunk)))
                chunk = []
        if chunk:
            futures.append(await js.publish_async(subject, encode(chunk)))
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await client.close()


def one_per_record(messages: list[Message]) -> list[tuple[str, bytes, dict[str, str]]]:
    """Each record alone, as a producer without batching would publish it (its row, encoded, on one subject)."""
    chains = ShardedChains()
    encode = msgspec.msgpack.Encoder().encode
    return [("x.records", encode(wire.record_item(chains.ledgered(record_row(m)))), {}) for m in messages]


async def copy_in_stream(source: str, stream: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> None:
    """Publish ``messages`` into the trail stream ``stream`` (its description says it has :data:`SHARDS` shards)."""
    async with MessageAuditTrail(f"{source}?shards={SHARDS}"):
        pass  # creates the stream as producers do
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        futures = [
            await js.publish_async(f"{stream}.{subject.split('.', 1)[1]}", body, headers=headers)
            for subject, body, headers in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await client.close()


async def delete_streams(names: list[str]) -> None:
    client = await nats.connect(NATS_URL)
    try:
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await client.jetstream().delete_stream(name)
    finally:
        await client.close()


# -- ingesting -------------------------------------------------------------------------------


def _ingester_process(source: str, database_url: str, shards: tuple[int, ...], ready: Any, results: Any) -> None:
    from audit_plugin.jetstream.ingest import JetStreamIngester

    class Timed(JetStreamIngester):
        last_ack = 0.0

        def _count(self, pairs: Any, *, orphans: Any) -> None:
            super()._count(pairs, orphans=orphans)
            Timed.last_ack = time.time()

    async def run() -> None:
        async with MessageAuditTrail(database_url, shards=SHARDS, batch_size=BATCH) as trail:
            ingester = Timed(source, trail, shards=shards, batch_size=BATCH, fetch_timeout=0.5)
            await asyncio.to_thread(ready.wait)
            cpu = time.process_time()
            stats = await ingester.run(exit_when_idle=True)
            results.put((Timed.last_ack, time.process_time() - cpu, stats.records, stats.quarantined))

    asyncio.run(run())


def _machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes), from ``/proc/stat``."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(value) for index, value in enumerate(fields) if index not in (3, 4))  # not idle, not iowait
    return busy / os.sysconf("SC_CLK_TCK")


async def ingest(source: str, database_url: str, owners: list[tuple[int, ...]]) -> dict[str, float]:
    """Drain ``source`` into ``database_url`` with one ingester process per entry of ``owners``.

    Returns the rate (records/s), each ingester's CPU seconds per 10,000
    records it stored, and the rest of the machine's per 10,000 records.
    """
    async with MessageAuditTrail(database_url, shards=SHARDS):
        pass  # the schema and the shards' chains, once
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(len(owners) + 1)
    results = context.Queue()
    processes = [
        context.Process(target=_ingester_process, args=(source, database_url, shards, ready, results))
        for shards in owners
    ]
    for process in processes:
        process.start()
    await asyncio.to_thread(ready.wait)
    started, machine = time.time(), _machine_cpu_seconds()
    outcomes = [await asyncio.to_thread(results.get, True, 600) for _ in processes]
    machine = _machine_cpu_seconds() - machine
    for process in processes:
        await asyncio.to_thread(process.join)
        if process.exitcode != 0:
            raise RuntimeError(f"an ingester failed with exit code {process.exitcode}")
    records = sum(outcome[2] for outcome in outcomes)
    if any(outcome[3] for outcome in outcomes):
        raise RuntimeError("an ingester quarantined messages: the benchmark's own messages must all be stored")
    elapsed = max(outcome[0] for outcome in outcomes) - started
    ingesters_cpu = sum(outcome[1] for outcome in outcomes)
    return {
        "rate": records / elapsed,
        "cpu per 10k each": [10_000 * outcome[1] / max(1, outcome[2]) for outcome in outcomes],  # type: ignore[dict-item]
        "rest per 10k": 10_000 * max(0.0, machine - ingesters_cpu) / records,
    }


async def copy_rate(messages: list[Message]) -> float:
    async with postgres_store() as store:
        await stores.prepare(store)
        started = time.perf_counter()
        await stores.write_raw(store, messages, lifecycle=True, batch_size=BATCH)
        return len(messages) / (time.perf_counter() - started)


# -- one repetition ------------------------------------------------------------------------------


async def one_round(count: int, index: int) -> dict[str, Any]:
    """Every measurement once, for ``count`` fresh messages; variants alternate with ``index``."""
    messages = make_messages(count)
    first, second, third = (f"bench_{uuid.uuid4().hex[:10]}" for _ in range(3))
    least = [f"bench_{uuid.uuid4().hex[:10]}" for _ in LEAST_PRODUCERS]
    results: dict[str, Any] = {}
    try:
        results["publish"] = count / await publish(f"{NATS_URL}/{first}?shards={SHARDS}", messages)
        published = await read_back(first)
        per_message = math.ceil(count / len(published))
        bare = [
            ("bare publish, same bytes", lambda: bare_publish(second, published)),
            ("bare publish, one per record", lambda: bare_publish(third, one_per_record(messages))),
        ]
        for name, run in bare if index % 2 == 0 else bare[::-1]:
            results[name] = count / await run()
        least_variants = list(zip(LEAST_PRODUCERS.items(), least, strict=True))
        for (name, (check, digest)), stream in least_variants if index % 2 == 0 else least_variants[::-1]:
            results[name] = count / await least_producer(stream, messages, per_message, check=check, digest=digest)
        results["messages per publish"] = len(published)
        await delete_streams([second, third, *least])
        await copy_in_stream(f"{NATS_URL}/{second}", second, published)  # a second full stream for the other run
        streams = [first, second] if index % 2 == 0 else [second, first]
        variants = [("ingest x1", [tuple(range(SHARDS))]), ("ingest x2", [(shard,) for shard in range(SHARDS)])]
        if index % 2:
            variants.reverse()
        for (name, owners), stream in zip(variants, streams, strict=True):
            async with postgres_store() as store:
                outcome = await ingest(f"{NATS_URL}/{stream}", store.url, owners)
                assert await stores.count_rows(store) == count
            results[name] = outcome["rate"]
            results[f"{name} cpu per 10k"] = outcome["cpu per 10k each"]
            results[f"{name} rest per 10k"] = outcome["rest per 10k"]
    finally:
        await delete_streams([first, second, third, *least])
    results["COPY"] = await copy_rate(messages)
    return results


def _row(name: str, values: list[float], baseline: list[float] | None, goal: str = "") -> str:
    ratio = ""
    if baseline is not None:
        each = [v / b for v, b in zip(values, baseline, strict=True)]
        ratio = f"{median(each):.2f}x ({min(each):.2f}-{max(each):.2f})"
    return f"| {name} | {median(values):,.0f} | {spread(values):.0%} | {ratio} | {goal} |"


async def main(args: argparse.Namespace) -> None:
    if not await postgres_available():
        raise SystemExit("PostgreSQL is not reachable (AUDIT_BENCH_POSTGRES_URL)")
    rounds = []
    for index in range(args.repeat):
        rounds.append(await one_round(args.messages, index))
        print(f"... repetition {index + 1} of {args.repeat} done", file=sys.stderr)

    def column(name: str) -> list[float]:
        return [r[name] for r in rounds]

    print(f"{args.messages:,} messages, {SHARDS} shards, median of {args.repeat} (spread; ratio range)")
    print("| path | records/s | spread | ratio | goal |")
    print("| --- | ---: | ---: | ---: | --- |")
    same_bytes, one_each, copy = (
        column("bare publish, same bytes"),
        column("bare publish, one per record"),
        column("COPY"),
    )
    print(_row("publish (nats:// trail, batched)", column("publish"), same_bytes, ">= 0.5x bare, same bytes"))
    print(_row("  the same, against bare publish one message per record", column("publish"), one_each))
    print(_row("bare publish, same bytes", same_bytes, None))
    print(_row("bare publish, one message per record", one_each, None))
    for name in LEAST_PRODUCERS:
        print(_row(f"{name} (against bare, same bytes)", column(name), same_bytes))
    print(_row("ingest, 1 ingester (both shards)", column("ingest x1"), copy))
    print(_row("ingest, 2 ingesters (a shard each)", column("ingest x2"), copy, ">= 0.5x COPY"))
    print(_row(f"COPY, same rows and schema, {BATCH:,} per transaction", copy, None))
    print(f"messages per publish run: {median(column('messages per publish')):,.0f}")
    for name in ("ingest x1", "ingest x2"):
        each = [value for r in rounds for value in r[f"{name} cpu per 10k"]]
        rest = column(f"{name} rest per 10k")
        print(
            f"{name}: CPU seconds per 10,000 records, each ingester {median(each):.2f} "
            f"({min(each):.2f}-{max(each):.2f}); the rest of the machine (PostgreSQL, NATS, others) {median(rest):.2f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
