"""One answer sent while several steps wait for it answers each of them, as in llama-index-workflows; a retry
that finds its answer does not ask again; a step that asks twice gets two answers, not the first one twice."""

from __future__ import annotations

import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    WorkflowHandler,
    retry_policy,
    step,
    stop_after_attempt,
    wait_none,
)

from .conftest import Store
from .crashing import Crash, crash_at


class Branch(Event):
    name: str


class Answered(Event):
    name: str
    response: str


class ThreeAsk(Workflow):
    """Three branches each ask for approval at once, with the same request."""

    @step
    async def fan_out(self, ev: StartEvent, ctx: Context) -> Branch:
        for name in ("a", "b", "c"):
            ctx.send_event(Branch(name=name))
        return None  # type: ignore[return-value]

    @step(num_workers=3)
    async def ask(self, ev: Branch, ctx: Context) -> Answered:
        request = InputRequiredEvent(branch=ev.name)
        answer = await ctx.wait_for_event(HumanResponseEvent, waiter_event=request, timeout=5)
        return Answered(name=ev.name, response=answer.response)

    @step
    async def join(self, ev: Answered, ctx: Context) -> StopEvent:
        done = ctx.collect_events(ev, [Answered] * 3)
        if done is None:
            return None  # type: ignore[return-value]
        return StopEvent(result=sorted((e.name, e.response) for e in done))


EVERY_BRANCH = [("a", "yes"), ("b", "yes"), ("c", "yes")]


async def _until_all_three_ask(handler: WorkflowHandler) -> None:
    """Read the run's stream until each of its three steps has asked its question."""
    asked = 0
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            asked += 1
            if asked == 3:
                return


async def test_one_answer_sent_while_three_steps_wait_answers_all_three() -> None:
    handler = ThreeAsk().run()
    asked = set()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            asked.add(event.branch)
            if len(asked) == 3:
                handler.ctx.send_event(HumanResponseEvent(response="yes"))
    assert await handler == EVERY_BRANCH


async def test_after_a_restore_one_answer_still_answers_every_step_that_was_waiting() -> None:
    wf = ThreeAsk()
    handler = wf.run()
    await _until_all_three_ask(handler)
    saved = handler.ctx.to_dict()
    await handler.cancel_run()
    resumed = wf.run(ctx=Context.from_dict(wf, saved))
    resumed.ctx.send_event(HumanResponseEvent(response="yes"))  # before the restored steps wait again
    assert await resumed == EVERY_BRANCH


async def test_a_stored_run_resumed_elsewhere_answers_every_waiting_step(store: Store) -> None:
    handler = ThreeAsk(checkpointer=store.open()).run(run_id="three")
    await _until_all_three_ask(handler)
    handler.cancel()
    with pytest.raises(WorkflowCancelledError):
        await handler  # the cancellation is stored once this returns
    resumed = ThreeAsk(checkpointer=store.open()).resume("three")
    resumed.send_event(HumanResponseEvent(response="yes"))
    assert await resumed == EVERY_BRANCH


async def test_an_answer_stored_just_before_a_crash_answers_every_step_that_waits_again(store: Store) -> None:
    """The answer is durable when send_event returns; the process dies before any waiting step took it.
    Resumed, each of the three steps that wait again gets it."""
    handler = ThreeAsk(checkpointer=store.open()).run(run_id="crash")
    await _until_all_three_ask(handler)
    with crash_at("checkpoint.write.after#1"), pytest.raises(Crash):
        handler.send_event(HumanResponseEvent(response="yes"))
    resumed = ThreeAsk(checkpointer=store.open()).resume("crash")
    assert await resumed == EVERY_BRANCH


class RetriesAfterTheAnswer(Workflow):
    attempts = 0

    @step(retry_policy=retry_policy(wait=wait_none(), stop=stop_after_attempt(3)))
    async def ask(self, ev: StartEvent, ctx: Context) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent, waiter_event=InputRequiredEvent(), timeout=5)
        type(self).attempts += 1
        if type(self).attempts == 1:
            raise RuntimeError("fails once, after the answer came")
        return StopEvent(result=answer.response)


async def test_a_retry_finds_the_answer_its_failed_attempt_took_and_does_not_ask_again() -> None:
    RetriesAfterTheAnswer.attempts = 0
    handler = RetriesAfterTheAnswer().run()
    requests = 0
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            requests += 1
            handler.ctx.send_event(HumanResponseEvent(response="once"))
    assert await handler == "once"
    assert RetriesAfterTheAnswer.attempts == 2
    assert requests == 1


class AsksTwice(Workflow):
    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> StopEvent:
        first = await ctx.wait_for_event(HumanResponseEvent, waiter_event=InputRequiredEvent(n=1), timeout=5)
        second = await ctx.wait_for_event(HumanResponseEvent, waiter_event=InputRequiredEvent(n=2), timeout=5)
        return StopEvent(result=(first.response, second.response))


async def test_a_step_that_asks_twice_does_not_get_its_first_answer_twice() -> None:
    handler = AsksTwice().run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.ctx.send_event(HumanResponseEvent(response=f"answer {event.n}"))
    assert await handler == ("answer 1", "answer 2")
