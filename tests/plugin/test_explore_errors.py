"""When ``explore`` itself fails, its error is the only one shown, and it says what to do."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from durableflow import Context, StartEvent, StopEvent, Workflow, step
from pytest_durableflow import explore

from .flows import AddThenRecord


class RealSleepy(Workflow):
    """WRONG: a real sleep, which the frozen clock cannot skip."""

    @step
    async def nap(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await asyncio.sleep(10)
        return StopEvent(result="rested")


def test_an_unknown_scenario_is_not_raised_while_handling_another_error() -> None:
    with pytest.raises(ValueError) as raised:
        explore(AddThenRecord, {"ids": [1]}, only="nope#1")
    gc.collect()  # what the failed exploration left in reference cycles closes here, not in a later test
    assert raised.value.__context__ is None and raised.value.__cause__ is None


def test_a_hanging_reference_run_says_to_use_ctx_sleep_or_raise_the_bound() -> None:
    with pytest.raises(AssertionError) as raised:
        explore(RealSleepy, {}, hang_after=0.3)
    gc.collect()
    message = str(raised.value)
    assert "the uninterrupted reference run of RealSleepy did not finish (hang)" in message
    assert "ctx.sleep(" in message
    assert "hang_after=" in message and "--durableflow-hang-after" in message and "durableflow_hang_after" in message
    assert raised.value.__context__ is None


class ByAttempt(Workflow):
    """WRONG: its result is the attempt it ended on, and a crash counts as a failed attempt."""

    @step
    async def convert(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.store.set("started", True)
        await ctx.checkpoint()
        return StopEvent(result=ctx.attempt)


def test_a_result_read_from_ctx_attempt_is_told_to_not_depend_on_it() -> None:
    report = explore(ByAttempt, {})
    assert {o.kind for o in report.failures} == {"divergent result"}
    hint = next(line for line in report.failure_text().splitlines() if "divergent result:" in line)
    assert "ctx.attempt" in hint


class StampsItsStart(Workflow):
    """WRONG: the time it keeps is read anew when the step runs again after a restart, 300 s later."""

    @step
    async def begin(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.store.set("started_at", time.time())
        await ctx.checkpoint()
        return StopEvent(result="done")


def test_a_time_kept_in_ctx_store_is_told_to_be_read_inside_ctx_effect() -> None:
    """The value is in ctx.store already: the hint must not stop at 'keep progress in ctx.store'."""
    report = explore(StampsItsStart, {})
    assert "divergent state" in {o.kind for o in report.failures}
    hint = next(line for line in report.failure_text().splitlines() if "divergent state:" in line)
    assert "the time" in hint and "inside ctx.effect" in hint
