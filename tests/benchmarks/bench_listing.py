"""Listing, filtering and purging at 100,000 runs, on every checkpointer: do they read an index?

Fills each store through the protocol (``create``, then ``append_many`` of the runs' last checkpoints)
with runs one second apart: 70% completed, 20% failed, 5% running, 4% interrupted (their lease
released), 1% waiting. Then times, median of ``--repeat`` calls:

* ``runs(limit=100)``: the newest page, and the page 50,000 runs deep (``after=cursor``);
* ``runs(status="failed")`` and ``runs(status="waiting")`` (1 run in 100), newest page and deep page;
* ``runs(status="interrupted")``, which reads the running runs and keeps those nobody drives;
* ``info(run_id)``;
* ``purge(status="completed", older_than=...)`` of the older half of the completed runs (35,000 runs),
  once, and the same purge again with nothing left to delete.

Redis and PostgreSQL are servers this script starts on loopback (PostgreSQL with ``fsync=off``, since
commit durability is not what is measured here); each is skipped, with a note, when not installed.

    python tests/benchmarks/bench_listing.py [--runs 100000] [--repeat 5] [--only sqlite,redis,...]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _servers import postgres_server, redis_server
from _timing import print_table

from durableflow import (
    Append,
    Checkpointer,
    MemoryCheckpointer,
    PostgresCheckpointer,
    Record,
    RedisCheckpointer,
    SQLiteCheckpointer,
    use_clock,
)
from durableflow._checkpointer import append_many
from durableflow.testing import ManualClock

OWNER = "bench-worker"
PAYLOAD = b"x" * 300  # about what a small run's first checkpoint weighs
MIX = ["completed"] * 70 + ["failed"] * 20 + ["running"] * 5 + ["interrupted"] * 4 + ["waiting"]


def kind_of(n: int) -> str:
    return MIX[(n * 37) % 100]  # spread each kind over the whole range


def fill(store: Checkpointer, runs: int, clock: ManualClock) -> float:
    """Store ``runs`` runs one second apart; seconds it took."""
    began = time.perf_counter()
    pending: list[Append] = []
    for n in range(runs):
        run_id = f"run-{n:06}"
        store.create(run_id, "bench:Flow", Record(1, True, PAYLOAD), OWNER)
        kind = kind_of(n)
        if kind == "interrupted":
            store.release(run_id, OWNER)
        elif kind != "running":
            result = "1" if kind == "completed" else None
            error = "ValueError: boom" if kind == "failed" else None
            last = Record(2, False, PAYLOAD[:60])
            pending.append(Append(run_id, last, OWNER, kind, result, error))  # type: ignore[arg-type]
        if len(pending) >= 500 or n == runs - 1:
            refused = [r for r in append_many(store, pending) if r is not None]
            assert not refused, refused[:3]
            pending = []
        clock.advance(1)
    return time.perf_counter() - began


def median_seconds(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    samples, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples), result


def measure(store: Checkpointer, runs: int, repeat: int, clock: ManualClock) -> dict[str, str]:
    figures: dict[str, str] = {}
    filled = fill(store, runs, clock)
    figures["fill (runs/s)"] = f"{runs / filled:,.0f}"
    deep = store.info(f"run-{runs // 2:06}").cursor
    waiting, interrupted = (
        min(100, sum(kind_of(n) == kind for n in range(runs))) for kind in ("waiting", "interrupted")
    )
    checks: list[tuple[str, Callable[[], Any], Callable[[Any], bool]]] = [
        ("runs(limit=100)", lambda: store.runs(limit=100), lambda rows: len(rows) == 100),
        ("runs(limit=100, after=50k deep)", lambda: store.runs(limit=100, after=deep), lambda rows: len(rows) == 100),
        ("runs(status='failed')", lambda: store.runs(status="failed"), lambda rows: len(rows) == 100),
        (
            "runs(status='failed', after=deep)",
            lambda: store.runs(status="failed", after=deep),
            lambda rows: len(rows) == 100 and all(r.status == "failed" for r in rows),
        ),
        ("runs(status='waiting')", lambda: store.runs(status="waiting"), lambda rows: len(rows) == waiting),
        (
            "runs(status='interrupted')",
            lambda: store.runs(status="interrupted"),
            lambda rows: len(rows) == interrupted and all(r.status == "interrupted" for r in rows),
        ),
        ("info(run_id)", lambda: store.info(f"run-{runs // 3:06}"), lambda info: info.last_seq >= 1),
    ]
    for name, call, ok in checks:
        seconds, result = median_seconds(call, repeat)
        assert ok(result), f"{name} gave a wrong answer"
        figures[name] = f"{seconds * 1e3:,.2f}"
    cutoff = runs / 2  # runs created (and ended) in the first half
    began = time.perf_counter()
    purged = store.purge(status="completed", older_than=runs - cutoff)
    took = time.perf_counter() - began
    figures["purge 35k completed (s)"] = f"{took:,.2f} ({purged:,} runs)"
    seconds, again = median_seconds(lambda: store.purge(status="completed", older_than=runs - cutoff), repeat)
    assert again == 0
    figures["purge, nothing to do"] = f"{seconds * 1e3:,.2f}"
    seconds, _ = median_seconds(lambda: store.runs(status="completed", limit=100, after=deep), repeat)
    figures["runs(status='completed', after=deep), all purged"] = f"{seconds * 1e3:,.2f}"
    return figures


@contextlib.contextmanager
def stores(only: set[str], directory: Path) -> Iterator[Iterator[tuple[str, Checkpointer]]]:
    with contextlib.ExitStack() as stack:

        def each() -> Iterator[tuple[str, Checkpointer]]:
            ttl = 1e9  # leases outlive the filling, so running runs stay running and released ones interrupted
            if "memory" in only:
                yield "memory", MemoryCheckpointer(lease_ttl=ttl)
            if "sqlite" in only:
                yield "sqlite", SQLiteCheckpointer(directory / "runs.db", lease_ttl=ttl)
            if "redis" in only:
                url = stack.enter_context(redis_server())
                if url:
                    yield "redis", RedisCheckpointer(url, lease_ttl=ttl)
            if "postgres" in only:
                url = stack.enter_context(postgres_server("-c fsync=off -c synchronous_commit=off"))
                if url:
                    yield "postgres", PostgresCheckpointer(url, lease_ttl=ttl)

        yield each()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="memory,sqlite,redis,postgres", help="comma-separated stores")
    parser.add_argument("--quick", action="store_true", help="2,000 runs: a smoke run")
    args = parser.parse_args()
    runs = 2000 if args.quick else args.runs
    results: dict[str, dict[str, str]] = {}
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="durableflow-listing-") as tmp, stores(only, Path(tmp)) as each:
        for name, store in each:
            clock = ManualClock()
            with use_clock(clock):
                print(f"{name}: filling {runs:,} runs...", flush=True)
                results[name] = measure(store, runs, args.repeat, clock)
            store.close()
    names = list(results)
    rows = [[what, *(results[n][what] for n in names)] for what in next(iter(results.values()))]
    print_table(f"{runs:,} runs per store (ms, median of {args.repeat}, unless said)", ["", *names], rows)


if __name__ == "__main__":
    main()
