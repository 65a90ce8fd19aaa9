"""Context calls a ported workflow may still make: deprecated ones warn, and misplaced ones say what they did."""

import asyncio
import warnings
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from durableflow import (
    Context,
    SnapshotError,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    WorkflowRuntimeError,
    step,
)
from durableflow._context import (
    _warn_cancel_before_start,
    _warn_cancel_in_step,
    _warn_get_result,
    _warn_is_running_in_step,
)


@pytest.fixture(autouse=True)
def rearm_warnings() -> Iterator[None]:
    """Each warning fires once per process; clear them so every test sees its own."""
    for warn in (_warn_cancel_before_start, _warn_cancel_in_step, _warn_get_result, _warn_is_running_in_step):
        warn.cache_clear()
    yield


class AsksIfRunning(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ctx.is_running)


async def test_is_running_inside_a_step_is_true_and_deprecated_once() -> None:
    with pytest.warns(DeprecationWarning, match="is_running called from within a step"):
        assert await AsksIfRunning().run() is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert await AsksIfRunning().run() is True  # the second time, silent


class Quiet(Workflow):
    @step
    async def done(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="done")


async def test_is_running_outside_a_step_does_not_warn() -> None:
    wf = Quiet()
    ctx = Context(wf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ctx.is_running is False
        await wf.run(ctx=ctx)
        assert ctx.is_running is False


class Gated(Workflow):
    gate: asyncio.Event

    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        await self.gate.wait()
        return StopEvent(result="through")


async def test_get_result_is_deprecated_and_answers_only_for_a_completed_run() -> None:
    wf = Gated()
    wf.gate = asyncio.Event()
    with (
        pytest.warns(DeprecationWarning, match="get_result"),
        pytest.raises(WorkflowRuntimeError, match="requires a running workflow"),
    ):
        Context(wf).get_result()
    handler = wf.run()
    await asyncio.sleep(0)
    with pytest.raises(WorkflowRuntimeError, match="is not complete"):
        handler.ctx.get_result()
    wf.gate.set()
    assert await handler == "through"
    assert handler.ctx.get_result() == "through"


class CancelsItself(Workflow):
    @step
    async def cancel(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx._workflow_cancel_run()
        return StopEvent(result="still done")


async def test_cancelling_from_inside_a_step_or_before_the_start_only_warns() -> None:
    with pytest.warns(UserWarning, match=r"cancel\(\) called from within a step"):
        assert await CancelsItself().run() == "still done"
    with pytest.warns(UserWarning, match=r"cancel\(\) called before workflow started"):
        Context(CancelsItself())._workflow_cancel_run()


async def test_cancelling_a_running_run_from_outside_cancels_it() -> None:
    wf = Gated()
    wf.gate = asyncio.Event()
    handler = wf.run()
    await asyncio.sleep(0)
    handler.ctx._workflow_cancel_run()
    with pytest.raises(WorkflowCancelledError):
        await handler


class Counts(Workflow):
    @step
    async def count(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n = await ctx.store.get("n", default=0) + 1
        await ctx.store.set("n", n)
        return StopEvent(result=n)


async def test_a_context_saved_before_its_first_run_restores_its_seeded_state() -> None:
    wf = Counts()
    ctx = Context(wf)
    await ctx.store.set("n", 10)
    saved = ctx.to_dict()
    assert saved["run_id"] == "" and saved["is_running"] is False
    restored = Context.from_dict(wf, saved)
    assert restored.run_id == "" and not restored.is_running
    assert await wf.run(ctx=restored) == 11
    assert await wf.run(ctx=restored) == 12
    saved["state"]["state_data"]["_data"]["n"] = "99"
    with pytest.raises(SnapshotError, match="checksum"):
        Context.from_dict(wf, saved)


class Tally(BaseModel):
    n: int = 0


class CountsTyped(Workflow):
    @step
    async def count(self, ctx: Context[Tally], ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state.n += 1
        return StopEvent(result=(await ctx.store.get_state()).n)


async def test_to_dict_without_state_restores_a_fresh_store() -> None:
    wf = Counts()
    handler = wf.run()
    assert await handler == 1
    assert await wf.run(ctx=Context.from_dict(wf, handler.ctx.to_dict())) == 2
    assert await wf.run(ctx=Context.from_dict(wf, handler.ctx.to_dict(include_state=False))) == 1
    typed = CountsTyped()
    seeded = Context(typed)
    await seeded.store.set("n", 5)
    assert await typed.run(ctx=Context.from_dict(typed, seeded.to_dict())) == 6
    assert await typed.run(ctx=Context.from_dict(typed, seeded.to_dict(include_state=False))) == 1
