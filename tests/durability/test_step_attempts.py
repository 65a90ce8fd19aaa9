"""A step's attempt number survives a crash; a step that kills its process every time fails the run after a bound;
failed steps reach @catch_error handlers; a step waiting with ctx.wait_for_event finds its answer after a crash."""

from __future__ import annotations

import asyncio

import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RunLeaseError,
    StartEvent,
    StepCrashLoopError,
    StepFailedEvent,
    StopEvent,
    Workflow,
    catch_error,
    retry_policy,
    step,
    stop_after_attempt,
    wait_none,
)

from .conftest import Store
from .crashing import Crash, ManualClock, crash_at


class Flaky(Exception):
    pass


class Fetch(Workflow):
    """`fetch` fails on its first attempt and records the attempt numbers it saw."""

    @step(retry_policy=retry_policy(wait=wait_none(), stop=stop_after_attempt(5)))
    async def fetch(self, ev: StartEvent, ctx: Context) -> StopEvent:
        seen = await ctx.store.get("attempts", default=[])
        await ctx.store.set("attempts", [*seen, ctx.attempt])
        if ctx.attempt == 1:
            raise Flaky("first try fails")
        await ctx.checkpoint()  # durable: this attempt (and the failed one before it) are on record
        return StopEvent(result=ctx.retry_info().retry_number)

    @step
    async def unused(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent()


async def test_the_attempt_number_continues_after_a_crash(store: Store) -> None:
    """Attempt 1 fails, attempt 2 is under way at a checkpoint when the process dies: the resumed step runs as 3."""
    with crash_at("step.fetch.end#1"), pytest.raises(Crash):
        await Fetch(checkpointer=store.open()).run(run_id="r")
    resumed = await Fetch(checkpointer=store.open()).resume("r")
    assert resumed == 2  # retry_info: the third attempt is the second retry
    assert store.open().info("r").status == "completed"


class Doomed(Workflow):
    """`convert` kills its process every time it runs."""

    @step
    async def convert(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="never")


async def test_a_step_that_kills_its_process_every_time_fails_the_run_after_the_limit(store: Store) -> None:
    """Each life dies in `convert`; the resume after the limit fails the run with StepCrashLoopError naming it."""
    with crash_at("step.convert.start#1"), pytest.raises(Crash):
        await Doomed(checkpointer=store.open()).run(run_id="d")
    for _ in range(Doomed.step_crash_limit - 1):
        with crash_at("step.convert.start#1"), pytest.raises(Crash):
            await Doomed(checkpointer=store.open()).resume("d")
    limit = Doomed.step_crash_limit
    with pytest.raises(StepCrashLoopError, match=rf"step 'convert' .* {limit} times its process died"):
        await Doomed(checkpointer=store.open()).resume("d")
    assert store.open().info("d").status == "failed"


async def test_a_step_whose_process_dies_on_other_machines_fails_the_run_after_the_limit(
    store: Store, clock: ManualClock
) -> None:
    """The same when each life ran on another machine: the next worker takes the run once the dead one's lease
    has lapsed, not from a worker that handed it back, so every death in `convert` counts against it."""

    def died_elsewhere() -> None:
        checkpointer = store.open()
        checkpointer.acquire("e", "elsewhere/1:1:0", steal_from=checkpointer.info("e").lease_owner)
        clock.advance(checkpointer.lease_ttl + 1)

    with crash_at("step.convert.start#1"), pytest.raises(Crash):
        await Doomed(checkpointer=store.open()).run(run_id="e")
    died_elsewhere()
    for _ in range(Doomed.step_crash_limit - 1):
        with crash_at("step.convert.start#1"), pytest.raises(Crash):
            await Doomed(checkpointer=store.open()).resume("e")
        died_elsewhere()
    with pytest.raises(StepCrashLoopError, match="step 'convert'"):
        await Doomed(checkpointer=store.open()).resume("e")
    assert store.open().info("e").status == "failed"


async def test_fewer_crashes_than_the_limit_still_complete(store: Store) -> None:
    """Dying in a step fewer times than the limit costs nothing but the attempts."""
    with crash_at("step.convert.start#1"), pytest.raises(Crash):
        await Doomed(checkpointer=store.open()).run(run_id="d")
    assert await Doomed(checkpointer=store.open()).resume("d") == "never"


class Part(Event):
    n: int


class TwoParts(Workflow):
    """Two parts queued for a one-worker step: the second waits in the queue the first leaves behind."""

    step_crash_limit = 1

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Part | None:
        ctx.send_event(Part(n=1))
        ctx.send_event(Part(n=2))
        return None

    @step(num_workers=1)
    async def part(self, ev: Part) -> StopEvent | None:
        return None if ev.n == 1 else StopEvent(result="done")


async def test_a_crash_in_the_last_queued_delivery_counts(store: Store) -> None:
    """The checkpoint written as the first part finishes records the second as under way, though a queue holds
    it: the process that dies in it counts as a crash, and the limit of one fails the run."""
    with crash_at("step.part.start#2"), pytest.raises(Crash):
        await TwoParts(checkpointer=store.open()).run(run_id="p")
    with pytest.raises(StepCrashLoopError, match=r"step 'part' .* 1 times its process died"):
        await TwoParts(checkpointer=store.open()).resume("p")


class Fallback(Event):
    step_name: str
    message: str


class Guarded(Workflow):
    @step
    async def charge(self, ev: StartEvent) -> StopEvent:
        raise Flaky(f"card {ev.card} declined")

    @catch_error(for_steps=["charge"])
    async def recover(self, ev: StepFailedEvent) -> Fallback:
        return Fallback(step_name=ev.step_name, message=f"{ev.input_event.card}: {ev.exception}")

    @step
    async def finish(self, ev: Fallback) -> StopEvent:
        return StopEvent(result=f"{ev.step_name} failed ({ev.message})")


async def test_a_failed_step_reaches_its_catch_error_handler(store: Store) -> None:
    """The handler receives the step's name, input and exception, and the run completes from there."""
    assert await Guarded(checkpointer=store.open()).run(card="4242") == "charge failed (4242: card 4242 declined)"


async def test_a_crash_after_the_handoff_resumes_into_the_handler(store: Store) -> None:
    """The StepFailedEvent is checkpointed like any event: a crash before the handler runs resumes into it."""
    with crash_at("step.recover.start#1"), pytest.raises(Crash):
        await Guarded(checkpointer=store.open()).run(run_id="g", card="1")
    assert await Guarded(checkpointer=store.open()).resume("g") == "charge failed (1: card 1 declined)"


class Approval(Event):
    order: int
    approved: bool


class Approve(Workflow):
    extra_events = (Approval,)  # a stored run holding an answer loads after a restart

    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> StopEvent:
        runs = await ctx.store.get("asked", default=0)
        await ctx.store.set("asked", runs + 1)
        answer = await ctx.wait_for_event(
            Approval, waiter_event=InputRequiredEvent(order=ev.order), requirements={"order": ev.order}, timeout=5
        )
        return StopEvent(result=answer.approved)


async def test_wait_for_event_gets_the_answer_that_matches_its_requirements() -> None:
    """An answer for another order is not taken; the matching one is."""
    handler = Approve().run(order=7)
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            assert event.order == 7
            handler.ctx.send_event(Approval(order=8, approved=False))
            handler.ctx.send_event(Approval(order=7, approved=True))
    assert await handler is True


async def test_wait_for_event_after_a_crash_asks_once_and_takes_the_stored_answer(store: Store) -> None:
    """An answer that arrived before the crash is in the checkpoint; the restarted step takes it and
    does not send its request again, nor is the request shown again: the answer settled it."""
    first = Approve(checkpointer=store.open())
    handler = first.run(run_id="a", order=1)
    requests = 0
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            requests += 1
            with crash_at("checkpoint.write.after#1"), pytest.raises(Crash):
                handler.send_event(Approval(order=1, approved=True))
            break
    resumed = Approve(checkpointer=store.open()).resume("a")
    streamed = [event async for event in resumed.stream_events()]
    assert await resumed is True
    assert requests == 1 and not any(isinstance(e, InputRequiredEvent) for e in streamed)


class Ask(Event):
    question: str


class Asking(Workflow):
    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> StopEvent:
        answer = await ctx.wait_for_event(Approval, waiter_event=Ask(question="ship it?"), timeout=5)
        return StopEvent(result=answer.approved)


async def test_a_request_no_step_takes_is_shown_on_the_stream_once() -> None:
    """wait_for_event's waiter_event of a type no step accepts is only shown to the stream's reader."""
    handler = Asking().run()
    shown = []
    async for event in handler.stream_events():
        if isinstance(event, Ask):
            shown.append(event.question)
            handler.ctx.send_event(Approval(order=1, approved=True))
    assert await handler is True
    assert shown == ["ship it?"]


class Slow(Workflow):
    """`work` takes long enough to be under way when its run is handed back."""

    @step
    async def work(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(0.2)
        return StopEvent(result="done")


async def test_a_run_handed_back_more_times_than_the_crash_limit_still_completes(store: Store) -> None:
    """A worker that hands a run back (shutting down, or after a failure its store would not take) was alive
    then: the step it had under way did not kill its process, so it is not counted against step_crash_limit."""
    handler = Slow(checkpointer=store.open()).run(run_id="h")
    for _ in range(Slow.step_crash_limit + 1):
        await handler.claimed()  # a resume on a threaded store claims the run off the loop: it has a runner once done
        await asyncio.sleep(0.02)  # the step is under way, and marked so in the stored run
        assert handler._runner is not None
        handler._runner.hand_back()
        with pytest.raises(RunLeaseError):
            await handler
        handler = Slow(checkpointer=store.open()).resume("h")
    assert await handler == "done"
