"""Profile the audited bus (64 senders) with cProfile and print the top functions by own time.

python benchmarks/profile_bus.py [sqlite|postgresql] [buffered|commit] [messages]
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks import stores
from benchmarks.bus import run_bus
from benchmarks.common import make_messages, postgres_store, sqlite_store


async def main(kind: str, durability: str, count: int) -> None:
    open_store = sqlite_store if kind == "sqlite" else postgres_store
    async with open_store() as store:
        await stores.prepare(store)
        messages = make_messages(count)
        profile = cProfile.Profile()
        profile.enable()
        run = await run_bus(store, messages, durability)
        profile.disable()
        print(f"{kind} {durability}: {count / run.seconds:,.0f} msg/s under the profiler")
        pstats.Stats(profile).sort_stats(sys.argv[4] if len(sys.argv) > 4 else "tottime").print_stats(45)


if __name__ == "__main__":
    arguments = sys.argv[1:] + ["sqlite", "buffered", "20000"][len(sys.argv) - 1 :]
    asyncio.run(main(arguments[0], arguments[1], int(arguments[2])))
