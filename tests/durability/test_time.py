"""Promise 5, time: durable sleeps and the run's timeout are stored as deadlines, so downtime counts exactly once."""

from __future__ import annotations

import asyncio

import pytest

from durableflow import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowTimeoutError,
    retry_policy,
    step,
    stop_after_attempt,
    wait_none,
)

from .conftest import Store
from .crashing import Crash, ManualClock, crash_at, settle
from .workflows import Sleeper


async def _crash_while_sleeping(store: Store, clock: ManualClock, seconds: float, timeout: float | None) -> str:
    """Start a Sleeper napping ``seconds`` and kill it once its sleep is waiting on the clock; returns the run id."""
    handler = Sleeper(checkpointer=store.open(), timeout=timeout).run(seconds=seconds)
    await settle(lambda: clock.sleeping == 1)
    clock.kill_sleepers()
    with pytest.raises(Crash):
        await asyncio.wait_for(handler, 5)
    return handler.run_id


async def test_a_resumed_sleep_sleeps_only_the_remainder(store: Store, clock: ManualClock) -> None:
    """A 100 s sleep interrupted at 40 s and resumed after 30 s down wakes at its original deadline, 30 s later."""
    started = clock.now()
    handler = Sleeper(checkpointer=store.open()).run(seconds=100)
    await settle(lambda: clock.sleeping == 1)
    clock.advance(40)
    clock.kill_sleepers()
    with pytest.raises(Crash):
        await asyncio.wait_for(handler, 5)
    clock.advance(30)  # down for 30 s

    resumed = Sleeper(checkpointer=store.open()).resume(handler.run_id)
    await settle(lambda: clock.sleeping == 1)
    assert clock.sleep_deadlines == [started + 100, started + 100]
    clock.advance(29.5)
    await asyncio.sleep(0.01)
    assert not resumed.done()
    clock.advance(0.5)
    assert await asyncio.wait_for(resumed, 5) == "rested"
    assert clock.now() == started + 100


async def test_a_sleep_whose_deadline_passed_while_down_does_not_sleep_again(store: Store, clock: ManualClock) -> None:
    """A run resumed after its sleep's deadline has passed finishes without waiting on the clock at all."""
    run_id = await _crash_while_sleeping(store, clock, seconds=60, timeout=None)
    clock.advance(3600)
    resumed = Sleeper(checkpointer=store.open()).resume(run_id)
    assert await asyncio.wait_for(resumed, 5) == "rested"
    assert clock.sleeping == 0


async def test_a_timeout_passed_while_down_fails_the_resumed_run(store: Store, clock: ManualClock) -> None:
    """A run whose 50 s timeout expired while it was down fails on resume with WorkflowTimeoutError."""
    run_id = await _crash_while_sleeping(store, clock, seconds=10, timeout=50)
    clock.advance(60)
    with pytest.raises(WorkflowTimeoutError):
        await asyncio.wait_for(Sleeper(checkpointer=store.open(), timeout=50).resume(run_id), 5)


async def test_a_timeout_passed_while_down_fails_the_resumed_run_whose_step_is_due_at_once(store: Store) -> None:
    """On the system clock too: the resumed step, its sleep already due, would end the run before the timer for
    its passed deadline fired, had the resume not failed the run first."""
    with crash_at("checkpoint.write.after#2"), pytest.raises(Crash):  # the sleep's deadline is stored
        handler = Sleeper(checkpointer=store.open(), timeout=0.3).run(seconds=0.2)
        await asyncio.wait_for(handler, 5)
    await asyncio.sleep(0.35)  # down past both deadlines
    with pytest.raises(WorkflowTimeoutError):
        await asyncio.wait_for(Sleeper(checkpointer=store.open(), timeout=0.3).resume(handler.run_id), 5)


async def test_a_resumed_run_keeps_its_original_timeout_deadline(store: Store, clock: ManualClock) -> None:
    """A run started at t with a 50 s timeout and resumed at t+30 times out at t+50, not 50 s after the resume."""
    started = clock.now()
    run_id = await _crash_while_sleeping(store, clock, seconds=100, timeout=50)
    clock.advance(30)
    resumed = Sleeper(checkpointer=store.open(), timeout=50).resume(run_id)
    await settle(lambda: clock.sleeping == 1)
    clock.advance(19.5)
    await asyncio.sleep(0.01)
    assert not resumed.done()
    clock.advance(0.5)
    with pytest.raises(WorkflowTimeoutError):
        await asyncio.wait_for(resumed, 5)
    assert clock.now() == started + 50


async def test_a_run_that_timed_out_resumes_with_a_new_deadline(store: Store, clock: ManualClock) -> None:
    """Resuming a timed-out run is a new attempt: its deadline comes from the resuming workflow's timeout."""
    run_id = await _crash_while_sleeping(store, clock, seconds=100, timeout=50)
    clock.advance(60)
    recovered = r"^Operation timed out: run '[^']+' passed its deadline, time spent crashed included; wf\.resume"
    with pytest.raises(WorkflowTimeoutError, match=recovered):
        await asyncio.wait_for(Sleeper(checkpointer=store.open(), timeout=50).resume(run_id), 5)

    retried = Sleeper(checkpointer=store.open(), timeout=200).resume(run_id)
    await settle(lambda: clock.sleeping == 1)
    assert store.open().info(run_id).status == "running"
    clock.advance(100)  # past the sleep's deadline (100 s after the start), short of the new one (260 s)
    assert await asyncio.wait_for(retried, 5) == "rested"


async def test_the_new_deadline_of_a_resumed_timed_out_run_outlives_a_crash(store: Store, clock: ManualClock) -> None:
    """The deadline that resuming a timed-out run sets is checkpointed: a crash soon after does not bring the old,
    passed deadline back (which would time the recovered run out at once)."""
    run_id = await _crash_while_sleeping(store, clock, seconds=100, timeout=50)
    clock.advance(60)
    with pytest.raises(WorkflowTimeoutError):
        await asyncio.wait_for(Sleeper(checkpointer=store.open(), timeout=50).resume(run_id), 5)
    retried = Sleeper(checkpointer=store.open(), timeout=200).resume(run_id)
    await settle(lambda: clock.sleeping == 1)
    clock.kill_sleepers()
    with pytest.raises(Crash):
        await asyncio.wait_for(retried, 5)

    recovered = Sleeper(checkpointer=store.open(), timeout=200).resume(run_id)
    await settle(lambda: clock.sleeping == 1)
    clock.advance(100)  # past the sleep's deadline (100 s after the start), short of the new one (260 s)
    assert await asyncio.wait_for(recovered, 5) == "rested"


async def test_the_timeout_error_names_the_limit_that_set_the_deadline(store: Store, clock: ManualClock) -> None:
    handler = Sleeper(checkpointer=store.open(), timeout=50).run(seconds=100)
    await settle(lambda: clock.sleeping == 1)
    clock.advance(50)
    named = r"after 50 seconds: .* passed its deadline of 50s, time spent crashed included; wf\.resume\(run_id\) contin"
    with pytest.raises(WorkflowTimeoutError, match=named):
        await asyncio.wait_for(handler, 5)


async def _killed_in_its_sleep(store: Store, clock: ManualClock, kills: int, **limits: int) -> str:
    """A 100 s sleep whose process is killed ``kills`` times by resumes under ``limits``; what the last resume,
    left to wake at the deadline, returns."""
    run_id = await _crash_while_sleeping(store, clock, seconds=100, timeout=None)
    for life in range(kills + 1):
        wf = Sleeper(checkpointer=store.open())
        for name, limit in limits.items():
            setattr(wf, name, limit)
        resumed = wf.resume(run_id)
        if life < kills:
            await settle(lambda: clock.sleeping == 1)
            clock.kill_sleepers()
            with pytest.raises(Crash):
                await asyncio.wait_for(resumed, 5)
    await settle(lambda: clock.sleeping == 1)
    clock.advance(100)
    result: str = await asyncio.wait_for(resumed, 5)
    return result


async def test_recoveries_during_a_durable_sleep_do_not_make_the_run_a_poison_run(
    store: Store, clock: ManualClock
) -> None:
    """A run asleep in ``ctx.sleep`` through more worker restarts (deploys) than ``max_recoveries`` allows is
    not a run whose step kills its process: it wakes at its deadline and completes, not ``RecoveryLimitError``."""
    assert await _killed_in_its_sleep(store, clock, kills=3, max_recoveries=1) == "rested"


async def test_crashes_during_a_durable_sleep_are_not_counted_against_the_step(
    store: Store, clock: ManualClock
) -> None:
    """A process that dies while a step sleeps durably is no fault of the step's: killed in its sleep more times
    than ``step_crash_limit``, the step still wakes at its deadline and the run completes."""
    assert await _killed_in_its_sleep(store, clock, kills=2, step_crash_limit=2) == "rested"


class Answer(Event):
    text: str


class Asked(Event):
    pass


class AskWhileSideEnds(Workflow):
    """``ask`` waits up to 100 s for an ``Answer``; ``side`` ends meanwhile (it runs once ``ask`` waits), so a
    checkpoint is written while it waits. A timed-out wait is retried once."""

    extra_events = (Answer,)

    @step(retry_policy=retry_policy(wait=wait_none(), stop=stop_after_attempt(2)))
    async def ask(self, ev: StartEvent, ctx: Context) -> StopEvent | Asked:
        ctx.send_event(Asked())
        answer = await ctx.wait_for_event(Answer, timeout=100)
        return StopEvent(result=answer.text)

    @step
    async def side(self, ev: Asked) -> None:
        return None


async def test_a_wait_for_an_event_resumed_after_a_restart_waits_only_the_rest_of_its_timeout(
    store: Store, clock: ManualClock
) -> None:
    """A 100 s wait begun, then 60 s down: the resumed wait times out 40 s later, not 100 s later (time spent
    crashed counts, as for ``ctx.sleep``); its retry then waits a full 100 s of its own."""
    started = clock.now()
    with crash_at("checkpoint.write.after#2") as reached, pytest.raises(Crash):
        await AskWhileSideEnds(checkpointer=store.open()).run(run_id="asking")
    assert "step.side.end#1" in reached
    clock.advance(60)
    resumed = AskWhileSideEnds(checkpointer=store.open()).resume("asking")
    await settle(lambda: started + 100 in clock.timer_deadlines)
    clock.advance(39.5)
    await asyncio.sleep(0.01)
    assert not resumed.done()
    clock.advance(0.5)  # the first attempt times out at its original deadline; the retry waits 100 s anew
    await settle(lambda: clock.now() + 100 in clock.timer_deadlines)
    resumed.send_event(Answer(text="late but in time"))
    assert await asyncio.wait_for(resumed, 5) == "late but in time"
