"""Eight processes resume one interrupted run at the same instant, round after round: who drove it each time?

Each contender is a forked process that, per round, waits at a barrier, then
calls ``resume``. A contender that drove the run writes the run id to its own
file from inside the step; one refused writes nothing. The store's lease must
make exactly one of them drive each round's run.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections import Counter
from pathlib import Path

from durableflow import Context, RunLeaseError, StartEvent, StopEvent, Workflow, open_checkpointer, step

from .submitting import hand_over


class Contested(Workflow):
    """One step that notes which process ran it, and lingers so that the others arrive while it runs."""

    journal: Path | None = None

    @step
    async def work(self, ev: StartEvent, ctx: Context) -> StopEvent:
        assert self.journal is not None
        with open(self.journal / f"{os.getpid()}.log", "a") as log:
            log.write(f"{ctx.run_id}\n")
        await asyncio.sleep(0.05)
        return StopEvent(result=ev.n)


def _interrupted(url: str, run_id: str) -> None:
    """Store a run that nobody drives: started, then handed back before its step ran."""

    async def start() -> None:
        checkpointer = open_checkpointer(url)
        try:
            await hand_over(Contested(), checkpointer, run_id, n=1)
        finally:
            checkpointer.close()

    asyncio.run(start())


def _contend(url: str, rounds: int, barrier: multiprocessing.synchronize.Barrier, journal: Path) -> None:
    Contested.journal = journal
    checkpointer = open_checkpointer(url)

    async def attempt(run_id: str) -> None:
        with contextlib.suppress(RunLeaseError):  # another contender drives it
            await Contested(checkpointer=checkpointer).resume(run_id)

    for index in range(rounds):
        barrier.wait(timeout=60)  # the run of this round is stored
        barrier.wait(timeout=60)  # everyone is ready: go
        asyncio.run(attempt(f"race-{index}"))
    checkpointer.close()


def race(url: str, journal: Path, rounds: int = 50, contenders: int = 8) -> Counter[str]:
    """Run the rounds; how many processes drove each round's run (by run id)."""
    journal.mkdir(parents=True, exist_ok=True)
    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(contenders + 1)
    processes = [fork.Process(target=_contend, args=(url, rounds, barrier, journal)) for _ in range(contenders)]
    for process in processes:
        process.start()
    try:
        for index in range(rounds):
            _interrupted(url, f"race-{index}")
            barrier.wait(timeout=60)
            barrier.wait(timeout=60)
    finally:
        for process in processes:
            process.join(timeout=120)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes), [process.exitcode for process in processes]
    drivers: Counter[str] = Counter()
    for file in journal.glob("*.log"):
        drivers.update(file.read_text().split())
    return drivers
