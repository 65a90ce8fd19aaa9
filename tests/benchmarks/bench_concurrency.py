"""Concurrent durable runs in one process: what sharing commits can gain, and what the garbage collector takes.

The workload is ``bench_peers.py``'s part 6: durable 3-step runs on one SQLite store, one after another and then
all at once (``asyncio.gather``), where the runs' checkpoints share transactions (group commit).

1. **The bound.** CPU µs per run of a sequential run, and of its store calls made directly: one by one (a create
   and three appends, four commits) and as a burst makes them (each create a commit of its own, since a run is
   durable when ``wf.run()`` returns; the appends of all runs in three shared transactions). The difference is all
   that sharing transactions can remove from a run, so sequential / (sequential - difference) is the best
   concurrent/sequential ratio without changing the durability contract (Amdahl).
2. **Measured.** The same runs sequential and concurrent, CPU and wall clock, with the collector on and off.
3. **The collector.** Tracked objects each run keeps while it waits for a shared commit, objects promoted to the
   oldest generation per run during bursts (what sets off full collections), and full collections per burst with
   their duration. ``--heavy`` first imports LangGraph and DBOS, as ``bench_peers.py`` does: a full collection
   walks every object of the process, so its cost follows the process's heap.

    python tests/benchmarks/bench_concurrency.py [--quick] [--runs 1000] [--rounds 5] [--durability normal|fsync]
        [--heavy]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _timing import print_table
from bench_peers import ThreeSteps

from durableflow import SQLiteCheckpointer
from durableflow._checkpointer import Append, Record

RECORD = bytes(200)  # about the size of such a run's records


def calls_one_by_one(store: SQLiteCheckpointer, runs: int) -> None:
    for _ in range(runs):
        run_id = uuid.uuid4().hex
        store.create(run_id, "ThreeSteps", Record(1, True, RECORD), "owner")
        store.append(run_id, Record(2, False, RECORD), "owner")
        store.append(run_id, Record(3, False, RECORD), "owner")
        store.append(run_id, Record(4, False, RECORD), "owner", "completed", '"done"', None)


def calls_shared(store: SQLiteCheckpointer, runs: int) -> None:
    run_ids = [uuid.uuid4().hex for _ in range(runs)]
    for run_id in run_ids:
        store.create(run_id, "ThreeSteps", Record(1, True, RECORD), "owner")
    store.append_many([Append(r, Record(2, False, RECORD), "owner") for r in run_ids])
    store.append_many([Append(r, Record(3, False, RECORD), "owner") for r in run_ids])
    store.append_many([Append(r, Record(4, False, RECORD), "owner", "completed", '"done"', None) for r in run_ids])


class Collections:
    """Counts what the collector does while installed: full collections and their time, and the objects each
    young collection of generation 1 promotes to the oldest generation (what makes a full collection due)."""

    def __init__(self) -> None:
        self.full = 0
        self.full_seconds = 0.0
        self.promoted = 0
        self._young = 0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        if phase == "start":
            self._began = time.perf_counter()
            if generation == 1:
                self._young = len(gc.get_objects(0)) + len(gc.get_objects(1))
        elif generation == 2:
            self.full += 1
            self.full_seconds += time.perf_counter() - self._began
        elif generation == 1:
            self.promoted += self._young - info["collected"]


async def in_flight_objects(workflow: ThreeSteps, runs: int) -> float:
    """Tracked objects per run once every run's first step waits for its shared commit."""
    for _ in range(20):  # what a burst before left to be dropped (dead tasks' weak references, say) is dropped
        await workflow.run()
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        handlers = [workflow.run() for _ in range(runs)]
        burst = asyncio.ensure_future(asyncio.gather(*handlers))
        await asyncio.sleep(0)  # every first step ran, and waits for the commit queued for the next turn
        per_run = (len(gc.get_objects()) - before) / runs
        await burst
    finally:
        gc.enable()
    return per_run


async def measure(args: argparse.Namespace, directory: Path) -> None:
    runs = args.runs
    workflow = ThreeSteps(checkpointer=SQLiteCheckpointer(directory / "runs.db", durability=args.durability))
    one_by_one = SQLiteCheckpointer(directory / "calls.db", durability=args.durability)
    shared = SQLiteCheckpointer(directory / "shared.db", durability=args.durability)

    async def sequential() -> None:
        for _ in range(runs):
            await workflow.run()

    async def concurrent() -> None:
        assert await asyncio.gather(*(workflow.run() for _ in range(runs))) == ["done"] * runs

    async def concurrent_no_gc() -> None:
        gc.disable()
        try:
            await concurrent()
        finally:
            gc.enable()

    async def direct(calls: Callable[[SQLiteCheckpointer, int], None], store: SQLiteCheckpointer) -> None:
        calls(store, runs)

    cases: dict[str, Callable[[], Awaitable[None]]] = {
        "sequential run": sequential,
        "concurrent run": concurrent,
        "concurrent run, collector off": concurrent_no_gc,
        "its store calls one by one (4 commits)": lambda: direct(calls_one_by_one, one_by_one),
        "its store calls as a burst makes them": lambda: direct(calls_shared, shared),
    }
    for case in cases.values():  # warm-up, and stores of the same size
        await case()
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            began_cpu, began_wall = time.process_time(), time.perf_counter()
            await case()
            cpu[name].append((time.process_time() - began_cpu) / runs * 1e6)
            wall[name].append((time.perf_counter() - began_wall) / runs * 1e6)
    median = {name: statistics.median(values) for name, values in cpu.items()}
    print_table(
        f"{runs:,} runs, durability={args.durability!r}: µs per run, median of {args.rounds} rounds (range)",
        ["", "CPU", "wall"],
        [
            [
                name,
                f"{median[name]:.1f} ({min(cpu[name]):.0f}-{max(cpu[name]):.0f})",
                f"{statistics.median(wall[name]):.0f}",
            ]
            for name in cases
        ],
    )
    sequential_cpu = median["sequential run"]
    removable = median["its store calls one by one (4 commits)"] - median["its store calls as a burst makes them"]
    best = sequential_cpu / (sequential_cpu - removable)
    print(
        f"\nsharing transactions can remove {removable:.1f} µs of the sequential run's {sequential_cpu:.1f} µs of CPU"
        f" ({removable / sequential_cpu:.0%}): best concurrent/sequential ratio {best:.2f}x"
    )
    wall_median = {name: statistics.median(values) for name, values in wall.items()}
    removable_wall = (
        wall_median["its store calls one by one (4 commits)"] - wall_median["its store calls as a burst makes them"]
    )
    sequential_wall = wall_median["sequential run"]
    print(
        f"in wall time (what a commit waiting for the disk costs; noisy where other processes use it):"
        f" {removable_wall:.0f} of {sequential_wall:.0f} µs ({removable_wall / sequential_wall:.0%}),"
        f" best ratio {sequential_wall / max(sequential_wall - removable_wall, 1e-9):.2f}x"
    )
    ratios = {name: sequential_cpu / median[name] for name in ("concurrent run", "concurrent run, collector off")}
    print("measured (CPU): " + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()))
    wall_ratios = [s / c for s, c in zip(wall["sequential run"], wall["concurrent run"], strict=True)]
    print("measured (wall, each round): " + ", ".join(f"{r:.2f}x" for r in wall_ratios))

    objects = await in_flight_objects(workflow, min(runs, 200))
    counts = Collections()
    gc.collect()
    gc.callbacks.append(counts)
    try:
        for _ in range(args.rounds):
            await concurrent()
    finally:
        gc.callbacks.remove(counts)
    print(
        f"\nthe collector: {objects:.1f} tracked objects per run waiting for a shared commit;"
        f" {counts.promoted / (args.rounds * runs):.1f} objects promoted to the oldest generation per run;"
        f" {counts.full / args.rounds:.2f} full collections per burst of {runs:,}"
        + (f", {counts.full_seconds / counts.full * 1e3:.0f} ms each" if counts.full else "")
        + f" ({len(gc.get_objects()):,} objects in the process)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs per burst (default 1,000)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, quick 2)")
    parser.add_argument("--durability", choices=["normal", "fsync"], default="normal")
    parser.add_argument("--heavy", action="store_true", help="import LangGraph and DBOS first, as bench_peers.py does")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 runs, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.runs = min(args.runs, 200)
    args.rounds = args.rounds or (2 if args.quick else 5)
    if args.heavy:
        try:
            for module in ("langgraph.graph", "langgraph.checkpoint.sqlite", "dbos"):
                importlib.import_module(module)
        except ImportError as exc:
            raise SystemExit(f"--heavy needs LangGraph and DBOS installed ({exc})") from None
    with tempfile.TemporaryDirectory(prefix="durableflow-concurrency-") as directory:
        asyncio.run(measure(args, Path(directory)))


if __name__ == "__main__":
    main()
