"""Context calls a ported workflow may still make: deprecated ones warn, and misplaced ones say what they did."""

import asyncio
import warnings
from collections.abc import Iterator

import pytest

from durableflow import Context, StartEvent, StopEvent, Workflow, WorkflowCancelledError, WorkflowRuntimeError, step
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
