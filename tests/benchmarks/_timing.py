"""What the benchmark scripts share: interleaved timing (medians of alternating batches), a table, the peer check.

Running both sides in one process, in alternating batches, spreads the noise of a busy machine over both
instead of charging it to whichever happened to run while another job was compiling.
"""

from __future__ import annotations

import gc
import importlib.metadata
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

Batch = Callable[[], Awaitable[float]]
"""Runs one batch and returns its cost per run (or per checkpoint), in seconds."""


async def interleave(contenders: dict[str, Batch], rounds: int) -> dict[str, float]:
    """Run each contender's batch once per round, reversing the order every other round; the median of each."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            gc.collect()  # garbage left by one side is not collected on the other's clock
            samples[name].append(await contenders[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


async def calibrated(
    run: Callable[[], Awaitable[object]], batch_seconds: float, clock: Callable[[], float] = time.perf_counter
) -> Batch:
    """A batch of as many ``run()`` calls as fill about ``batch_seconds`` (after a warm-up), timed per run by
    ``clock`` (the wall clock unless given, say ``time.process_time``)."""
    await run()  # warm-up: class validation, imports, connections
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < batch_seconds / 4:
        await run()
        runs += 1
    runs = max(1, round(batch_seconds * runs / elapsed))

    async def batch() -> float:
        start = clock()
        for _ in range(runs):
            await run()
        return (clock() - start) / runs

    return batch


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Plain aligned text: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(c) for c in cells)
        return "  ".join([first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))])

    print(f"\n{title}")
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def us(seconds: float) -> str:
    """Seconds as microseconds, with one decimal below 1,000 µs."""
    value = seconds * 1e6
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def require_peer() -> str:
    """The installed llama-index-workflows version; without it, say how to install it and exit 2."""
    try:
        version = importlib.metadata.version("llama-index-workflows")
        import workflows  # noqa: F401
    except (importlib.metadata.PackageNotFoundError, ImportError):
        print(
            "This benchmark compares durableflow with llama-index-workflows, which is not installed.\n"
            "It is a benchmark-only dependency:  pip install llama-index-workflows",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    return version


def raw_commit(path: Path) -> Callable[[], None]:
    """One ``BEGIN; INSERT a 100-byte row; COMMIT`` on a fresh table, WAL and ``synchronous=NORMAL`` as every
    store here is measured: the unit of a durable run's floor."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    row = bytes(100)

    def commit() -> None:
        db.execute("BEGIN")
        db.execute("INSERT INTO rows (data) VALUES (?)", (row,))
        db.execute("COMMIT")

    return commit
