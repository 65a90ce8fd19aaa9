"""What one poll of a Worker takes: runs listed behind a page of runs it cannot drive, and the next run after a
claim another worker won between the listing and the claim."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from durableflow import (
    Checkpointer,
    Context,
    MemoryCheckpointer,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Worker,
    Workflow,
    step,
)


class Crash(BaseException):
    """The process dies here: the engine abandons the run without writing, and its owner counts as dead."""


class Doubler(Workflow):
    """Doubles its value; dies in its step while ``deadly`` is set."""

    deadly = False

    @step
    async def double(self, ev: StartEvent, ctx: Context) -> StopEvent:
        if type(self).deadly:
            raise Crash("killed")
        return StopEvent(result=ev.value * 2)


class Stranger(Workflow):
    """A workflow the worker under test does not know: its runs die in their step."""

    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        raise Crash("killed")


class ThreadedMemory(MemoryCheckpointer):
    """A store the engine calls from its I/O thread, as it calls Redis, PostgreSQL and checkpointers of one's own."""

    inline = False


class TakenFirst(ThreadedMemory):
    """Another worker takes the first run this one claims, between its poll and its claim (from the dead owner,
    as a worker of this machine may)."""

    raced = False

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        if not self.raced:
            self.raced = True
            super().acquire(run_id, "elsewhere:1:rival", steal_from=self.info(run_id).lease_owner)
        super().acquire(run_id, owner, steal_from)


async def interrupt(workflow: Workflow, run_id: str, **fields: Any) -> None:
    """Start a run that dies in its step: stored as running, its owner dead, so listed as interrupted."""
    with pytest.raises(Crash):
        await asyncio.wait_for(workflow.run(run_id=run_id, **fields), 5)


async def until(condition: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not condition():
        assert loop.time() < give_up, "not reached in time"
        await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def _reset() -> Any:
    Doubler.deadly = False
    yield
    Doubler.deadly = False


@pytest.fixture(params=["memory", "sqlite", "threaded"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    made: dict[str, Any] = {
        "memory": MemoryCheckpointer,
        "sqlite": lambda: SQLiteCheckpointer(tmp_path / "r.db"),
        "threaded": ThreadedMemory,
    }
    checkpointer: Checkpointer = made[request.param]()
    yield checkpointer
    checkpointer.close()


async def test_a_poll_finds_a_run_listed_behind_a_full_page_of_runs_of_other_workflows(store: Checkpointer) -> None:
    """Newer interrupted runs of a workflow this worker does not know fill its first page (page_size=2): one
    poll must read on and take the older run it knows, or that run would wait for ever in a mixed fleet."""
    Doubler.deadly = True
    await interrupt(Doubler(checkpointer=store), "mine", value=21)
    Doubler.deadly = False
    for n in range(3):
        await interrupt(Stranger(checkpointer=store), f"theirs-{n}")
    assert [info.run_id for info in store.runs("interrupted")][-1] == "mine"  # newest first: listed last
    worker = Worker([Doubler], store, page_size=2)
    assert await worker.recover_once() == 1
    assert worker.stats.recovered == 1
    await until(lambda: worker.stats.completed == 1)
    info = store.info("mine")
    assert (info.status, info.result) == ("completed", "42")
    assert {info.run_id for info in store.runs("interrupted")} == {"theirs-0", "theirs-1", "theirs-2"}


async def test_a_claim_another_worker_won_frees_its_slot_for_the_next_run() -> None:
    """With concurrency 1, another worker takes the first run this one claims: the same poll goes on to the
    next interrupted run, and the lost one is left to its new owner."""
    store = TakenFirst()
    Doubler.deadly = True
    for n in range(2):
        await interrupt(Doubler(checkpointer=store), f"r{n}", value=n)
    Doubler.deadly = False
    worker = Worker([Doubler], store, concurrency=1)
    assert await worker.recover_once() == 2
    assert (worker.stats.lost_races, worker.stats.recovered) == (1, 1)
    await until(lambda: worker.stats.completed == 1)
    statuses = sorted((store.info(run_id).status, store.info(run_id).lease_owner) for run_id in ("r0", "r1"))
    assert statuses == [("completed", None), ("running", "elsewhere:1:rival")]
    assert not worker.active
