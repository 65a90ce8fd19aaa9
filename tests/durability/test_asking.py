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
    wait_fixed,
    wait_none,
)
from durableflow.testing import explore

from .crashing import Crash, crash_at, stored_document


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


class RetriedApprovals(TwoApprovals):
    """``TwoApprovals`` whose 'ship' fails once after taking its answer; the retry takes the same answer, checkpoints
    its progress (attempt 2, nothing sent), and its process dies before the step completes."""

    @step(retry_policy=retry_policy(wait=wait_fixed(0.05), stop=stop_after_attempt(3)))
    async def ship(self, ev: StartEvent, ctx: Context) -> Approved:
        answer = await ctx.wait_for_event(Approval, waiter_event=Question(text="ship it?"))
        if ctx.attempt == 1:
            raise Flaky("failed after the answer came")
        await ctx.checkpoint()
        crashpoint("after-ship-answer")
        return Approved(first=answer.approved)


class Ask(InputRequiredEvent):
    text: str


class Reply(HumanResponseEvent):
    yes: bool = False


class TwoRequests(Workflow):
    """``TwoApprovals`` asking with input requests (``InputRequiredEvent``): the answered one must stop being
    awaited, or a restore shows it again."""

    extra_events = (Ask, Reply)

    @step
    async def ship(self, ev: StartEvent, ctx: Context) -> Approved:
        answer = await ctx.wait_for_event(Reply, waiter_event=Ask(text="ship it?"))
        return Approved(first=answer.yes)

    @step
    async def deploy(self, ev: Approved, ctx: Context) -> StopEvent:
        crashpoint("deploy-begins")
        answer = await ctx.wait_for_event(Reply, waiter_event=Ask(text="deploy to prod?"))
        return StopEvent(result=[ev.first, answer.yes])


def _answer(event: Event) -> Event | None:
    """Yes to shipping, no to prod, for either way of asking."""
    if isinstance(event, Question):
        return Approval(approved=event.text == "ship it?")
    if isinstance(event, Ask):
        return Reply(yes=event.text == "ship it?")
    return None


ASKED_TWICE = {
    "a restart": (TwoApprovals, "user.after-ship-answer#1"),
    "a retry, then a restart": (RetriedApprovals, "user.after-ship-answer#1"),
    "a restart after the answered input request's step ended": (TwoRequests, "user.deploy-begins#1"),
}


@pytest.mark.parametrize("case", ASKED_TWICE)
async def test_an_answered_question_is_not_asked_again_after(case: str) -> None:
    """Asked again, the reader would answer 'ship it?' a second time, and that answer, parked, would approve the
    deploy nobody approved."""
    workflow, crash = ASKED_TWICE[case]
    store = MemoryCheckpointer()
    first = workflow(checkpointer=store, timeout=None).run(run_id="two")
    with crash_at(crash), pytest.raises(Crash):
        async for event in first.stream_events():
            if (answer := _answer(event)) is not None:
                first.send_event(answer)
        await first
    assert stored_document(store, "two")["awaiting"] == []
    resumed = workflow(checkpointer=store, timeout=None).resume("two")
    asked: list[str] = []

    async def reader() -> None:
        async for event in resumed.stream_events():
            if (answer := _answer(event)) is not None:
                asked.append(event.text)
                resumed.send_event(answer)

    reading = asyncio.ensure_future(reader())
    result = await asyncio.wait_for(resumed, 10)
    await reading
    assert (asked, result) == (["deploy to prod?"], [True, False])


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_crash_anywhere_never_asks_an_answered_input_request_again(mode: str) -> None:
    """The crash harness, answering each request as a reader would: between the answer and the end of its step
    too, a restart shows only what is still unanswered (the answer settles the request in the write that
    stores it)."""
    report = explore(TwoRequests, {}, respond=_answer, mode=mode, seed=7)
    report.assert_ok()
    assert len(report.scenarios) > 10
