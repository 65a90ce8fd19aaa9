"""Crash-harness throughput: scenarios per second on one core, for a 5-step workflow and the README's
document pipeline (a Redis resource served by fakeredis, a checkpoint per document).

Targets: at least 1,000 scenarios/s in-process (its default store, memory) and 100/s in kill mode (its
default store, SQLite; every life a forked child, the resumed ones forked from two warm zygotes under other
hash seeds). Scenarios whose crashes left the same remains share one resume, as in any exploration.
Zombie scenarios count as scenarios; the reference run, the read-back and second-worker checks,
the zygotes' loading and freezing time are paid once per exploration and included. Each case reports wall
time and CPU time of every process involved (this one, its reaped children, the zygotes and the lives they
reaped), as the median of the rounds and their spread: on a shared machine the wall clock varies with the
load, the CPU time much less. For comparison, the probe users write without a harness: a fresh interpreter
runs the workflow and SIGKILLs itself at the point, and a second fresh interpreter resumes it.

    taskset -c 0 python tests/benchmarks/bench_harness.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from durableflow import Context, Event, StartEvent, StopEvent, Workflow, step
from durableflow.testing import explore

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2]))
from _timing import print_table

from examples.document_pipeline import DocumentPipeline


class Parsed(Event):
    n: int


class Enriched(Event):
    n: int


class Scored(Event):
    n: int


class Reviewed(Event):
    n: int


class FiveSteps(Workflow):
    """Five steps, each writing one state key; checkpointed at start, after each step and at the end."""

    @step
    async def parse(self, ev: StartEvent, ctx: Context) -> Parsed:
        await ctx.store.set("parsed", ev.n)
        return Parsed(n=ev.n)

    @step
    async def enrich(self, ev: Parsed, ctx: Context) -> Enriched:
        await ctx.store.set("enriched", ev.n + 1)
        return Enriched(n=ev.n + 1)

    @step
    async def score(self, ev: Enriched, ctx: Context) -> Scored:
        await ctx.store.set("scored", ev.n * 2)
        return Scored(n=ev.n * 2)

    @step
    async def review(self, ev: Scored, ctx: Context) -> Reviewed:
        await ctx.store.set("reviewed", True)
        return Reviewed(n=ev.n)

    @step
    async def publish(self, ev: Reviewed, ctx: Context) -> StopEvent:
        return StopEvent(result=ev.n)


_PROBE = """
import asyncio, os, signal, sys
sys.path.insert(0, {bench_dir!r})
from bench_harness import FiveSteps
from durableflow import RunNotFoundError, SQLiteCheckpointer, _crashpoints
target, store, first = sys.argv[1], SQLiteCheckpointer(sys.argv[2]), sys.argv[3] == "start"
counts = {{}}
def die_at(point):
    counts[point] = counts.get(point, 0) + 1
    if f"{{point}}#{{counts[point]}}" == target:
        os.kill(os.getpid(), signal.SIGKILL)
async def main():
    wf = FiveSteps(checkpointer=store)
    try:
        handler = wf.run(run_id="probe", n=1) if first else wf.resume("probe")
    except RunNotFoundError:  # killed before its first checkpoint: start it again
        handler = wf.run(run_id="probe", n=1)
    print(await handler)
with _crashpoints.armed(die_at):
    asyncio.run(main())
"""


def probe_rate(points: list[str], seconds: float) -> float:
    """Scenarios per second of the hand-written probe: two fresh interpreters per scenario."""
    script = _PROBE.format(bench_dir=str(Path(__file__).parent))
    done, began = 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        while time.perf_counter() - began < seconds:
            db = str(Path(tmp) / f"probe-{done}.db")
            point = points[done % len(points)]
            subprocess.run([sys.executable, "-c", script, point, db, "start"], capture_output=True)
            subprocess.run([sys.executable, "-c", script, "", db, "resume"], capture_output=True, check=True)
            done += 1
    return done / (time.perf_counter() - began)


def cpu_seconds() -> float:
    """CPU time of this process, its reaped children, and the zygotes with the lives they reaped (Linux)."""
    import resource

    from durableflow.testing import _zygote

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # microseconds: os.times() counts ticks
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for zygote in list(_zygote._zygotes.values()):
        with contextlib.suppress(Exception):  # one that went away takes what it counted with it
            total += zygote.cpu_seconds()  # to the microsecond: /proc/<pid>/stat counts 10 ms ticks
    return total


WHO = ("this process", "lives forked here", "zygotes", "lives forked by zygotes")
"""The processes ``--breakdown`` tells apart: the test's, the lives it forks (the reference life and its twins),
the two second interpreters, and the lives they fork (the resumes)."""


def usage() -> list[tuple[float, int]] | None:
    """CPU seconds and page faults (minor) so far of each of ``WHO``, or ``None`` where ``/proc`` is missing.

    The zygotes' and their lives' come from ``/proc/<pid>/stat``, their CPU time in ticks (10 ms): read it over
    whole rounds."""
    import resource

    from durableflow.testing import _zygote

    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        return None
    counts = []
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        used = resource.getrusage(who)
        counts.append((used.ru_utime + used.ru_stime, used.ru_minflt))
    tick = os.sysconf("SC_CLK_TCK")
    zygotes, lives = [0.0, 0], [0.0, 0]
    for zygote in list(_zygote._zygotes.values()):
        with contextlib.suppress(OSError):  # one that went away takes what it counted with it
            fields = Path(f"/proc/{zygote.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            zygotes[0] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            zygotes[1] += int(fields[7])  # minflt
            lives[0] += (int(fields[13]) + int(fields[14])) / tick  # of the children it reaped: cutime, cstime
            lives[1] += int(fields[8])  # cminflt
    return [*counts, (zygotes[0], int(zygotes[1])), (lives[0], int(lives[1]))]


def harness_rate(
    workflow: Any, start: dict[str, Any], mode: str, store: str, depth: int
) -> tuple[float, float, int, list[tuple[float, int]] | None]:
    """Scenarios per second of wall time and per second of CPU time, how many scenarios ran, and what each of
    ``WHO`` used meanwhile (CPU seconds, page faults)."""
    before, cpu, began = usage(), cpu_seconds(), time.perf_counter()
    report = explore(workflow, start, depth=depth, mode=mode, store=store, seed=1)
    elapsed, used, after = time.perf_counter() - began, cpu_seconds() - cpu, usage()
    report.assert_ok()
    count = len(report.scenarios)
    spent = None
    if before is not None and after is not None:
        spent = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(before, after, strict=True)]
    return count / elapsed, count / max(used, 1e-3), count, spent


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def print_breakdown(spent: dict[str, list[list[tuple[float, int]]]], rounds: int) -> None:
    """Per exploration, the CPU ms and page faults of each of ``WHO``, summed over the rounds: in kill mode a
    forked life pays a copied page for each inherited page it writes, which the faults count."""
    rows = []
    for name, measured in spent.items():
        if not measured:
            continue
        totals = [(sum(m[i][0] for m in measured), sum(m[i][1] for m in measured)) for i in range(len(WHO))]
        cells = [f"{seconds / len(measured) * 1000:,.1f} / {faults / len(measured):,.0f}" for seconds, faults in totals]
        rows.append([name, *cells])
    if not rows:
        print("\n(no breakdown: it reads /proc, which this system lacks)")
        return
    title = f"CPU ms / page faults per exploration, by process, mean of {rounds} rounds (zygotes' CPU in 10 ms ticks)"
    print_table(title, ["case", *WHO], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="explorations per case; the median rate is shown")
    parser.add_argument("--quick", action="store_true", help="two rounds, a shorter probe")
    parser.add_argument("--case", default="", help="only the cases whose name holds this text (no probe then)")
    parser.add_argument(
        "--breakdown", action="store_true",
        help="also where each case's CPU time and page faults went, by process (Linux: reads /proc)",
    )  # fmt: skip
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core; forked children inherit it
    five, pipeline = (FiveSteps, {"n": 1}), (DocumentPipeline, {"ids": [1, 2, 3]})
    cases = [
        ("5 steps: in-process, memory, depth 2", *five, "inprocess", "memory", 2, 1000),
        ("5 steps: in-process, memory, depth 1", *five, "inprocess", "memory", 1, 1000),
        ("5 steps: kill, SQLite, depth 1", *five, "kill", "sqlite", 1, 100),
        ("5 steps: kill, SQLite, depth 2", *five, "kill", "sqlite", 2, 100),
        ("pipeline: in-process, memory, depth 2", *pipeline, "inprocess", "memory", 2, 1000),
        ("pipeline: in-process, memory, depth 1", *pipeline, "inprocess", "memory", 1, 1000),
        ("pipeline: in-process, SQLite, depth 2", *pipeline, "inprocess", "sqlite", 2, 1000),
        ("pipeline: in-process, SQLite, depth 1", *pipeline, "inprocess", "sqlite", 1, 1000),
        ("pipeline: kill, SQLite, depth 1", *pipeline, "kill", "sqlite", 1, 100),
        ("pipeline: kill, SQLite, depth 2", *pipeline, "kill", "sqlite", 2, 100),
    ]
    cases = [case for case in cases if args.case in case[0]]
    wall: dict[str, list[float]] = {name: [] for name, *_ in cases}
    cpu: dict[str, list[float]] = {name: [] for name, *_ in cases}
    sizes: dict[str, int] = {}
    spent: dict[str, list[list[tuple[float, int]]]] = {name: [] for name, *_ in cases}
    for _name, workflow, start, mode, store, _depth, _target in cases:  # warm: imports, the zygotes' start
        harness_rate(workflow, start, mode, store, 1)
    for _ in range(rounds):  # interleaved, so that noise spreads over every case
        for name, workflow, start, mode, store, depth, _target in cases:
            by_wall, by_cpu, sizes[name], used = harness_rate(workflow, start, mode, store, depth)
            wall[name].append(by_wall)
            cpu[name].append(by_cpu)
            if used is not None:
                spent[name].append(used)
    probe = math.nan
    if not args.case:
        points = explore(FiveSteps, {"n": 1}, seed=1).scenarios
        probe = probe_rate([o.id for o in points], 3.0 if args.quick else 10.0)
    rows = []
    for name, _workflow, _start, _mode, _store, _depth, target in cases:
        met = statistics.median(cpu[name]) >= target
        rows.append(
            [name, str(sizes[name]), spread(wall[name]), spread(cpu[name]), f"{target:,}", "" if met else "BELOW"]
        )
    if not args.case:
        rows.append(["hand-written SIGKILL probe (2 interpreters/scenario)", "-", f"{probe:,.1f}", "-", "-", ""])
    columns = ["case", "scenarios", "per s of wall time", "per s of CPU time", "target", ""]
    print_table(f"crash scenarios per second, one core, median (min-max) of {rounds} rounds", columns, rows)
    if args.breakdown:
        print_breakdown(spent, rounds)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.case:
        return
    kill = statistics.median(wall["5 steps: kill, SQLite, depth 1"])
    print(f"\nkill mode runs {kill / probe:.0f}x as many scenarios per second as the hand-written probe")
    print(f"in-process runs {statistics.median(wall['5 steps: in-process, memory, depth 2']) / probe:.0f}x as many")


if __name__ == "__main__":
    main()
