"""Checkpoint cost: does a checkpoint cost the size of the change, whatever the size of the state?

(a) A step loops N times, ``await ctx.store.set(f"k{i}", i); await ctx.checkpoint()``, on
    MemoryCheckpointer, SQLiteCheckpointer (durability "normal" and "fsync") and RedisCheckpointer (on a
    redis-server this script starts on a free loopback port, if one is installed). The loop is timed inside
    the step, so run setup is excluded. Target (issue 3): cost per checkpoint at N=10,000 <= 2x at N=10.
(b) The same loop on llama-index-workflows, snapshotting with ``ctx.to_dict()`` after each
    ``await ctx.store.set(...)``. In 2.x ``to_dict`` works only from handler code, so the step streams a
    tick after each write and waits while the handler takes the snapshot; the cost is the time of the
    ``store.set`` plus the ``to_dict`` call, not the handshake.
(c) SQLite against SQLite: a raw ``BEGIN; INSERT one 100-byte row; COMMIT`` on a WAL, synchronous=NORMAL
    database, against our cost per checkpoint (target <= 2x), and a full durable 3-step run on SQLite,
    divided by its number of checkpoints.

Batches of every contender alternate for several rounds; medians are shown. Databases live in a temp dir.

    python tests/benchmarks/bench_checkpoints.py [--quick] [--rounds R] [--sizes 10,1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import tempfile
import time
from pathlib import Path
from typing import Any

from _servers import redis_server
from _timing import Batch, calibrated, interleave, print_table, raw_commit, require_peer, us
from bench_run_loop import ThreeSteps  # the run the run-loop benchmark times, here made durable

from durableflow import (
    Checkpointer,
    Context,
    MemoryCheckpointer,
    Record,
    RedisCheckpointer,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)

GROWTH_TARGET = 2.0
RAW_TARGET = 2.0


class CheckpointLoop(Workflow):
    @step
    async def loop(self, ev: StartEvent, ctx: Context) -> StopEvent:
        start = time.perf_counter()
        for i in range(ev.n):
            await ctx.store.set(f"k{i}", i)
            await ctx.checkpoint()
        return StopEvent(result=time.perf_counter() - start)


def loop_batch(checkpointer: Checkpointer, n: int, min_checkpoints: int) -> Batch:
    """Enough runs of an N-iteration loop to make ``min_checkpoints``; the cost per checkpoint."""
    workflow = CheckpointLoop(checkpointer=checkpointer)
    runs = max(1, min_checkpoints // n)

    async def batch() -> float:
        return sum([await workflow.run(n=n) for _ in range(runs)]) / (runs * n)

    return batch


# -- the peer ---------------------------------------------------------------------------------


def peer_loop_batch(n: int, min_checkpoints: int) -> Batch:
    """The loop on llama-index-workflows: the cost of ``store.set`` plus the ``to_dict`` snapshot after it."""
    from workflows import Context as PeerContext
    from workflows import Workflow as PeerWorkflow
    from workflows import step as peer_step
    from workflows.events import Event as PeerEvent
    from workflows.events import StartEvent as PeerStart
    from workflows.events import StopEvent as PeerStop

    class Written(PeerEvent):
        i: int

    class PeerLoop(PeerWorkflow):
        snapshot_taken: asyncio.Queue[None]

        @peer_step
        async def loop(self, ev: PeerStart, ctx: PeerContext) -> PeerStop:
            spent = 0.0
            for i in range(ev.n):
                start = time.perf_counter()
                await ctx.store.set(f"k{i}", i)
                spent += time.perf_counter() - start
                ctx.write_event_to_stream(Written(i=i))
                await self.snapshot_taken.get()  # to_dict() is for handler code in 2.x: wait while it runs
            return PeerStop(result=spent)

    runs = max(1, min_checkpoints // n)

    async def one_run() -> float:
        workflow = PeerLoop(timeout=None)
        workflow.snapshot_taken = asyncio.Queue()
        handler = workflow.run(n=n)
        spent = 0.0
        async for ev in handler.stream_events():
            if isinstance(ev, Written):
                start = time.perf_counter()
                handler.ctx.to_dict()
                spent += time.perf_counter() - start
                workflow.snapshot_taken.put_nowait(None)
        return spent + await handler

    async def batch() -> float:
        return sum([await one_run() for _ in range(runs)]) / (runs * n)

    return batch


# -- stores -----------------------------------------------------------------------------------


def raw_commit_batch(path: Path, commits: int) -> Batch:
    """``BEGIN; INSERT one ~100-byte row; COMMIT`` on a WAL, synchronous=NORMAL database; the cost per commit."""
    commit = raw_commit(path)

    async def batch() -> float:
        start = time.perf_counter()
        for _ in range(commits):
            commit()
        return (time.perf_counter() - start) / commits

    return batch


class CountingSQLite(SQLiteCheckpointer):
    """Counts the checkpoints a run writes (used once, outside the timing)."""

    written = 0

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        self.written += 1
        super().create(run_id, workflow, record, owner)

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        self.written += 1
        super().append(run_id, record, owner, *args, **kwargs)


# -- the three parts --------------------------------------------------------------------------


async def growth(
    stores: dict[str, Checkpointer], sizes: list[int], rounds: int, min_checkpoints: int, peer_limit: float
) -> tuple[dict[str, dict[int, float]], dict[int, str]]:
    """(a) and (b): cost per checkpoint (or peer snapshot) for each store and size; why a peer size was skipped."""
    costs: dict[str, dict[int, float]] = {name: {} for name in [*stores, "peer"]}
    for n in sizes:
        contenders = {name: loop_batch(store, n, min_checkpoints) for name, store in stores.items()}
        if n <= 1000:
            contenders["peer"] = peer_loop_batch(n, min_checkpoints)
        for name, cost in (await interleave(contenders, rounds)).items():
            costs[name][n] = cost
    skipped: dict[int, str] = {}
    for n in (n for n in sizes if n > 1000):
        estimate = _peer_run_estimate(costs["peer"], n)
        if estimate is not None and estimate <= peer_limit:
            costs["peer"][n] = await peer_loop_batch(n, 1)()  # one run, not repeated: it is long
        else:
            skipped[n] = "skipped" if estimate is None else f"skipped (~{estimate:.0f} s/run)"
    return costs, skipped


def _peer_run_estimate(costs: dict[int, float], n: int) -> float | None:
    """A peer run's length at ``n``, fitting cost per snapshot = a + b * (average state size, N/2)."""
    if len(costs) < 2:
        return None
    lo, hi = min(costs), max(costs)
    b = (costs[hi] - costs[lo]) / ((hi - lo) / 2)
    a = costs[lo] - b * lo / 2
    return n * (a + b * n / 2)


async def against_raw_sqlite(directory: Path, rounds: int, batch_seconds: float) -> dict[str, Any]:
    """(c): a raw single-row commit, our checkpoint in a loop, and a durable 3-step run, all on SQLite."""
    counting = CountingSQLite(directory / "count.db")
    await ThreeSteps(checkpointer=counting).run()
    durable = ThreeSteps(checkpointer=SQLiteCheckpointer(directory / "three.db"))
    medians = await interleave(
        {
            "raw": raw_commit_batch(directory / "raw.db", 2000),
            "checkpoint": loop_batch(SQLiteCheckpointer(directory / "loop.db"), 1000, 2000),
            "3-step": await calibrated(durable.run, batch_seconds),
        },
        rounds,
    )
    return {**medians, "checkpoints per run": counting.written}


def _growth(by_size: dict[int, float]) -> float:
    return by_size[max(by_size)] / by_size[min(by_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="alternating batches of each contender (default 7, quick 3)")
    parser.add_argument("--sizes", help="loop lengths N (default 10,1000,10000; quick 10,1000)")
    parser.add_argument("--batch-checkpoints", type=int, help="checkpoints per batch (default 2000, quick 500)")
    parser.add_argument("--peer-limit", type=float, default=60.0, help="longest peer run at N>1000 to try (s, 60)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: the quick defaults above")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.sizes = args.sizes or ("10,1000" if args.quick else "10,1000,10000")
    args.batch_checkpoints = args.batch_checkpoints or (500 if args.quick else 2000)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    peer_version = require_peer()
    print(
        f"durableflow {importlib.metadata.version('durableflow')} vs llama-index-workflows {peer_version};"
        f" {args.rounds} rounds, >= {args.batch_checkpoints} checkpoints per batch, medians"
    )

    with tempfile.TemporaryDirectory(prefix="durableflow-bench-") as tmp, redis_server() as redis_url:
        directory = Path(tmp)
        stores: dict[str, Checkpointer] = {
            "MemoryCheckpointer": MemoryCheckpointer(),
            "SQLite normal": SQLiteCheckpointer(directory / "normal.db"),
            "SQLite fsync": SQLiteCheckpointer(directory / "fsync.db", durability="fsync"),
        }
        if redis_url is not None:
            stores["Redis (loopback)"] = RedisCheckpointer(redis_url)
        costs, skipped = asyncio.run(growth(stores, sizes, args.rounds, args.batch_checkpoints, args.peer_limit))
        raw = asyncio.run(against_raw_sqlite(directory, args.rounds, 0.2))
        for store in stores.values():
            store.close()

    rows = []
    for name, by_size in costs.items():
        label = "llama-index-workflows to_dict" if name == "peer" else name
        cells = [us(by_size[n]) if n in by_size else skipped[n] for n in sizes]
        rows.append([label, *cells, f"{_growth(by_size):.2f}x" if len(by_size) > 1 else "-"])
    print_table(
        "(a, b) µs per checkpoint (median); growth = cost at the largest N / cost at the smallest",
        ["store", *(f"N={n:,}" for n in sizes), "growth"],
        rows,
    )

    per_checkpoint_3step = raw["3-step"] / raw["checkpoints per run"]
    print_table(
        "(c) SQLite, WAL, synchronous=NORMAL (median)",
        ["what", "µs", "x raw commit"],
        [
            ["raw BEGIN; INSERT 100 B; COMMIT", us(raw["raw"]), "1.00x"],
            ["ctx.checkpoint() in a loop (N=1,000)", us(raw["checkpoint"]), f"{raw['checkpoint'] / raw['raw']:.2f}x"],
            ["durable 3-step run, per run", us(raw["3-step"]), "-"],
            [
                f"  per checkpoint ({raw['checkpoints per run']} per run)",
                us(per_checkpoint_3step),
                f"{per_checkpoint_3step / raw['raw']:.2f}x",
            ],
        ],
    )

    print()
    for name, by_size in costs.items():
        lo, hi = min(by_size), max(by_size)
        if name == "peer":
            print(f"llama-index-workflows: a snapshot at N={hi:,} costs {_growth(by_size):.1f}x one at N={lo:,}")
            continue
        verdict = "meets" if _growth(by_size) <= GROWTH_TARGET else "MISSES"
        print(
            f"{name}: a checkpoint at N={hi:,} costs {_growth(by_size):.2f}x one at N={lo:,}"
            f" (target <= {GROWTH_TARGET:.0f}x): {verdict}"
        )
    ratio = raw["checkpoint"] / raw["raw"]
    verdict = "meets" if ratio <= RAW_TARGET else "MISSES"
    print(f"SQLite checkpoint: {ratio:.2f}x a raw single-row commit (target <= {RAW_TARGET:.0f}x): {verdict}")
    print(
        f"durable 3-step run on SQLite: {us(raw['3-step'])} µs, {raw['checkpoints per run']} checkpoints,"
        f" {us(per_checkpoint_3step)} µs each = {per_checkpoint_3step / raw['raw']:.2f}x a raw commit"
    )


if __name__ == "__main__":
    main()
