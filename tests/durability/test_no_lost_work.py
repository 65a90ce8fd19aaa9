"""Promise 3, no lost work: after a crash at any step's start or end, every event is consumed or delivered again,
and a step completion that was checkpointed never runs again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durableflow import MemoryCheckpointer, StartEvent

from .conftest import HookRecorder, Store
from .crashing import Crash, crash_at, points_reached
from .workflows import FanOut, World

RUN_ID = "fan-out"
COUNT = 3
STEP_POINTS = [
    point
    for point in points_reached(
        lambda: FanOut(World(), checkpointer=MemoryCheckpointer()).run(run_id=RUN_ID, count=COUNT)
    )
    if point.startswith("step.")
]


def _key(event: Any) -> Any:
    return "start" if isinstance(event, StartEvent) else event.n


def test_the_scenarios_cover_every_step_start_and_end() -> None:
    """The crash scenarios below include the start and end of every execution of every step."""
    assert sorted(STEP_POINTS) == sorted(
        f"step.{name}.{phase}#{hit}"
        for name, hits in (("split", 1), ("square", COUNT), ("gather", COUNT))
        for phase in ("start", "end")
        for hit in range(1, hits + 1)
    )


@pytest.mark.parametrize("point", STEP_POINTS)
async def test_a_crash_at_a_step_loses_nothing_and_repeats_no_checkpointed_step(
    store: Store, hooks: HookRecorder, point: str
) -> None:
    """Resumed by a new Workflow after a crash at a step's start or end, the run squares every item once more at most,
    and no step whose completion was checkpointed runs again."""
    world = World()
    crashed_at: list[int] = []
    with crash_at(point, on_crash=lambda: crashed_at.append(len(world.log))) as reached, pytest.raises(Crash):
        await asyncio.wait_for(FanOut(world, checkpointer=store.open()).run(run_id=RUN_ID, count=COUNT), 5)
    assert reached[-1] == point
    checkpointed = {(step, _key(event)) for _, step, event, error in hooks.finished_steps if error is None}
    for _ in range(10):
        await asyncio.sleep(0)  # a crashed engine must not run on: give any stray task the chance to
    assert world.log[crashed_at[0] :] == [], "steps kept running after the crash"

    world.life = 2
    result = await asyncio.wait_for(FanOut(world, checkpointer=store.open()).resume(RUN_ID), 5)

    assert result == [n * n for n in range(COUNT)]
    for step_name, key in sorted(checkpointed, key=str):
        assert world.count(step_name, key, life=2) == 0, f"{step_name}({key}) completed durably, yet ran again"
    for n in range(COUNT):
        assert world.count("square returned", n) >= 1
        assert world.count("square", n, life=2) <= 1
