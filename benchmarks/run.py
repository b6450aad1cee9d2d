"""Run the throughput benchmarks and print one table; every ratio is measured side by side in this run.

    python benchmarks/run.py            # default: ~6 minutes on 2 cores
    python benchmarks/run.py --quick    # smaller and one repetition: a ~15 s smoke run
    python benchmarks/run.py --memory   # also peak memory at 1,000,000 messages (subprocesses, ~9 min more)
    python benchmarks/run.py --append   # also appending to an empty store vs a 1,000,000-message one (~25-30 min more)
    python benchmarks/run.py --faststream   # also FastStream on Redis with/without AuditMiddleware (needs Redis)

PostgreSQL runs on ``AUDIT_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) in a throwaway database
``bench_<random>`` dropped afterwards; SQLite in temporary files. Each
measurement is repeated (``--repeat``), the variants interleaved, and the
median is reported with its spread ((max-min)/median).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks import append, hot_path, stores
from benchmarks.bus import run_bus
from benchmarks.common import (
    TRAIL_OPTIONS,
    Row,
    Store,
    make_messages,
    median,
    postgres_available,
    postgres_store,
    print_table,
    spread,
    sqlite_store,
    timed,
)

RAW_PATH = {"postgresql": "asyncpg COPY", "sqlite": "sqlite3 executemany"}
ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def store_section(store: Store, args: argparse.Namespace) -> list[Row]:
    messages = make_messages(args.messages)
    seed_messages = messages[: args.seed_messages]
    paths = (("raw", messages), ("raw_same_rows", messages), ("writer", messages), ("seed", seed_messages))
    rates: dict[str, list[float]] = {path: [] for path, _ in paths}
    for _ in range(args.repeat):
        for path, batch in paths:
            await stores.prepare(store)
            seconds = await timed(lambda path=path, batch=batch: stores.PATHS[path](store, batch))
            stored = await stores.count_rows(store)
            assert stored == len(batch), f"{path}: stored {stored} of {len(batch)}"
            rates[path].append(len(batch) / seconds)
    name = store.kind
    return [
        (f"{name}: raw driver, records only ({RAW_PATH[name]}, 1k msg/tx)", _rate(rates["raw"]), "", ""),
        (
            f"{name}: raw driver, same rows (record + lifecycle entry)",
            _rate(rates["raw_same_rows"]),
            "",
            "",
        ),
        (
            f"{name}: trail writer",
            _rate(rates["writer"]),
            _ratio(rates["writer"], rates["raw_same_rows"], "of raw, same rows"),
            ">= 0.7",
        ),
        (f"{name}: trail writer", "", _ratio(rates["writer"], rates["raw"], "of raw, records only"), ""),
        (
            f"{name}: seed way (ORM, commit per message)",
            _rate(rates["seed"]),
            _ratio(rates["writer"], rates["seed"], "x: writer / seed", digits=0),
            ">= 30x",
        ),
    ]


async def bus_section(store: Store, args: argparse.Namespace) -> list[Row]:
    messages = make_messages(args.bus_messages)
    rates: dict[str, list[float]] = {"none": [], "buffered": [], "commit": []}
    p50: list[float] = []
    p99: list[float] = []
    for _ in range(args.repeat):
        for mode in ("none", "buffered", "commit"):
            await stores.prepare(store)
            run = await run_bus(store, messages, None if mode == "none" else mode)
            rates[mode].append(len(messages) / run.seconds)
            if mode == "commit":
                p50.append(percentile(run.latencies, 0.50))
                p99.append(percentile(run.latencies, 0.99))
            if mode != "none":
                assert run.dropped == 0 and run.commit_timeouts == 0
                assert await stores.count_rows(store) == len(messages)
    name = store.kind
    return [
        (f"{name}: bus, no plugin, 64 senders", _rate(rates["none"]), "", ""),
        (
            f"{name}: bus + audit, buffered",
            _rate(rates["buffered"]),
            _ratio(rates["buffered"], rates["none"], "of bare"),
            ">= 0.5",
        ),
        (
            f"{name}: bus + audit, commit",
            _rate(rates["commit"]),
            _ratio(rates["commit"], rates["none"], "of bare"),
            ">= 0.25",
        ),
        (
            f"{name}: send() latency, commit, 64 senders",
            f"p50 {median(p50) * 1e3:.2f} ms, p99 {median(p99) * 1e3:.2f} ms",
            "",
            "",
        ),
    ]


def _ratio(numerators: list[float], denominators: list[float], label: str, digits: int = 2) -> str:
    """Median of the per-repetition ratios (each pair measured back to back), with half their spread."""
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
    noise = f" ±{spread(ratios) / 2:.0%}" if len(ratios) > 1 else ""
    return f"{median(ratios):.{digits}f}{noise} {label}"


def _rate(values: list[float]) -> str:
    noise = f" ±{spread(values) / 2:.0%}" if len(values) > 1 else ""
    return f"{median(values):>10,.0f} msg/s{noise}"


def memory_section(count: int) -> list[Row]:
    rows: list[Row] = []
    for mode in ("none", "buffered", "commit"):
        output = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", str(count), mode],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        rows.append(
            (
                f"sqlite: peak RSS, {count:,} messages, {mode}",
                f"{result['peak_rss_mib']} MiB",
                f"{result['seconds']} s",
                f"queue <= {result.get('deepest_queue_sampled', '-')}",
            )
        )
    return rows


async def main(args: argparse.Namespace) -> None:
    backends: list[Callable[[], AbstractAsyncContextManager[Store]]] = [sqlite_store]
    if not args.no_postgres:
        if await postgres_available():
            backends.append(postgres_store)
        else:
            print("PostgreSQL not reachable; running SQLite only", file=sys.stderr)
    rows: list[Row] = []
    for open_store in backends:
        async with open_store() as store:
            print(f"... {store.kind}: writer vs raw vs seed", file=sys.stderr)
            rows += await store_section(store, args)
            print(f"... {store.kind}: bus with and without audit", file=sys.stderr)
            rows += await bus_section(store, args)
    async with sqlite_store() as store:
        print("... hot path", file=sys.stderr)
        for piece, micros in (await hot_path.measure(store, args.hot_path_messages)).items():
            rows.append((f"hot path: {piece}", f"{micros:.2f} µs/msg", "", ""))
    if args.append:
        options = append.parse_args([*(["--quick"] if args.quick else []), *(["--no-postgres"] * args.no_postgres)])
        rows += append.table_rows(await append.measure(options), options)
    if args.faststream:
        from benchmarks import faststream as faststream_benchmark

        print("... FastStream on Redis, with and without AuditMiddleware", file=sys.stderr)
        rows += await faststream_benchmark.main(faststream_benchmark.parse_args(["--quick"] if args.quick else []))
    if args.memory:
        print("... memory (subprocesses)", file=sys.stderr)
        rows += memory_section(args.memory_messages)
    print(
        f"messages: {args.messages:,} per store run, {args.seed_messages:,} for the seed way, "
        f"{args.bus_messages:,} per bus run; repetitions: {args.repeat} (median ± half the spread)"
    )
    print_table(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed-messages", type=int, default=2_000)
    parser.add_argument("--bus-messages", type=int, default=20_000)
    parser.add_argument("--hot-path-messages", type=int, default=50_000)
    parser.add_argument(
        "--no-hash-chain", action="store_true", help="measure trails with hash_chain=False (lifecycle kept, no hashes)"
    )
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (subprocesses)")
    parser.add_argument("--append", action="store_true", help="also appending to an empty vs a large store (append.py)")
    parser.add_argument("--faststream", action="store_true", help="also FastStream on Redis (benchmarks/faststream.py)")
    parser.add_argument("--memory-messages", type=int, default=1_000_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    if args.no_hash_chain:
        TRAIL_OPTIONS["hash_chain"] = False
    if args.quick:
        args.repeat, args.messages, args.seed_messages, args.bus_messages = 1, 10_000, 500, 5_000
        args.hot_path_messages = 10_000
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
