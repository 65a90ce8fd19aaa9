"""Poison runs: recoveries after a dead owner are counted durably; past the limit the run is marked failed, its lease
released, and only a deliberate resume drives it again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durableflow import Context, Event, RecoveryLimitError, StartEvent, StopEvent, Workflow, step

from .conftest import Store
from .crashing import Crash, stored_document


class Prepared(Event):
    value: int


class Deadly(Workflow):
    """prepare completes; explode kills its process (a ``Crash``) while ``deadly`` is set."""

    deadly = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.exploded = 0

    @step
    async def prepare(self, ev: StartEvent, ctx: Context) -> Prepared:
        return Prepared(value=ev.value + 1)

    @step
    async def explode(self, ev: Prepared, ctx: Context) -> StopEvent:
        if type(self).deadly:
            self.exploded += 1
            raise Crash("out of memory")
        return StopEvent(result=ev.value * 10)


class Stumbling(Workflow):
    """Three steps, each of which kills its process on its first try only: progress between every crash."""

    def __init__(self, tried: set[str], **options: Any) -> None:
        super().__init__(**options)
        self.tried = tried

    def _stumble(self, name: str) -> None:
        if name not in self.tried:
            self.tried.add(name)
            raise Crash(name)

    @step
    async def one(self, ev: StartEvent, ctx: Context) -> Prepared:
        self._stumble("one")
        return Prepared(value=1)

    @step
    async def two(self, ev: Prepared, ctx: Context) -> Prepared | StopEvent:
        self._stumble(f"two-{ev.value}")
        return Prepared(value=ev.value + 1) if ev.value < 3 else StopEvent(result=ev.value)


async def _crashes(handler: Any) -> None:
    with pytest.raises(Crash):
        await asyncio.wait_for(handler, 5)


@pytest.fixture(autouse=True)
def _deadly() -> Any:
    Deadly.deadly = True
    yield
    Deadly.deadly = True


async def test_a_run_that_keeps_killing_its_process_is_marked_failed_after_the_limit(store: Store) -> None:
    """With max_recoveries=2, the third recovery in a row fails the run with RecoveryLimitError, running nothing."""
    first = Deadly(checkpointer=store.open())
    await _crashes(first.run(run_id="poison", value=1))
    lives = []
    for _ in range(2):
        worker = Deadly(checkpointer=store.open())
        worker.max_recoveries = 2
        await _crashes(worker.resume("poison"))
        lives.append(worker.exploded)
    assert lives == [1, 1]
    assert stored_document(store.open(), "poison")["recoveries"] == 2
    last = Deadly(checkpointer=store.open())
    last.max_recoveries = 2
    with pytest.raises(RecoveryLimitError) as raised:
        await asyncio.wait_for(last.resume("poison"), 5)
    assert last.exploded == 0
    assert (raised.value.recoveries, raised.value.limit) == (3, 2)
    info = store.open().info("poison")
    assert info.status == "failed" and info.lease_owner is None
    assert info.error is not None and "RecoveryLimitError" in info.error and "durableflow resume poison" in info.error


async def test_a_deliberate_resume_of_a_poisoned_run_starts_the_count_again(store: Store) -> None:
    """Resuming the failed run by hand, once the cause is fixed, drives it to the end despite the limit."""
    await _crashes(Deadly(checkpointer=store.open()).run(run_id="poison", value=1))
    marked = Deadly(checkpointer=store.open())
    marked.max_recoveries = 0
    with pytest.raises(RecoveryLimitError):
        await asyncio.wait_for(marked.resume("poison"), 5)
    Deadly.deadly = False  # the cause is fixed
    fixed = Deadly(checkpointer=store.open())
    fixed.max_recoveries = 0
    assert await asyncio.wait_for(fixed.resume("poison"), 5) == 20
    assert stored_document(store.open(), "poison").get("recoveries", 0) == 0


async def test_a_completed_step_between_crashes_resets_the_count(store: Store) -> None:
    """A run that crashes four times but completes a step after every recovery is never marked poisoned."""
    tried: set[str] = set()
    await _crashes(Stumbling(tried, checkpointer=store.open()).run(run_id="slow"))
    crashes = 1
    while True:
        worker = Stumbling(tried, checkpointer=store.open())
        worker.max_recoveries = 1
        try:
            result = await asyncio.wait_for(worker.resume("slow"), 5)
            break
        except Crash:
            crashes += 1
    assert (result, crashes) == (3, 4)


async def test_without_a_limit_recoveries_are_counted_but_never_stop_the_run(store: Store) -> None:
    """max_recoveries=None (the default) counts each recovery in the checkpoint and lets every one run."""
    await _crashes(Deadly(checkpointer=store.open()).run(run_id="poison", value=1))
    for expected in (1, 2, 3):
        worker = Deadly(checkpointer=store.open())
        await _crashes(worker.resume("poison"))
        assert worker.exploded == 1
        assert stored_document(store.open(), "poison")["recoveries"] == expected
