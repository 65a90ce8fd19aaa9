"""What a crash counts against, exactly: the step that was under way (not one queued behind a busy worker, nor
spared because another step slept at the time), and a ``@catch_error`` handler's budget, which a crash does not
refill."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from durableflow import (
    Context,
    Event,
    RecoveryLimitError,
    StartEvent,
    StepCrashLoopError,
    StepFailedEvent,
    StopEvent,
    Workflow,
    catch_error,
    step,
    use_clock,
)

from .conftest import Store
from .crashing import Crash, ManualClock, crash_at


class Item(Event):
    n: int


class Done(Event):
    n: int


class Ping(Event):
    pass


class OneAtATime(Workflow):
    """Two items for a step with one worker, which holds the first until ``gate`` opens, while ``ping`` ends (a
    checkpoint with the second item queued); each item notes the attempt number it ran as."""

    seen: list[tuple[int, int]] = []  # noqa: RUF012 - what the steps saw, across lives; reset per test
    gate: asyncio.Event

    @step
    async def spread(self, ev: StartEvent, ctx: Context) -> Item | Ping | None:
        for n in range(2):
            ctx.send_event(Item(n=n))
        ctx.send_event(Ping())
        return None

    @step
    async def ping(self, ev: Ping) -> None:
        return None

    @step(num_workers=1)
    async def work(self, ev: Item, ctx: Context) -> Done:
        type(self).seen.append((ev.n, ctx.attempt))
        await type(self).gate.wait()
        return Done(n=ev.n)

    @step
    async def gather(self, ev: Done, ctx: Context) -> StopEvent | None:
        done = ctx.collect_events(ev, [Done, Done])
        return None if done is None else StopEvent(result=sorted(d.n for d in done))


async def test_a_crash_counts_against_the_delivery_under_way_not_the_one_queued_behind_it(store: Store) -> None:
    """Item 0 holds ``work`` (its only worker), item 1 is queued behind it, and the process dies once the checkpoint
    ``ping`` ends with is written: after the resume item 0 runs as attempt 2, and item 1, which never started, as
    attempt 1."""
    OneAtATime.seen, OneAtATime.gate = [], asyncio.Event()
    with crash_at("checkpoint.write.after#3"), pytest.raises(Crash):  # the start, spread's end, ping's end
        await OneAtATime(checkpointer=store.open()).run(run_id="queued")
    assert OneAtATime.seen == [(0, 1)]
    OneAtATime.gate.set()
    assert await asyncio.wait_for(OneAtATime(checkpointer=store.open()).resume("queued"), 5) == [0, 1]
    assert OneAtATime.seen == [(0, 1), (0, 2), (1, 1)]


class Nap(Event):
    pass


class Task(Event):
    pass


class Rested(Event):
    pass


class Worked(Event):
    pass


class NotingClock(ManualClock):
    """Sets ``asleep`` once a durable sleep has begun (its deadline checkpointed)."""

    def __init__(self) -> None:
        super().__init__()
        self.asleep = asyncio.Event()

    async def sleep_until(self, deadline: float) -> None:
        self.asleep.set()
        await super().sleep_until(deadline)


class NapAndDie(Workflow):
    """``nap`` sleeps an hour durably; ``work`` kills its process once ``nap`` is asleep, every time."""

    clock: NotingClock

    @step
    async def spread(self, ev: StartEvent, ctx: Context) -> Nap | Task | None:
        ctx.send_event(Nap())
        ctx.send_event(Task())
        return None

    @step
    async def nap(self, ev: Nap, ctx: Context) -> Rested:
        await ctx.sleep(3600)
        return Rested()

    @step
    async def work(self, ev: Task, ctx: Context) -> Worked:
        await type(self).clock.asleep.wait()
        raise Crash("work kills its process")

    @step
    async def join(self, ev: Rested | Worked, ctx: Context) -> StopEvent | None:
        done = ctx.collect_events(ev, [Rested, Worked])
        return None if done is None else StopEvent(result="never")


@pytest.fixture
def noting_clock() -> Iterator[NotingClock]:
    clock = NotingClock()
    NapAndDie.clock = clock
    with use_clock(clock):
        yield clock


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"step_crash_limit": 2}, StepCrashLoopError),
        ({"step_crash_limit": None, "max_recoveries": 1}, RecoveryLimitError),
    ],
    ids=["step_crash_limit", "max_recoveries"],
)
async def test_a_step_that_kills_its_process_while_another_sleeps_still_reaches_the_limits(
    store: Store, noting_clock: NotingClock, options: dict[str, Any], error: type[Exception]
) -> None:
    """A death while one step sleeps durably and another works counts against the working one, and as a recovery
    of the run, as any other (only a death while every step in flight sleeps is spared): after two such deaths
    the run fails with the limit's error instead of dying for ever."""

    def made() -> NapAndDie:
        wf = NapAndDie(checkpointer=store.open())
        for name, value in options.items():
            setattr(wf, name, value)
        return wf

    with pytest.raises(Crash):
        await made().run(run_id="nap")
    noting_clock.asleep.clear()
    with pytest.raises(Crash):
        await made().resume("nap")
    noting_clock.asleep.clear()
    with pytest.raises(error):
        await asyncio.wait_for(made().resume("nap"), 5)
    assert store.open().info("nap").status == "failed"


class Declined(Exception):
    pass


class Again(Event):
    pass


class Recovering(Workflow):
    """``charge`` always fails; ``recover`` (budget: 2) sends it round again and notes each call."""

    calls: list[str] = []  # noqa: RUF012 - reset per test

    @step
    async def charge(self, ev: StartEvent | Again) -> StopEvent:
        raise Declined("card declined")

    @catch_error(for_steps=["charge"], max_recoveries=2)
    async def recover(self, ev: StepFailedEvent, ctx: Context) -> Again:
        type(self).calls.append(ctx.run_id)
        return Again()


@pytest.mark.parametrize("crash", [None, "step.recover.start#2"])
async def test_a_catch_error_handler_recovers_exactly_its_budget_across_crashes(store: Store, crash: Any) -> None:
    """max_recoveries=2: the handler runs twice, then the run fails with the step's error, also when the process
    dies as the handler is about to run the second time (the budget used is part of the checkpoint)."""
    Recovering.calls = []
    if crash is not None:
        with crash_at(crash), pytest.raises(Crash):
            await Recovering(checkpointer=store.open()).run(run_id="budget")
        with pytest.raises(Declined):
            await Recovering(checkpointer=store.open()).resume("budget")
    else:
        with pytest.raises(Declined):
            await Recovering(checkpointer=store.open()).run(run_id="budget")
    assert len(Recovering.calls) == 2
    assert store.open().info("budget").status == "failed"
