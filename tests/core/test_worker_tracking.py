"""A run keeps track of every worker it started, so that its end stops them all: under an eager task factory
(a worker may finish inside ``create_task``) and when an abandoned engine's tasks are garbage-collected."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import pytest

from durableflow import Context, Event, StartEvent, StopEvent, Workflow, WorkflowTimeoutError, step


class Handed(Event):
    pass


class HandsOffAndWorksOn(Workflow):
    """Hands a piece of work to a step that finishes at once, then works on until stopped."""

    ticks = 0

    @step
    async def slow(self, ev: StartEvent, ctx: Context) -> StopEvent | Handed:
        ctx.send_event(Handed())
        while True:
            type(self).ticks += 1
            await asyncio.sleep(0.005)

    @step
    async def quick(self, ev: Handed) -> None:
        return None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is Python 3.12's")
async def test_a_worker_that_finishes_inside_create_task_leaves_the_others_tracked() -> None:
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        with pytest.raises(WorkflowTimeoutError):
            await HandsOffAndWorksOn(timeout=0.1).run()
        at_end = HandsOffAndWorksOn.ticks
        await asyncio.sleep(0.05)
    finally:
        asyncio.get_running_loop().set_task_factory(None)
    assert HandsOffAndWorksOn.ticks == at_end, "a step went on after its run had ended"


class Waits(Event):
    pass


class TwoWaiting(Workflow):
    @step
    async def start(self, ev: StartEvent, ctx: Context) -> Handed | Waits:
        ctx.send_event(Handed())
        ctx.send_event(Waits())
        return None

    @step
    async def a(self, ev: Handed) -> StopEvent:
        await asyncio.Event().wait()
        return StopEvent(result=1)

    @step
    async def b(self, ev: Waits) -> None:
        await asyncio.Event().wait()


def test_the_workers_of_a_run_whose_loop_closed_are_collected_without_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers still waiting when their loop closes are closed by the garbage collector, with no loop
    running: their bookkeeping must not raise (an unraisable RuntimeError would replace the GeneratorExit)."""
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)

    async def start() -> None:
        TwoWaiting().run()
        await asyncio.sleep(0.02)

    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)  # 'Task was destroyed but it is pending': expected
    loop.run_until_complete(start())
    loop.close()
    del loop
    gc.collect()
    assert [type(u.exc_value).__name__ for u in seen] == []
