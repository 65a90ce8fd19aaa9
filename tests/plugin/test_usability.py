"""Verdicts a user can act on, and pytest behaving as users expect."""

from __future__ import annotations

import pytest

from durableflow.testing import explore
from durableflow.testing._report import Outcome, Report

from .downstream import write_ini
from .flows import PushThenRecord
from .restarts import AskDurably, AskOnTheStream, AskThenAwait, yes

MODES = ["inprocess", "kill"]
SEED = 20260311


@pytest.mark.parametrize("mode", MODES)
def test_a_question_lost_from_the_stream_is_lost_work_not_a_hang(mode: str) -> None:
    """A run that waits for an answer to a question a restart never asked again is told as such."""
    report = explore(AskOnTheStream, {}, mode=mode, seed=SEED, respond=yes, hang_after=1)

    assert report.failures
    assert {o.kind for o in report.failures} == {"lost work"}
    assert "no InputRequiredEvent reached the stream" in report.failures[0].diff
    explore(AskDurably, {}, mode=mode, seed=SEED, respond=yes).assert_ok()


@pytest.mark.parametrize("mode", MODES)
def test_a_step_left_waiting_for_an_answer_nobody_asks_for_is_lost_work_told_at_once(mode: str) -> None:
    """A step waiting in ctx.wait_for_event for an answer to a question asked on the stream before the crash
    can never go on: told as lost work as soon as the run can do nothing on its own, not after the bound."""
    report = explore(AskThenAwait, {}, mode=mode, seed=SEED, respond=yes, hang_after=30)

    assert report.failures
    assert {o.kind for o in report.failures} == {"lost work"}
    assert "step 'decide' waits for a HumanResponseEvent" in report.failures[0].diff
    assert report.seconds < 15


def test_an_unknown_scenario_id_is_called_unknown() -> None:
    """Replaying an id the run never reaches names it unknown and lists the points it has."""
    with pytest.raises(ValueError, match=r"unknown scenario 'step\.nope\.end#1'.*step\.convert\.start#1"):
        explore(PushThenRecord, {"ids": [1]}, only="step.nope.end#1")


def test_failure_output_counts_kinds_gives_a_hint_and_shows_the_first_few() -> None:
    """Many failures: one line per kind with its count and a fix, five diffs, the rest named."""
    report = Report("Many", "inprocess", 1, 1)
    report.scenarios = [Outcome(f"step.s.end#{n}", ok=False, kind="lost work", diff=f"d{n}") for n in range(1, 9)]
    text = report.failure_text()

    assert "     8 lost work: work was recorded as done before it happened" in text
    assert text.count("--- step.s.end#") == 5
    assert "... and 3 more failing scenarios: step.s.end#6, step.s.end#7, step.s.end#8" in text


def test_printing_a_report_shows_its_summary_and_failures() -> None:
    """``print(report)`` reads as the verdict, not as the dataclass's fields."""
    report = Report("Few", "inprocess", 1, 7)
    report.scenarios = [Outcome("step.s.end#1", ok=True)]
    assert str(report).startswith("crash exploration of Few: all 1 scenarios passed [mode=inprocess depth=1 seed=7")
    report.scenarios.append(Outcome("step.s.end#2", ok=False, kind="lost work", diff="the diff"))
    assert str(report) == report.failure_text()
    assert "--- step.s.end#2: lost work" in str(report)


def test_a_bad_ini_value_is_refused_at_startup(project: pytest.Pytester) -> None:
    """``durableflow_depth = 3`` stops pytest before any test runs, naming the option."""
    write_ini(project, "durableflow_depth = 3")
    project.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = project.runpytest()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*durableflow_depth = '3': expected one of 1, 2*"])


ASYNC_TEST = """
import flows
from durableflow import StartEvent, StopEvent, Workflow, step


class Hello(Workflow):
    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="hello")


async def test_async(crash_harness):
    assert await Hello().run() == "hello"
    crash_harness.explore(flows.AddThenRecord, {"ids": [1]}).assert_ok()
"""


def test_async_tests_run_without_pytest_asyncio(project: pytest.Pytester) -> None:
    """With pytest-asyncio disabled, the plugin itself runs ``async def`` tests."""
    project.makepyfile(test_async=ASYNC_TEST)
    result = project.runpytest("-p", "no:asyncio")

    result.assert_outcomes(passed=1)


def test_fake_resources_requested_after_the_harness_serve_its_explorations(
    crash_harness, request: pytest.FixtureRequest
) -> None:
    """``fake_resources`` fetched with ``request.getfixturevalue`` once ``crash_harness`` exists still reaches it."""
    from .flows import ChargeAsEffect, FakePayments, get_payments

    fakes = request.getfixturevalue("fake_resources")
    fakes.override(get_payments, FakePayments, record=True)

    report = crash_harness.explore(ChargeAsEffect, {"order": "A-1", "cents": 500})

    report.assert_ok()
    assert report.reference == "receipt-1"


def test_real_redis_is_a_client_of_the_redis_url_that_cleans_up(pytester: pytest.Pytester, redis_url: str) -> None:
    """``real_redis`` talks to ``--durableflow-redis-url`` and deletes the keys its test made."""
    write_ini(pytester)
    pytester.makepyfile(
        test_real="""
def test_writes(real_redis):
    real_redis.set("durableflow-real-redis-test", "1")
    assert real_redis.get("durableflow-real-redis-test") == b"1"
"""
    )
    result = pytester.runpytest(f"--durableflow-redis-url={redis_url}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    import redis

    assert redis.Redis.from_url(redis_url).exists("durableflow-real-redis-test") == 0
