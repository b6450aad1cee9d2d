"""Run the throughput benchmarks and print one table, then every goal side by side; all measured in this run.

    python benchmarks/run.py            # default: ~10 minutes on 2 cores
    python benchmarks/run.py --quick    # smaller and one repetition: a ~1 minute smoke run
    python benchmarks/run.py --memory   # also peak memory at 1,000,000 messages (subprocesses, ~9 min more)
    python benchmarks/run.py --append   # also appending to an empty store vs a 1,000,000-message one (~25-30 min more)
    python benchmarks/run.py --faststream   # also FastStream on Redis with/without AuditMiddleware (needs Redis)

PostgreSQL runs on ``AUDIT_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) in a throwaway database
``bench_<random>`` dropped afterwards; SQLite in temporary files. Each
measurement is repeated (``--repeat``), the variants interleaved, and the
median is reported with its spread ((max-min)/median).

The goals table at the end holds, per backend: the public API (64
concurrent ``log_message`` callers, commit semantics) against the raw driver
committing the same rows 64 per transaction; the writer with large batches
against the raw driver's 1,000-row transactions; ``verify()`` in entries per
second; the ``audit_pre_send`` hot path in µs (SQLite, hash chain on); with
``--append``, appending to a 1,000,000-message store against an empty one.
Each line shows the measured figure, the goal, and measured/goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks import append, bench_integrity, hot_path, stores
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
    ratios,
    spread,
    sqlite_store,
    timed,
)

RAW_PATH = {"postgresql": "asyncpg COPY", "sqlite": "sqlite3 executemany"}
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Goal:
    """One goal of the write path: a figure measured in this run against its target."""

    name: str
    measured: float
    target: float
    at_least: bool
    """``measured >= target`` meets it (a ratio, a rate); else ``measured <= target`` does (a cost)."""
    unit: str = ""
    digits: int = 2

    def row(self) -> Row:
        met = self.measured >= self.target if self.at_least else self.measured <= self.target
        sign = ">=" if self.at_least else "<="
        return (
            self.name,
            f"{self.measured:,.{self.digits}f}{self.unit}",
            f"{sign} {self.target:,g}{self.unit}",
            f"{self.measured / self.target:.2f} ({'met' if met else 'missed'})",
        )


GOALS_HEADER: Row = ("goal", "measured", "goal", "measured/goal")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def store_section(store: Store, args: argparse.Namespace, goals: list[Goal]) -> list[Row]:
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
    writer_ratio = median(ratios(rates["writer"], rates["raw_same_rows"]))
    goals.append(Goal(f"{name}: writer, large batches / raw same rows, 1,000 per tx", writer_ratio, 0.7, True, "x"))
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


async def api_section(store: Store, args: argparse.Namespace, goals: list[Goal]) -> list[Row]:
    """64 concurrent ``log_message`` callers against the raw driver writing the same rows 64 per transaction."""
    messages = make_messages(args.api_messages)
    rates: dict[str, list[float]] = {"raw_same_rows_64": [], "api": []}
    for _ in range(args.repeat):
        for path in rates:
            await stores.prepare(store)
            seconds = await timed(lambda path=path: stores.PATHS[path](store, messages))
            assert await stores.count_rows(store) == len(messages), path
            rates[path].append(len(messages) / seconds)
    name = store.kind
    callers = stores.API_CALLERS
    goals.append(
        Goal(
            f"{name}: public API, {callers} callers / raw same rows, {callers} per tx",
            median(ratios(rates["api"], rates["raw_same_rows_64"])),
            0.7,
            True,
            "x",
        )
    )
    return [
        (f"{name}: raw driver, same rows, {callers} msg/tx", _rate(rates["raw_same_rows_64"]), "", ""),
        (
            f"{name}: public API, {callers} concurrent log_message callers",
            _rate(rates["api"]),
            _ratio(rates["api"], rates["raw_same_rows_64"], f"of raw, same rows, {callers}/tx"),
            ">= 0.7",
        ),
    ]


async def verify_section(store: Store, args: argparse.Namespace, goals: list[Goal]) -> list[Row]:
    """``verify()`` of a freshly written chain (see ``bench_integrity.measure_verify``)."""
    await stores.prepare(store)
    run = await bench_integrity.measure_verify(store.url, args.verify_rows)
    goals.append(Goal(f"{store.kind}: verify(), entries/s", run.rate, bench_integrity.VERIFY_GOAL, True, digits=0))
    ratio = f"{run.rate / bench_integrity.VERIFY_GOAL:.2f} of the goal"
    return [
        (
            f"{store.kind}: verify() of a {args.verify_rows:,}-entry chain",
            f"{run.rate:>10,.0f} entries/s",
            ratio,
            f">= {bench_integrity.VERIFY_GOAL:,}",
        )
    ]


def hot_path_goal(results: dict[str, float]) -> Goal:
    return Goal("hot path: audit_pre_send, hash chain on", results[hot_path.TOTAL_ON], hot_path.GOAL_US, False, " µs")


def append_goals(rates: append.Rates) -> list[Goal]:
    """Large/small store throughput per backend and workload, default ids."""
    goals = []
    for backend, kind, workload, size in rates:
        if kind == append.DEFAULT_IDS and size == "large":
            small = rates[backend, kind, workload, "small"]
            large = rates[backend, kind, workload, "large"]
            goals.append(
                Goal(f"{backend}: append, {workload}, 1M stored / empty", median(ratios(large, small)), 0.8, True, "x")
            )
    return goals


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
    each = ratios(numerators, denominators)
    noise = f" ±{spread(each) / 2:.0%}" if len(each) > 1 else ""
    return f"{median(each):.{digits}f}{noise} {label}"


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
    goals: list[Goal] = []
    for open_store in backends:
        async with open_store() as store:
            print(f"... {store.kind}: writer vs raw vs seed", file=sys.stderr)
            rows += await store_section(store, args, goals)
            print(f"... {store.kind}: public API, 64 callers, vs raw 64 per transaction", file=sys.stderr)
            rows += await api_section(store, args, goals)
            print(f"... {store.kind}: bus with and without audit", file=sys.stderr)
            rows += await bus_section(store, args)
            print(f"... {store.kind}: verify()", file=sys.stderr)
            rows += await verify_section(store, args, goals)
    async with sqlite_store() as store:
        print("... hot path", file=sys.stderr)
        results = await hot_path.measure(store, args.hot_path_messages, args.hot_path_repeat)
        rows += hot_path.table_rows(results)
        goals.append(hot_path_goal(results))
    if args.append:
        options = append.parse_args([*(["--quick"] if args.quick else []), *(["--no-postgres"] * args.no_postgres)])
        append_rates = await append.measure(options)
        rows += append.table_rows(append_rates, options)
        goals += append_goals(append_rates)
    if args.faststream:
        from benchmarks import faststream as faststream_benchmark

        print("... FastStream on Redis, with and without AuditMiddleware", file=sys.stderr)
        rows += await faststream_benchmark.main(faststream_benchmark.parse_args(["--quick"] if args.quick else []))
    if args.memory:
        print("... memory (subprocesses)", file=sys.stderr)
        rows += memory_section(args.memory_messages)
    print(
        f"messages: {args.messages:,} per store run, {args.api_messages:,} per public-API run, "
        f"{args.seed_messages:,} for the seed way, {args.bus_messages:,} per bus run; "
        f"repetitions: {args.repeat} (median ± half the spread); hot path: fastest of {args.hot_path_repeat} runs "
        f"of {args.hot_path_messages:,}; chain: {'off' if args.no_hash_chain else 'on'}"
    )
    print_table(rows)
    print_table([goal.row() for goal in goals], GOALS_HEADER)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed-messages", type=int, default=2_000)
    parser.add_argument("--bus-messages", type=int, default=20_000)
    parser.add_argument("--api-messages", type=int, default=20_000)
    parser.add_argument("--hot-path-messages", type=int, default=2_000)
    parser.add_argument("--hot-path-repeat", type=int, default=30)
    parser.add_argument("--verify-rows", type=int, default=100_000)
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
        args.api_messages, args.hot_path_repeat, args.verify_rows = 5_000, 10, 10_000
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
