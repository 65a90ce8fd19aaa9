"""A step that asks for an answer (``ctx.wait_for_event``) asks once: its retry takes the answer its failed attempt
took without asking again, and after a restart the reader of the resumed run's stream is shown the question, even
when a checkpoint had already recorded it as shown, unless its answer is already stored."""

from __future__ import annotations

import asyncio

import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    MemoryCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    crashpoint,
    retry_policy,
    step,
    stop_after_attempt,
    wait_none,
)

from .crashing import Crash, crash_at


class Approval(Event):
    approved: bool


class Question(Event):
    text: str


class Go(Event):
    pass


class AskWhileSideWorks(Workflow):
    """``ask`` shows a question no step takes and waits for the answer; ``side`` ends meanwhile, once ``gate`` opens,
    so a checkpoint is written while ``ask`` waits."""

    extra_events = (Approval,)
    gate: asyncio.Event

    @step
    async def begin(self, ev: StartEvent, ctx: Context) -> Go | None:
        ctx.send_event(Go())
        return None

    @step
    async def ask(self, ev: Go, ctx: Context) -> StopEvent:
        answer = await ctx.wait_for_event(Approval, waiter_event=Question(text="ship it?"), timeout=5)
        return StopEvent(result=answer.approved)

    @step
    async def side(self, ev: StartEvent) -> None:
        await type(self).gate.wait()
        return None


async def test_a_question_recorded_as_shown_is_shown_again_to_the_resumed_runs_reader() -> None:
    """The question is shown; ``side`` ends and its checkpoint (which records the question as shown) is written;
    the process dies. The resumed run's stream shows the question again, so its reader can answer it."""
    store = MemoryCheckpointer()
    AskWhileSideWorks.gate = asyncio.Event()
    first = AskWhileSideWorks(checkpointer=store).run(run_id="ask")
    async for event in first.stream_events():
        if isinstance(event, Question):
            break
    with crash_at("checkpoint.write.after#1") as reached, pytest.raises(Crash):
        AskWhileSideWorks.gate.set()
        await first
    assert reached[0] == "step.side.end#1"
    resumed = AskWhileSideWorks(checkpointer=store).resume("ask")
    shown = []

    async def answer() -> None:
        async for event in resumed.stream_events():
            if isinstance(event, Question):
                shown.append(event.text)
                resumed.send_event(Approval(approved=True))

    reading = asyncio.ensure_future(answer())
    assert await asyncio.wait_for(resumed, 10) is True
    await reading
    assert shown == ["ship it?"]


class Flaky(Exception):
    pass


class AskThenFail(Workflow):
    """``ask`` asks for approval, then its first attempt fails after taking the answer."""

    @step(retry_policy=retry_policy(wait=wait_none(), stop=stop_after_attempt(3)))
    async def ask(self, ev: StartEvent, ctx: Context) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="ok?"))
        if ctx.attempt == 1:
            raise Flaky("failed after the answer came")
        return StopEvent(result=answer.response)


async def test_a_retried_step_takes_the_answer_its_failed_attempt_took_without_asking_again() -> None:
    """The person is asked once: the retry finds the answer the failed attempt took."""
    handler = AskThenFail(checkpointer=MemoryCheckpointer()).run()
    asked = 0
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            asked += 1
            handler.send_event(HumanResponseEvent(response="yes"))
    assert await asyncio.wait_for(handler, 10) == "yes"
    assert asked == 1


class Approved(Event):
    first: bool


class TwoApprovals(Workflow):
    """Asks 'ship it?', then, in another step, 'deploy to prod?': each answer is a separate decision."""

    extra_events = (Approval,)

    @step
    async def ship(self, ev: StartEvent, ctx: Context) -> Approved:
        answer = await ctx.wait_for_event(Approval, waiter_event=Question(text="ship it?"))
        crashpoint("after-ship-answer")  # the answer is stored; the step has not completed
        return Approved(first=answer.approved)

    @step
    async def deploy(self, ev: Approved, ctx: Context) -> StopEvent:
        answer = await ctx.wait_for_event(Approval, waiter_event=Question(text="deploy to prod?"))
        return StopEvent(result=[ev.first, answer.approved])


async def test_an_answered_question_is_not_asked_again_after_a_restart() -> None:
    """Asked again, the reader would answer 'ship it?' a second time, and that answer, parked, would approve the
    deploy nobody approved."""
    store = MemoryCheckpointer()
    first = TwoApprovals(checkpointer=store, timeout=None).run(run_id="two")
    with crash_at("user.after-ship-answer#1"), pytest.raises(Crash):
        async for event in first.stream_events():
            if isinstance(event, Question):
                first.send_event(Approval(approved=True))
        await first
    resumed = TwoApprovals(checkpointer=store, timeout=None).resume("two")
    asked: list[str] = []

    async def reader() -> None:
        async for event in resumed.stream_events():
            if isinstance(event, Question):
                asked.append(event.text)
                resumed.send_event(Approval(approved=event.text == "ship it?"))  # yes to shipping, no to prod

    reading = asyncio.ensure_future(reader())
    result = await asyncio.wait_for(resumed, 10)
    await reading
    assert (asked, result) == (["deploy to prod?"], [True, False])
