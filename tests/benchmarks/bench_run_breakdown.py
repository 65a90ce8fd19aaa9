"""Where a durable 3-step run on SQLite spends its time, layer by layer, in CPU µs per run.

The same run (start -> a -> b -> stop) is timed with no checkpointer (the run loop alone), with a checkpointer
that stores nothing (adding the checkpoint path: encoding, sealing, the lease, bookkeeping) and on SQLite; then
the four records such a run writes are written by calling ``SQLiteCheckpointer`` directly (create, two appends,
the append that ends the run), then as the same SQL statements on a bare ``sqlite3`` connection, and last as
four raw single-row commits (the floor ``bench_peers.py`` compares against). Each difference is one layer's
cost. Batches alternate over several rounds; medians of CPU time (this process, system calls included).

    python tests/benchmarks/bench_run_breakdown.py [--quick] [--rounds 7] [--batch-seconds 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _timing import interleave, print_table, raw_commit, us
from bench_peers import ThreeSteps

from durableflow import SQLiteCheckpointer
from durableflow._checkpointer import Record
from durableflow._sqlite_layout import APPEND, FENCED_INSERT, NEW_RUN
from durableflow._workflow import _new_run_id as new_run_id  # the engine's run ids

RECORD = bytes(200)  # about the size of the run's records (a 500-byte start, three ~190-byte deltas)


class NoStore:
    """A checkpointer that keeps nothing: what is left is the engine's own checkpoint path."""

    inline = True
    lease_ttl = 30.0
    key = None
    url = "nothing://"

    def create(self, *args: Any) -> None:
        pass

    def append(self, *args: Any) -> None:
        pass

    def release(self, *args: Any) -> None:
        pass

    def renew(self, *args: Any) -> bool:
        return True


def store_calls(store: SQLiteCheckpointer) -> Callable[[], None]:
    """The four calls of a 3-step run, made directly on the checkpointer. The records are made once: a frozen
    dataclass's constructor costs more than the engine's way of making one, and is no part of the store's cost."""
    first, second, third, last = (Record(seq, seq == 1, RECORD) for seq in range(1, 5))

    def run() -> None:
        run_id = new_run_id()
        store.create(run_id, "ThreeSteps", first, "owner")
        store.append(run_id, second, "owner")
        store.append(run_id, third, "owner")
        store.append(run_id, last, "owner", "completed", '"done"', None)

    return run


def raw_statements(path: Path) -> Callable[[], None]:
    """The statements those calls execute, on a bare connection: SQLite's own cost for this layout."""
    SQLiteCheckpointer(path)._connection().close()  # the schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    record = bytearray(RECORD)

    def run() -> None:
        run_id, now = new_run_id(), time.time()
        db.execute(NEW_RUN, (run_id, "ThreeSteps", now, "owner", now + 30, 1, 1, record))
        db.execute(FENCED_INSERT, (2, 0, now, run_id, "owner", record))
        db.execute(FENCED_INSERT, (3, 0, now, run_id, "owner", record))
        db.execute(APPEND, (run_id, "owner", 4, 0, now, record, "completed", '"done"', None, now))

    return run


def raw_commits(path: Path) -> Callable[[], None]:
    """Four ``BEGIN; INSERT a row; COMMIT`` on the same settings: the floor."""
    commit = raw_commit(path)

    def run() -> None:
        for _ in range(4):
            commit()

    return run


def batch(call: Callable[[], Any], runs: int) -> Callable[[], Awaitable[float]]:
    async def timed() -> float:
        began = time.process_time()
        for _ in range(runs):
            outcome = call()
            if outcome is not None:
                await outcome
        return (time.process_time() - began) / runs

    return timed


async def measure(args: argparse.Namespace, directory: Path) -> None:
    contenders = {
        "run, no checkpointer": ThreeSteps().run,
        "run, a checkpointer that stores nothing": ThreeSteps(checkpointer=NoStore()).run,  # type: ignore[arg-type]
        "run on SQLite": ThreeSteps(checkpointer=SQLiteCheckpointer(directory / "runs.db")).run,
        "its 4 SQLiteCheckpointer calls": store_calls(SQLiteCheckpointer(directory / "calls.db")),
        "their SQL statements, raw": raw_statements(directory / "statements.db"),
        "4 raw single-row commits": raw_commits(directory / "commits.db"),
    }
    batches = {}
    for name, call in contenders.items():
        for _ in range(200):  # warm-up, and a store that is not empty
            outcome = call()
            if outcome is not None:
                await outcome
        began, runs = time.perf_counter(), 0
        while time.perf_counter() - began < args.batch_seconds / 4:
            outcome = call()
            if outcome is not None:
                await outcome
            runs += 1
        batches[name] = batch(call, max(1, runs * 4))
    cost = await interleave(batches, args.rounds)
    names = list(cost)
    layers = [
        ("run loop, context, events, handler", cost[names[0]]),
        ("checkpoint path: encoding, sealing, lease, bookkeeping", cost[names[1]] - cost[names[0]]),
        ("checkpointer's Python, around its statements", cost[names[3]] - cost[names[4]]),
        ("SQLite: this layout's statements above the floor", cost[names[4]] - cost[names[5]]),
        ("SQLite: 4 raw single-row commits (the floor)", cost[names[5]]),
    ]
    print_table(
        f"a durable 3-step run, CPU µs per run (median of {args.rounds} rounds)",
        ["", "µs"],
        [[name, us(value)] for name, value in cost.items()],
    )
    total = sum(value for _, value in layers)
    print_table(
        "where it goes",
        ["layer", "µs", "share"],
        [[name, us(value), f"{value / total:.0%}"] for name, value in layers]
        + [["sum of the layers (against 'run on SQLite' above)", us(total), ""]],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-seconds", type=float, default=0.3)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batch_seconds = 3, 0.05
    with tempfile.TemporaryDirectory(prefix="durableflow-breakdown-") as directory:
        asyncio.run(measure(args, Path(directory)))


if __name__ == "__main__":
    main()
