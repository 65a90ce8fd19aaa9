"""Durable fan-in through a collect buffer: one step sends N events, each is handled by a step that returns a
Done, and a gathering step collects the N Done events with ``ctx.collect_events``; CPU µs per member on SQLite
for each N. Flat from N to N is what a buffer whose changes are written incrementally gives.

    python tests/benchmarks/bench_collect.py [--sizes 100,500,2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from durableflow import SQLiteCheckpointer

sys.path.insert(0, str(Path(__file__).parents[2]))
from tests.durability.test_collect_buffers import FanIn  # the workflow the tests pin


async def measure(sizes: list[int], rounds: int, directory: Path) -> None:
    store = SQLiteCheckpointer(directory / "collect.db")
    workflow = FanIn(checkpointer=store, timeout=None)
    print(f"{'N':>6}  {'µs per member (CPU, median of ' + str(rounds) + ')':>34}")
    first = None
    for n in sizes:
        samples = []
        for _ in range(rounds):
            began = time.process_time()
            assert len(await workflow.run(n=n)) == n
            samples.append((time.process_time() - began) / n)
        cost = statistics.median(samples)
        first = first or cost
        print(f"{n:>6}  {cost * 1e6:>34.1f}   ({cost / first:.2f}x the smallest N)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,2000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: N up to 500")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    if args.quick:
        sizes, args.rounds = [n for n in sizes if n <= 500], 1
    with tempfile.TemporaryDirectory(prefix="durableflow-collect-") as directory:
        asyncio.run(measure(sizes, args.rounds, Path(directory)))


if __name__ == "__main__":
    main()
