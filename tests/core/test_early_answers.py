"""An answer sent before its step waits for it is kept for that step, as long as the run still owes work."""

from __future__ import annotations

import asyncio

import pytest

from durableflow import Context, Event, StartEvent, StopEvent, Workflow, WorkflowRuntimeError, step


class Ping(Event):
    value: str = ""


class Undeclared(Event):
    pass


class SendsBeforeWaiting(Workflow):
    @step
    async def emit(self, ctx: Context, ev: StartEvent) -> Ping | None:
        ctx.send_event(Ping(value="p"))  # no step waits yet: the waiting step has not started
        return None

    @step
    async def later(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(0)
        ping = await ctx.wait_for_event(Ping)
        return StopEvent(result=ping.value)


async def test_an_answer_sent_by_a_step_before_another_waits_is_kept_for_it() -> None:
    """Ping (declared by emit's annotation) is kept until `later` waits for it."""
    assert await SendsBeforeWaiting(disable_validation=True).run() == "p"


class AnsweredFromOutside(Workflow):
    extra_events = (Ping,)

    @step
    async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ping = await ctx.wait_for_event(Ping, requirements={"value": "x"})
        return StopEvent(result=ping.value)


async def test_an_answer_sent_right_after_run_is_kept_for_the_step_about_to_wait() -> None:
    """handler.send_event before the step has started waiting: the answer is not refused, and reaches it."""
    handler = AnsweredFromOutside().run()
    handler.ctx.send_event(Ping(value="x"))
    assert await handler == "x"


async def test_an_event_the_workflow_does_not_declare_is_still_refused() -> None:
    """A type no annotation or extra_events names cannot be awaited after a restart: refused at once."""
    handler = AnsweredFromOutside().run()
    with pytest.raises(WorkflowRuntimeError, match="Undeclared"):
        handler.ctx.send_event(Undeclared())
    handler.ctx.send_event(Ping(value="x"))
    assert await handler == "x"
