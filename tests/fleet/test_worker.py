"""The Worker API: it finds runs whose owner is gone and drives them, within its concurrency, leaving alone the runs
of other workflows and poisoned ones, and on stop() finishes or hands back what it drives."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from durableflow import (
    Checkpointer,
    Context,
    Event,
    MemoryCheckpointer,
    Record,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    StoreUnavailableError,
    Worker,
    Workflow,
    step,
)
from durableflow._worker import next_poll_interval

from .submitting import hand_over


class Crash(BaseException):
    """The process dies here: the engine abandons the run without writing, and its owner counts as dead."""


class Added(Event):
    value: int


class Adder(Workflow):
    """add puts 1 on the value; finish multiplies it by 10. finish waits on ``gate`` (if any), dies while
    ``deadly`` is set, and notes each call in ``Adder.calls``."""

    gate: asyncio.Event | None = None
    deadly = False
    calls: list[str] = []  # noqa: RUF012 - one log the test reads, reset per test

    @step
    async def add(self, ev: StartEvent, ctx: Context) -> Added:
        return Added(value=ev.value + 1)

    @step
    async def finish(self, ev: Added, ctx: Context) -> StopEvent:
        type(self).calls.append(ctx.run_id)
        if type(self).deadly:
            raise Crash("killed")
        if type(self).gate is not None:
            await type(self).gate.wait()
        return StopEvent(result=ev.value * 10)


class Other(Workflow):
    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="other")


@pytest.fixture(autouse=True)
def _reset() -> Any:
    Adder.gate, Adder.deadly, Adder.calls = None, False, []
    yield
    Adder.gate, Adder.deadly = None, False


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    checkpointer: Checkpointer = (
        MemoryCheckpointer() if request.param == "memory" else SQLiteCheckpointer(tmp_path / "r.db")
    )
    yield checkpointer
    checkpointer.close()


async def interrupt(workflow: type[Workflow], store: Checkpointer, run_id: str, **fields: Any) -> None:
    """Start a run that dies in its last step: stored as running, its owner dead."""
    deadly, workflow.deadly = getattr(workflow, "deadly", False), True  # type: ignore[attr-defined]
    try:
        with pytest.raises(Crash):
            await asyncio.wait_for(workflow(checkpointer=store).run(run_id=run_id, **fields), 5)
    finally:
        workflow.deadly = deadly  # type: ignore[attr-defined]


async def until(condition: Any, timeout: float = 10.0) -> None:
    """Let the loop run until ``condition()`` holds; fail instead of hanging."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not condition():
        assert loop.time() < give_up, "not reached in time"
        await asyncio.sleep(0.005)


async def serve_until(worker: Worker, done: Any, timeout: float = 10.0) -> None:
    """Run ``worker`` until ``done()`` holds, then stop it and wait for it to return."""
    serving = asyncio.ensure_future(worker.run(handle_signals=False))
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not done():
        assert loop.time() < give_up, "the worker did not get there in time"
        assert not serving.done(), serving.exception()
        await asyncio.sleep(0.005)
    worker.stop()
    await asyncio.wait_for(serving, timeout)


async def test_a_worker_drives_every_interrupted_run_to_its_result(store: Checkpointer) -> None:
    """Three runs whose owner died are listed as interrupted, taken over by one worker and completed."""
    for n in range(3):
        await interrupt(Adder, store, f"r{n}", value=n)
    assert {info.run_id for info in store.runs("interrupted")} == {"r0", "r1", "r2"}
    worker = Worker([Adder], store, poll_interval=0.01)
    await serve_until(worker, lambda: worker.stats.completed == 3)
    assert [store.info(f"r{n}").result for n in range(3)] == ["10", "20", "30"]
    assert store.runs("interrupted") == []
    assert worker.stats.recovered == 3


async def test_no_more_runs_are_driven_at_once_than_the_concurrency(store: Checkpointer) -> None:
    """With concurrency 2 and five interrupted runs held at a gate, the worker drives two, then the rest."""
    for n in range(5):
        await interrupt(Adder, store, f"r{n}", value=n)
    Adder.gate = asyncio.Event()
    worker = Worker([Adder], store, concurrency=2, poll_interval=0.01)
    serving = asyncio.ensure_future(worker.run(handle_signals=False))
    try:
        while len(Adder.calls) < 5 + 2:  # five deaths, then the first two recoveries reach the gate
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        assert len(worker.active) == 2 and len(Adder.calls) == 7
        Adder.gate.set()
        while worker.stats.completed < 5:
            assert len(worker.active) <= 2
            await asyncio.sleep(0.005)
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 10)


async def test_runs_of_workflows_the_worker_does_not_know_are_left_alone(store: Checkpointer) -> None:
    """A worker for Other never takes an interrupted Adder run."""
    await interrupt(Adder, store, "adder", value=1)
    worker = Worker([Other], store, poll_interval=0.01, max_poll_interval=0.02)
    await serve_until(worker, lambda: worker.stats.polls >= 5)
    assert worker.stats.recovered == 0
    assert store.info("adder").status == "interrupted"


async def test_a_poisoned_run_is_failed_after_max_recoveries_and_then_left_alone(store: Checkpointer) -> None:
    """A run whose step kills the worker each time is recovered max_recoveries times, then failed for good."""
    await interrupt(Adder, store, "poison", value=1)
    Adder.deadly = True
    for _ in range(2):  # each recovery dies too, as a worker process would: one poll per worker, so that a
        # worker polling again before the test looks cannot recover the run a second time
        worker = Worker([Adder], store, max_recoveries=2)
        assert await worker.recover_once() == 1
        await until(lambda w=worker: not w.active)  # type: ignore[misc]
        assert worker.stats.recovered == 1
    final = Worker([Adder], store, poll_interval=0.01, max_poll_interval=0.02, max_recoveries=2)
    await serve_until(final, lambda: final.stats.failed == 1 and final.stats.polls >= 5)
    info = store.info("poison")
    assert info.status == "failed" and info.error is not None and "RecoveryLimitError" in info.error
    assert final.stats.recovered == 1 and len(Adder.calls) == 3


async def test_stop_lets_a_run_finish_within_the_grace_period(store: Checkpointer) -> None:
    """stop() while a run is at the gate waits for it; the gate opens within the grace period and it completes."""
    await interrupt(Adder, store, "r", value=4)
    Adder.gate = asyncio.Event()
    worker = Worker([Adder], store, poll_interval=0.01, grace_period=5)
    serving = asyncio.ensure_future(worker.run(handle_signals=False))
    while len(Adder.calls) < 2:
        await asyncio.sleep(0.005)
    worker.stop()
    await asyncio.sleep(0.05)
    assert not serving.done()
    Adder.gate.set()
    await asyncio.wait_for(serving, 5)
    assert (worker.stats.completed, worker.stats.handed_back) == (1, 0)
    assert store.info("r").result == "50"


async def test_a_run_still_going_after_the_grace_period_is_handed_back_at_once(store: Checkpointer) -> None:
    """Past the grace period the run's lease is released unwritten, so another worker continues it at once."""
    await interrupt(Adder, store, "r", value=4)
    Adder.gate = asyncio.Event()
    worker = Worker([Adder], store, poll_interval=0.01, grace_period=0.05)
    serving = asyncio.ensure_future(worker.run(handle_signals=False))
    while len(Adder.calls) < 2:
        await asyncio.sleep(0.005)
    last_seq = store.info("r").last_seq
    worker.stop()
    await asyncio.wait_for(serving, 5)
    info = store.info("r")
    assert worker.stats.handed_back == 1
    assert (info.status, info.lease_owner, info.last_seq) == ("interrupted", None, last_seq)
    Adder.gate.set()
    successor = Worker([Adder], store, poll_interval=0.01)
    await serve_until(successor, lambda: successor.stats.completed == 1)
    assert store.info("r").result == "50"


async def test_a_second_stop_hands_runs_back_without_waiting_for_the_grace_period(store: Checkpointer) -> None:
    """Calling stop() twice (a second SIGTERM) releases the runs at once, despite a long grace period."""
    await interrupt(Adder, store, "r", value=4)
    Adder.gate = asyncio.Event()
    worker = Worker([Adder], store, poll_interval=0.01, grace_period=60)
    serving = asyncio.ensure_future(worker.run(handle_signals=False))
    while len(Adder.calls) < 2:
        await asyncio.sleep(0.005)
    worker.stop()
    worker.stop()
    await asyncio.wait_for(serving, 5)
    assert worker.stats.handed_back == 1 and store.info("r").lease_owner is None


def test_an_idle_worker_backs_off_to_the_longest_interval_and_snaps_back_on_work() -> None:
    """Polls that find nothing double the pause up to max_poll_interval; one that finds work resets it."""
    intervals = [0.5]
    for found in (0, 0, 0, 0, 0, 3, 0):
        intervals.append(next_poll_interval(intervals[-1], found, 0.5, 4.0))
    assert intervals == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 0.5, 1.0]


def test_workers_pause_for_different_jittered_times() -> None:
    """Two workers' pauses for one interval fall between half and all of it, and differ, so polls spread out."""
    pauses = []
    for seed in (1, 2):
        worker = Worker([Adder], MemoryCheckpointer())
        worker._random = random.Random(seed)
        pauses.append([worker.jittered(2.0) for _ in range(20)])
    assert pauses[0] != pauses[1]
    assert all(1.0 <= pause <= 2.0 for pause in pauses[0] + pauses[1])


def test_a_worker_needs_workflows_and_refuses_two_of_one_name() -> None:
    """An empty workflow list and two workflows stored under one name are refused when the worker is made."""
    with pytest.raises(ValueError, match="at least one workflow"):
        Worker([], MemoryCheckpointer())

    def factory() -> Adder:
        return Adder()

    with pytest.raises(ValueError, match="two workflows are named"):
        Worker([Adder, factory], MemoryCheckpointer())


class Outage(MemoryCheckpointer):
    """A memory store that refuses the calls named in ``refusing``, like a store that went away."""

    ALL = frozenset({"create", "append", "append_many", "info", "runs", "acquire", "renew", "release", "load"})
    refusing: frozenset[str] = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if name in object.__getattribute__(self, "refusing"):
            raise StoreUnavailableError("the store is down")
        return object.__getattribute__(self, name)


class Failing(Workflow):
    """Its step takes the store down (the first time only), then raises: a failure that cannot be written."""

    store: Outage | None = None

    @step
    async def only(self, ev: StartEvent, ctx: Context) -> StopEvent:
        if type(self).store is not None:
            type(self).store.refusing = Outage.ALL
            type(self).store = None
        raise ValueError("bad input")


async def test_a_run_whose_failure_could_not_be_written_is_released_once_the_store_is_back() -> None:
    """The worker lets go of the lease itself rather than leave the run held until its 1000 s lease lapses."""
    store = Outage(lease_ttl=1000)
    await hand_over(Failing(), store, "r")
    Failing.store = store
    worker = Worker([Failing], store, poll_interval=0.01, max_poll_interval=0.05)
    serving = asyncio.ensure_future(worker.run(handle_signals=False))
    try:
        await until(lambda: worker.stats.failed == 1)
        held = object.__getattribute__(store, "_runs")["r"]
        assert held["status"] == "running" and held["lease_owner"] is not None  # the failure was not stored
        store.refusing = frozenset({"runs"})  # back, but this worker cannot poll: only letting go frees the run
        await until(lambda: held["lease_owner"] is None)
        store.refusing = frozenset()
        await until(lambda: store.info("r").status == "failed")  # taken again and failed again: stored this time
    finally:
        store.refusing = frozenset()
        worker.stop()
        await asyncio.wait_for(serving, 10)
    info = store.info("r")
    assert info.lease_owner is None and info.error is not None and "bad input" in info.error
    assert worker.stats.failed == 2


class Blip(MemoryCheckpointer):
    """A memory store that fails the append of record ``blip_at`` once and is back at once, as a store that
    restarted between two writes; ``inline = False`` makes the engine call it from a thread, as Redis."""

    blip_at: int | None = None

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        if record.seq == self.blip_at:
            self.blip_at = None
            raise StoreUnavailableError("the store restarted")
        super().append(run_id, record, owner, *args, **kwargs)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "threaded"])
@pytest.mark.parametrize(("failed", "finishes"), [(2, 1), (3, 2)], ids=["step-done", "run-end"])
async def test_a_run_whose_checkpoint_the_store_failed_once_is_continued_by_a_worker(
    inline: bool, failed: int, finishes: int
) -> None:
    """A write the store failed is not the run's failure: the worker stops driving the run without writing
    "failed" (which the store, back a moment later, would take, and workers leave failed runs alone), gives
    its lease up, and takes it again from its last checkpoint. ``failed``: which record of the claim fails
    (1 is the claim's own, 2 add's completion, 3 the one ending the run, so that finish runs again)."""
    store = Blip()
    store.inline = inline
    await hand_over(Adder(), store, "r", value=4)
    store.blip_at = store.info("r").last_seq + failed
    worker = Worker([Adder], store, poll_interval=0.01, max_poll_interval=0.05)
    await serve_until(worker, lambda: store.info("r").status in ("completed", "failed"))
    info = store.info("r")
    assert (info.status, info.error, info.result) == ("completed", None, "50")
    assert store.blip_at is None and (worker.stats.recovered, worker.stats.stopped, worker.stats.failed) == (2, 1, 0)
    assert Adder.calls == ["r"] * finishes
