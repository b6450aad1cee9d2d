"""PostgreSQL write throughput per table layout: partitioned by day (the default) against unpartitioned.

    python benchmarks/layouts.py                 # 20,000 messages, 3 repetitions: a few minutes on 2 cores
    python benchmarks/layouts.py --messages 5000 --repeat 1

Two throwaway databases, one per layout (``?partitioning=day`` and
``?partitioning=none``), written the two ways of ``benchmarks/stores.py``:
the writer with large batches (one producer, 1,000-operation
transactions) and the public API (64 concurrent ``log_message`` callers,
commit semantics). The layouts alternate within each repetition, each on an
emptied table, and the median of the per-repetition ratios
(partitioned / unpartitioned) is printed with its spread. The partitioned
layout's extra work per write is the operation-id table's row trigger on
the lifecycle and routing rows to partitions; the statistics rollup's
triggers run in both.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks import stores
from benchmarks.common import make_messages, median, postgres_available, postgres_store, ratios, spread, timed

LAYOUTS = ("day", "none")
WAYS = {"writer, large batches": stores.write_with_writer, "public API, 64 callers": stores.write_with_api}


async def main(args: argparse.Namespace) -> None:
    if not await postgres_available():
        sys.exit("PostgreSQL is not reachable (see AUDIT_BENCH_POSTGRES_URL)")
    messages = make_messages(args.messages)
    async with postgres_store() as partitioned, postgres_store() as plain:
        layouts = {
            "day": dataclasses.replace(partitioned, url=partitioned.url + "?partitioning=day"),
            "none": dataclasses.replace(plain, url=plain.url + "?partitioning=none"),
        }
        rates: dict[tuple[str, str], list[float]] = {(way, layout): [] for way in WAYS for layout in LAYOUTS}
        for _ in range(args.repeat):
            for way, write in WAYS.items():
                for layout, store in layouts.items():
                    await stores.prepare(store)
                    seconds = await timed(lambda write=write, store=store: write(store, messages))
                    assert await stores.count_rows(store) == len(messages), (way, layout)
                    rates[way, layout].append(len(messages) / seconds)
    print(f"\nPostgreSQL, {args.messages:,} messages, median of {args.repeat}")
    print(f"  {'':<26}{'by day msg/s':>14}{'none msg/s':>12}{'by day / none':>16}")
    for way in WAYS:
        day, none = rates[way, "day"], rates[way, "none"]
        ratio = ratios(day, none)
        noise = f" ±{spread(ratio) / 2:.0%}" if len(ratio) > 1 else ""
        print(f"  {way:<26}{median(day):>14,.0f}{median(none):>12,.0f}{median(ratio):>11.2f}x{noise}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
