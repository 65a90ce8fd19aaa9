"""A checkpoint that fails mid-run leaves a run that resumes once the cause is fixed, with nothing lost or doubled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durableflow import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    MemoryCheckpointer,
    Record,
    SerializationError,
    StartEvent,
    StopEvent,
    StoreUnavailableError,
    Workflow,
    WorkflowCancelledError,
    step,
)


class FlakyStore(MemoryCheckpointer):
    """A memory store whose next append fails once ``fail_next`` is set, as a store going away would."""

    fail_next = False

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailableError("the store went away for a moment")
        super().append(run_id, record, owner, *args, **kwargs)


BROKEN = {"result": True}
"""While set, the last step returns a result that cannot be stored."""


class Report(Workflow):
    @step
    async def write(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.store.set("pages", ev.pages)
        return StopEvent(result=object() if BROKEN["result"] else {"pages": ev.pages})


async def test_a_result_that_cannot_be_stored_fails_the_run_and_a_resume_finishes_it_after_the_fix() -> None:
    """The failed final checkpoint does not record the last step as done: resumed after the fix, it runs again."""
    store = MemoryCheckpointer()
    BROKEN["result"] = True
    handler = Report(checkpointer=store).run(pages=3)
    with pytest.raises(SerializationError):
        await asyncio.wait_for(handler, timeout=5)
    assert store.info(handler.run_id).status == "failed"

    BROKEN["result"] = False
    result = await asyncio.wait_for(Report(checkpointer=store).resume(handler.run_id), timeout=5)
    assert result == {"pages": 3}
    assert store.info(handler.run_id).status == "completed"


async def test_a_store_failing_at_the_final_checkpoint_leaves_the_run_resumable() -> None:
    """When the write that completes a run fails, a resume runs the last step again and completes the run."""
    store = FlakyStore()
    BROKEN["result"] = False
    handler = Report(checkpointer=store).run(pages=2)  # stored at once, by create
    store.fail_next = True  # so the append that fails is the one completing the run
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(handler, timeout=5)
    result = await asyncio.wait_for(Report(checkpointer=store).resume(handler.run_id), timeout=5)
    assert result == {"pages": 2}


DECISIONS: list[str] = []


class Approval(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(question="ship it?")

    @step
    async def decide(self, ev: HumanResponseEvent) -> StopEvent:
        DECISIONS.append(ev.response)
        return StopEvent(result=ev.response)


async def _answer(handler: Any, response: str) -> None:
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.send_event(HumanResponseEvent(response=response))


async def test_an_event_whose_checkpoint_fails_is_not_kept_and_resending_it_after_resume_counts_once() -> None:
    """send_event either makes the event durable or stops the run without it: resent after a resume, it runs once."""
    store = FlakyStore()
    DECISIONS.clear()
    handler = Approval(checkpointer=store).run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            store.fail_next = True
            with pytest.raises(StoreUnavailableError):
                handler.send_event(HumanResponseEvent(response="yes"))
            break
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(handler, timeout=5)
    await asyncio.sleep(0.01)
    assert DECISIONS == []  # the event died with the run: no step saw it

    resumed = Approval(checkpointer=store).resume(handler.run_id)
    await asyncio.wait_for(_answer(resumed, "yes"), timeout=5)
    assert await resumed == "yes"
    assert DECISIONS == ["yes"]


async def test_cancel_stops_a_resume_that_waits_for_a_lease() -> None:
    """A resume waiting for another worker's lease can be cancelled: it gives up at once and leaves the run alone."""
    store = MemoryCheckpointer(lease_ttl=60)
    DECISIONS.clear()
    first = Approval(checkpointer=store).run()
    async for event in first.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    waiting = Approval(checkpointer=store).resume(first.run_id, wait=30)
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(WorkflowCancelledError):
        await asyncio.wait_for(waiting, timeout=2)
    first.send_event(HumanResponseEvent(response="no"))  # its request was read above; the first worker goes on
    assert await asyncio.wait_for(first, timeout=2) == "no"
    assert DECISIONS == ["no"]


async def test_streaming_a_resume_that_gives_up_on_its_lease_raises_instead_of_waiting() -> None:
    """When resume(wait=...) gives up on another worker's lease, its stream raises RunLeaseError rather than hang."""
    from durableflow import RunLeaseError

    store = MemoryCheckpointer(lease_ttl=60)
    first = Approval(checkpointer=store).run()
    async for event in first.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    waiting = Approval(checkpointer=store).resume(first.run_id, wait=0.3)
    with pytest.raises(RunLeaseError):
        await asyncio.wait_for(anext(waiting.stream_events()), timeout=3)
    first.cancel()
