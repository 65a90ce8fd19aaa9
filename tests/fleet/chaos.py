"""A fleet under fire: forked workers SIGKILLed and restarted at random, the store frozen and killed, then a verdict.

Every step writes when it begins and ends to a journal file of its own process
(unbuffered, so a SIGKILL loses nothing written), and the charge effect writes
its idempotency key to a "world" file. From those and the kill times, the
verdict says which runs did not complete with the reference result, which runs
two processes drove at once (a step of one running while a step of another ran),
and which effects were repeated under another key. Used by the fleet test (a
few seconds per store) and by ``tests/benchmarks/bench_fleet.py`` (longer).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durableflow import Context, Event, MemoryCheckpointer, StartEvent, StopEvent, Worker, Workflow, open_checkpointer
from durableflow import step as workflow_step

from .submitting import hand_over

_JOURNAL_DIR: Path | None = None
STEP_SECONDS = (0.05, 0.2)
"""How long each piece of a step's work takes: a run takes about a second, so kills land mid-run."""


def _note(kind: str, *fields: object) -> None:
    assert _JOURNAL_DIR is not None
    line = "\t".join([kind, *map(str, fields), repr(time.time())]) + "\n"
    fd = os.open(_JOURNAL_DIR / f"{os.getpid()}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Prepared(Event):
    n: int


class Charged(Event):
    n: int
    receipt: str


def post_charge(n: int, idempotency_key: str) -> str:
    """The payment service: records each call with its key (a real one dedupes by it)."""
    if _JOURNAL_DIR is not None:
        _note("charge", idempotency_key, n)
    return f"receipt-{n}"


class Transfer(Workflow):
    """prepare -> charge (an effect with an idempotency key, then two checkpointed pieces) -> finish."""

    async def _step(self, ctx: Context, name: str) -> None:
        if _JOURNAL_DIR is not None:
            _note("begin", ctx.run_id, name)
        await asyncio.sleep(random.uniform(*STEP_SECONDS))

    def _end(self, ctx: Context, name: str) -> None:
        if _JOURNAL_DIR is not None:
            _note("end", ctx.run_id, name)

    @workflow_step
    async def prepare(self, ev: StartEvent, ctx: Context) -> Prepared:
        try:
            await self._step(ctx, "prepare")
            await ctx.store.set("doubled", ev.n * 2)
            return Prepared(n=ev.n)
        finally:
            self._end(ctx, "prepare")

    @workflow_step
    async def charge(self, ev: Prepared, ctx: Context) -> Charged:
        try:
            await self._step(ctx, "charge")
            receipt = await ctx.effect("charge", post_charge, ev.n)
            for part in range(2):  # more work after the effect, durable piece by piece
                if not await ctx.store.get(f"part-{part}", default=False):
                    await asyncio.sleep(random.uniform(*STEP_SECONDS))
                    await ctx.store.set(f"part-{part}", True)
                    await ctx.checkpoint()
            return Charged(n=ev.n, receipt=receipt)
        finally:
            self._end(ctx, "charge")

    @workflow_step
    async def finish(self, ev: Charged, ctx: Context) -> StopEvent:
        try:
            await self._step(ctx, "finish")
            doubled = await ctx.store.get("doubled")
            return StopEvent(result={"total": doubled + 1, "receipt": ev.receipt})
        finally:
            self._end(ctx, "finish")


def reference(n: int) -> Any:
    """What an uninterrupted run of ``Transfer(n=n)`` returns."""

    async def run() -> Any:
        return await Transfer(checkpointer=MemoryCheckpointer()).run(n=n)

    global STEP_SECONDS
    pace, STEP_SECONDS = STEP_SECONDS, (0.0, 0.0)
    try:
        return asyncio.run(run())
    finally:
        STEP_SECONDS = pace


def submit(url: str, runs: int, lease_ttl: float) -> list[str]:
    """Start ``runs`` runs and hand each back at once (its start checkpointed, its lease released): the
    fleet's queue. Their ids."""

    async def start() -> list[str]:
        checkpointer = open_checkpointer(url)
        checkpointer.lease_ttl = lease_ttl
        ids = []
        try:
            for n in range(runs):
                await hand_over(Transfer(), checkpointer, f"run-{n}", n=n)
                ids.append(f"run-{n}")
        finally:
            checkpointer.close()
        return ids

    return asyncio.run(start())


def _serve(url: str, lease_ttl: float, journal: Path, concurrency: int) -> None:
    """A forked worker's whole life."""
    global _JOURNAL_DIR
    _JOURNAL_DIR = journal
    random.seed()
    if url.startswith("postgresql://"):  # its server process can then be told from the other workers'
        url += f"?application_name={worker_name(os.getpid())}"
    checkpointer = open_checkpointer(url)
    checkpointer.lease_ttl = lease_ttl
    worker = Worker(
        [Transfer], checkpointer, concurrency=concurrency, poll_interval=0.05, max_poll_interval=0.2,
        max_recoveries=None, grace_period=2.0,
    )  # fmt: skip
    asyncio.run(worker.run())


def worker_name(pid: int) -> str:
    """The name a forked worker's PostgreSQL session goes by (``application_name``)."""
    return f"fleet-worker-{pid}"


@dataclass
class Fleet:
    """Forked workers on one store; ``deaths`` holds each killed pid's time of death."""

    url: str
    journal: Path
    lease_ttl: float = 2.0
    concurrency: int = 3
    pids: list[int] = field(default_factory=list)
    deaths: dict[int, float] = field(default_factory=dict)
    kills: int = 0

    def start_worker(self) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _serve(self.url, self.lease_ttl, self.journal, self.concurrency)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        self.pids.append(pid)

    def kill_one(self, rng: random.Random) -> None:
        pid = self.pids.pop(rng.randrange(len(self.pids)))
        # Dead when the signal is sent, not when waitpid returns: other workers take a dead (zombie) owner's
        # runs over at once, and a loaded machine can keep this process waiting tens of milliseconds before
        # it reads the clock, long enough for their steps to begin and look like they overlapped its own.
        self.deaths[pid] = time.time()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self.kills += 1

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM every worker (a graceful stop), SIGKILL those that do not exit in time."""
        for pid in self.pids:
            os.kill(pid, signal.SIGTERM)
        give_up = time.monotonic() + timeout
        for pid in self.pids:
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > give_up:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
            self.deaths[pid] = time.time()
        self.pids.clear()


@dataclass
class Verdict:
    runs: int
    kills: int
    store_faults: int
    lost: list[str]
    wrong: list[str]
    driven_by_two: list[str]
    foreign_effects: list[str]
    charges: int
    seconds: float
    details: list[str] = field(default_factory=list)
    """For each run judged wrong: what the store says of it and every journal line of it, with who wrote it."""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.wrong or self.driven_by_two or self.foreign_effects)

    def __str__(self) -> str:
        return (
            f"{self.runs} runs, {self.kills} worker kills, {self.store_faults} store faults, {self.seconds:.1f}s: "
            f"lost {len(self.lost)}, wrong result {len(self.wrong)}, driven by two {len(self.driven_by_two)}, "
            f"effects under another key {len(self.foreign_effects)}, charge calls {self.charges} for "
            f"{self.runs} runs {sorted(self.lost + self.wrong + self.driven_by_two + self.foreign_effects)[:5]}"
            + "".join(f"\n{line}" for line in self.details)
        )


def run_fleet(
    url: str,
    journal: Path,
    *,
    runs: int = 30,
    workers: int = 3,
    chaos_seconds: float = 6.0,
    settle_seconds: float = 40.0,
    lease_ttl: float = 2.0,
    store_fault: Callable[[random.Random], None] | None = None,
    store_faults_every: float = 2.0,
    cut_off: Callable[[int, random.Random], None] | None = None,
    seed: int | None = None,
) -> Verdict:
    """Submit ``runs``, keep ``workers`` alive while SIGKILLing one every 0.2-1 s for ``chaos_seconds`` (and
    every ``store_faults_every`` s calling ``store_fault``, or ``cut_off`` with the pid of a worker to cut
    off from the store), then let the survivors finish and judge."""
    rng = random.Random(seed)
    journal.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    ids = submit(url, runs, lease_ttl)
    fleet = Fleet(url, journal, lease_ttl)
    for _ in range(workers):
        fleet.start_worker()
    faults = 0
    try:
        chaos_ends = time.monotonic() + chaos_seconds
        next_fault = time.monotonic() + store_faults_every / 2
        while time.monotonic() < chaos_ends:
            time.sleep(rng.uniform(0.2, 1.0))
            fleet.kill_one(rng)
            fleet.start_worker()
            if (store_fault or cut_off) is not None and time.monotonic() >= next_fault:
                if store_fault is not None:
                    store_fault(rng)
                else:
                    assert cut_off is not None
                    cut_off(rng.choice(fleet.pids), rng)
                faults += 1
                next_fault = time.monotonic() + store_faults_every
        checkpointer = open_checkpointer(url)
        try:
            give_up = time.monotonic() + settle_seconds
            while time.monotonic() < give_up:
                try:
                    if all(checkpointer.info(run_id).status == "completed" for run_id in ids):
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            results = {run_id: checkpointer.info(run_id) for run_id in ids}
            stored = {
                run_id: [(r.seq, r.full, len(r.data)) for r in checkpointer.load(run_id)]
                for run_id, info in results.items()
                if info.status != "completed"
            }
        finally:
            checkpointer.close()
    finally:
        fleet.stop_all()
    verdict = _judge(ids, results, journal, fleet, faults, time.monotonic() - began)
    verdict.details.extend(f"stored records of {run_id}: {records}" for run_id, records in stored.items())
    return verdict


def _judge(
    ids: list[str], results: dict[str, Any], journal: Path, fleet: Fleet, faults: int, seconds: float
) -> Verdict:
    import json

    lost = [run_id for run_id in ids if results[run_id].status != "completed"]
    wrong = [
        run_id
        for run_id in ids
        if run_id not in lost and json.loads(results[run_id].result) != reference(int(run_id.split("-")[1]))
    ]
    spans: dict[str, list[tuple[float, float, int]]] = defaultdict(list)  # run -> (begin, end, pid)
    charges: dict[str, set[str]] = defaultdict(set)
    calls = 0
    for file in journal.glob("*.log"):
        pid = int(file.stem)
        open_steps: dict[tuple[str, str], float] = {}
        for line in file.read_text().splitlines():
            kind, *rest = line.split("\t")
            if kind == "begin":
                open_steps[rest[0], rest[1]] = float(rest[2])
            elif kind == "end":
                spans[rest[0]].append((open_steps.pop((rest[0], rest[1])), float(rest[2]), pid))
            elif kind == "charge":
                calls += 1
                charges[rest[0].rsplit(":", 1)[0]].add(rest[0])
        death = fleet.deaths.get(pid, time.time())
        for (run_id, _), begun in open_steps.items():  # killed mid-step: it ran until its process died
            spans[run_id].append((begun, death, pid))
    driven_by_two = sorted(run_id for run_id, intervals in spans.items() if _overlap(intervals))
    foreign = sorted(run_id for run_id, keys in charges.items() if keys != {f"{run_id}:charge"})
    verdict = Verdict(len(ids), fleet.kills, faults, lost, wrong, driven_by_two, foreign, calls, seconds)
    verdict.details = _explain(ids, results, journal, fleet, {*lost, *wrong, *driven_by_two, *foreign})
    return verdict


def _explain(ids: list[str], results: dict[str, Any], journal: Path, fleet: Fleet, suspects: set[str]) -> list[str]:
    """What to look at when the verdict fails: each suspect run's stored status and journal (and each
    charge made more than once), lines tagged with the writing pid and when (or whether) it was killed."""
    lines: dict[str, list[tuple[float, str]]] = defaultdict(list)
    charged: dict[str, list[int]] = defaultdict(list)
    for file in journal.glob("*.log"):
        pid = int(file.stem)
        death = fleet.deaths.get(pid)
        who = f"pid {pid} (died {death:.3f})" if death is not None else f"pid {pid} (alive)"
        for line in file.read_text().splitlines():
            kind, *rest = line.split("\t")
            run_id = rest[0].rsplit(":", 1)[0] if kind == "charge" else rest[0]
            if kind == "charge":
                charged[rest[0]].append(pid)
            lines[run_id].append((float(rest[-1]), f"{float(rest[-1]):.3f} {kind} {' '.join(rest[:-1])} by {who}"))
    out = []
    for run_id in ids:
        repeated = run_id in {key.rsplit(":", 1)[0] for key, pids in charged.items() if len(pids) > 1}
        if run_id not in suspects and not repeated:
            continue
        info = results[run_id]
        out.append(
            f"{run_id}: status {info.status}, last_seq {info.last_seq}, lease {info.lease_owner} until "
            f"{info.lease_expires_at}, error {info.error!r:.400}"
        )
        out.extend(f"  {text}" for _, text in sorted(lines[run_id]))
    return out


def _overlap(intervals: list[tuple[float, float, int]]) -> bool:
    """Did steps of two different processes run at the same time?"""
    return any(
        pid != other and begin < other_end and other_begin < end
        for index, (begin, end, pid) in enumerate(intervals)
        for other_begin, other_end, other in intervals[index + 1 :]
    )
