"""A failure the user must act on (an unknown scenario id, a reference run that never finishes) shows their
test's line and the message, not the harness's frames: pytest hides them (``__tracebackhide__``)."""

from __future__ import annotations

import pytest

from .downstream import write_ini

TESTS = """
import asyncio

from durableflow import Context, StartEvent, StopEvent, Workflow, step


class Flow(Workflow):
    @step
    async def go(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.checkpoint()
        return StopEvent(result=1)


class Hangs(Workflow):
    @step
    async def go(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await asyncio.sleep(30)
        return StopEvent(result=1)


def test_flow(crash_harness):
    crash_harness.explore(Flow, {}).assert_ok()


def test_hangs(crash_harness):
    crash_harness.explore(Hangs, {}, hang_after=0.5).assert_ok()
"""

HARNESS_FILES = ("_exploration.py", "_plan.py", "_fixtures.py")


@pytest.mark.parametrize(
    ("test", "options", "message"),
    [("test_flow", ["--durableflow-scenario=step.nope.end#1"], "unknown scenario 'step.nope.end#1'"),
     ("test_hangs", [], "the uninterrupted reference run of Hangs did not finish (hang)")],
    ids=["unknown scenario", "reference hangs"],
)  # fmt: skip
def test_a_failure_to_act_on_shows_the_test_and_the_message_not_the_harness(
    pytester: pytest.Pytester, test: str, options: list[str], message: str
) -> None:
    write_ini(pytester)
    pytester.makepyfile(test_flows=TESTS)
    result = pytester.runpytest(f"test_flows.py::{test}", *options, "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert message in text and "test_flows.py:" in text
    assert not [name for name in HARNESS_FILES if name in text], text
