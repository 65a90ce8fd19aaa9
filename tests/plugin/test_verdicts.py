"""The harness's verdicts: workflows wrong on purpose fail with the right kind, their twins pass, the modes agree."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Annotated, Any

import pytest

from durableflow import Context, Event, Resource, StartEvent, StopEvent, Workflow, step
from pytest_durableflow import KINDS, Report, explore, run_scenario

from .flows import (
    PAYMENT_FAKES,
    RIGHT,
    WRONG,
    AlwaysFails,
    ChargeWithNoKey,
    InstanceProgress,
    NeverFinishes,
    OrderIdAsEffect,
    OrderIdInTheStep,
    Pipeline,
    PushThenRecord,
    PushThenRecordLoosely,
    TakeThenRecord,
    WaitsForInstanceSignal,
)

MODES = ["inprocess", "kill"]
SEED = 20260101
KILL_SAMPLE = 40
"""Depth-2 scenarios a kill-mode exploration of a correct workflow samples: every first crash point (30 at most),
then pairs. Each forks two or three processes, and the full spaces (84 to 588 scenarios) would cost the suite
most of a minute."""

Explored = Callable[[str, str], Report]


@pytest.fixture(scope="module")
def explored() -> Explored:
    """Each workflow's exploration in a mode, made once for the module: wrong ones at depth 1, right ones at 2."""
    reports: dict[tuple[str, str], Report] = {}

    def get(name: str, mode: str) -> Report:
        if (name, mode) not in reports:
            if name in WRONG:
                workflow, start, _ = WRONG[name]
                depth, sample = 1, None
            else:
                workflow, start = RIGHT[name]
                depth, sample = 2, KILL_SAMPLE if mode == "kill" else None
            reports[name, mode] = explore(
                workflow, start, depth=depth, mode=mode, seed=SEED, max_scenarios=sample, **PAYMENT_FAKES
            )
        return reports[name, mode]

    return get


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(WRONG))
def test_a_wrong_workflow_fails_with_the_kind_its_mistake_calls_for(explored: Explored, name: str, mode: str) -> None:
    """Each mistake fails at least one scenario, and every failing scenario names the kind that mistake causes."""
    expected = WRONG[name][2]
    report = explored(name, mode)

    assert expected in KINDS
    assert report.failures, report.summary()
    assert {(o.id, o.kind) for o in report.failures} == {(o.id, expected) for o in report.failures}
    with pytest.raises(AssertionError, match=expected):
        report.assert_ok()


def test_progress_kept_on_the_instance_fails_even_after_its_checkpoint(explored: Explored) -> None:
    """A crash just after a progress checkpoint pushes again when progress lives in ``self.done``, not the store."""
    just_after_progress = "checkpoint.write.after#2"
    on_instance = {o.id: o for o in explored("instance state", "inprocess").scenarios}
    in_store = {o.id: o for o in explored("rpush before progress", "inprocess").scenarios}
    assert InstanceProgress.__name__ in explored("instance state", "inprocess").workflow
    assert PushThenRecord.__name__ in explored("rpush before progress", "inprocess").workflow

    assert on_instance[just_after_progress].kind == "duplicated effect"
    assert in_store[just_after_progress].ok


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(RIGHT))
def test_a_correct_workflow_passes_every_scenario_at_depth_2(explored: Explored, name: str, mode: str) -> None:
    """Idempotent writes, a keyed ctx.effect and a fan-out gathered by collect_events survive every crash pair tried."""
    report = explored(name, mode)

    report.assert_ok()
    assert report.depth == 2
    assert any(">" in o.id for o in report.scenarios), "no scenario crashed twice"
    if mode == "kill":
        assert len(report.scenarios) == KILL_SAMPLE
    else:
        assert len(report.scenarios) == report.space


def test_concurrent_effects_are_open_at_the_same_time(explored: Explored) -> None:
    """In the concurrent-effects flow the second charge begins before the first one's result is durable, so each
    effect's window must be told apart by its key (a correct workflow then passes, as the test above shows)."""
    points = [o.id for o in explored("concurrent effects", "inprocess").scenarios if ">" not in o.id]
    befores = [i for i, point in enumerate(points) if point.startswith("effect.") and ".before#" in point]
    afters = [i for i, point in enumerate(points) if point.startswith("effect.") and ".after#" in point]

    assert len(befores) == len(afters) == 2
    assert befores[1] < afters[0]


@pytest.mark.parametrize("name", list(WRONG) + list(RIGHT))
def test_both_modes_give_the_same_verdict_on_every_scenario(explored: Explored, name: str) -> None:
    """A SIGKILLed child and an in-process crash at the same point are judged alike: same ids, same ok and kind."""
    inprocess = {o.id: (o.ok, o.kind) for o in explored(name, "inprocess").scenarios}
    kill = {o.id: (o.ok, o.kind) for o in explored(name, "kill").scenarios}

    if name in WRONG:
        assert list(kill) == list(inprocess)
    assert kill.keys() <= inprocess.keys()
    assert kill == {scenario: inprocess[scenario] for scenario in kill}


# A hung engine's tasks are collected once its loop is closed: collecting them here, under the test,
# shows that nothing of theirs raises then.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("mode", MODES)
def test_a_step_that_waits_forever_fails_as_a_hang_within_the_bound(mode: str) -> None:
    """A resumed run whose step awaits a signal nobody will send is cut off after hang_after and reported as a hang."""
    # The bound also limits the reference run, which a loaded machine can slow past half a second in kill mode.
    outcome = run_scenario(WaitsForInstanceSignal, {}, "step.consume.start#1", mode=mode, hang_after=1.5)
    gc.collect()

    assert (outcome.ok, outcome.kind) == (False, "hang")
    assert "step.consume.start#1" in outcome.diff
    assert 1.5 <= outcome.seconds < 5.0


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("mode", MODES)
def test_a_reference_run_that_never_finishes_says_it_overstayed(mode: str) -> None:
    """When not even the uninterrupted run finishes, the error says it outlived the bound, not that its process died."""
    with pytest.raises(AssertionError) as raised:
        explore(NeverFinishes, {}, mode=mode, hang_after=0.3)
    gc.collect()

    assert "did not finish (hang): did not finish within 0.3 s" in str(raised.value)
    assert "died" not in str(raised.value)


@pytest.mark.parametrize("mode", MODES)
def test_a_counter_taken_down_twice_is_a_duplicated_effect_not_lost_work(mode: str) -> None:
    """Below the reference's stock is past its end in the direction the run was moving: work done twice."""
    report = explore(TakeThenRecord, {"orders": ["A", "B"]}, mode=mode)

    assert report.failures, report.summary()
    assert {o.kind for o in report.failures} == {"duplicated effect"}
    assert 'redis key \'stock\':\n  reference run: "8"\n  resumed run:   "7"' in report.failures[0].diff


@pytest.mark.parametrize("mode", MODES)
def test_a_redis_client_annotated_any_is_faked_and_judged_like_a_typed_one(mode: str) -> None:
    """What a loosely typed factory built is a Redis client: served by the world's fakeredis, never the real
    server (here none answers, so the reference run would fail), and a push made twice is caught."""
    report = explore(PushThenRecordLoosely, {"ids": [1, 2]}, mode=mode)

    assert report.failures, report.summary()
    assert {o.kind for o in report.failures} == {"duplicated effect"}


def test_a_timeout_shorter_than_the_downtime_fails_resumes_and_says_which_option_helps() -> None:
    """Workflow(timeout=60) counts the default 300 s of downtime: every resume times out, and the hint names
    the downtime's options; with less downtime than the timeout the same run passes."""
    start = {"ids": [1, 2]}
    report = explore(lambda: Pipeline(timeout=60), start)

    assert report.failures and {o.kind for o in report.failures} == {"error during resume"}
    assert "--durableflow-downtime" in report.failure_text() and "WorkflowTimeoutError" in report.failure_text()
    explore(lambda: Pipeline(timeout=60), start, downtime=10).assert_ok()


def test_a_workflow_instance_is_refused_with_the_factory_to_pass_instead() -> None:
    with pytest.raises(TypeError, match=r"not an instance: pass Pipeline or, to give it options, lambda: Pipeline\("):
        explore(Pipeline(timeout=60), {"ids": [1]})  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_a_call_passing_idempotency_key_none_counts_every_time(mode: str) -> None:
    """Only a real key lets the receiver dedupe a call: ``None`` is no key, so a repeated charge is caught."""
    report = explore(ChargeWithNoKey, {"order": "A-1", "cents": 500}, mode=mode, **PAYMENT_FAKES)

    assert report.failures, report.summary()
    assert {o.kind for o in report.failures} == {"duplicated effect"}


@pytest.mark.parametrize("mode", MODES)
def test_a_random_answer_recorded_by_an_effect_passes_every_scenario(mode: str) -> None:
    """A run that crashed before recording the effect gets another id: as right as the reference, so it passes."""
    report = explore(OrderIdAsEffect, {"item": "book"}, mode=mode, depth=2)

    assert report.scenarios and report.ok, report.failure_text()


@pytest.mark.parametrize("mode", MODES)
def test_a_random_id_minted_outside_an_effect_is_named_as_what_varies(mode: str) -> None:
    """Two uninterrupted runs already differ: the error shows where, and says to mint it in a ctx.effect."""
    with pytest.raises(AssertionError) as raised:
        explore(OrderIdInTheStep, {"item": "book"}, mode=mode)

    message = str(raised.value)
    assert "two uninterrupted runs of OrderIdInTheStep ended differently" in message
    assert "the answer of a ctx.effect" in message
    assert "result:\n  first run:  " in message and "\n  second run: " in message
    # the crashed runs are still judged against the first run, and the first failure can be replayed
    assert "judged against the first run all the same" in message
    assert "scenarios failed" in message and "--- " in message


@pytest.mark.parametrize("mode", MODES)
def test_a_reference_run_that_fails_is_an_error_not_a_pass(mode: str) -> None:
    """Every scenario would fail just like it and so match it: the exploration refuses to judge by it."""
    with pytest.raises(AssertionError) as raised:
        explore(AlwaysFails, {}, mode=mode, depth=2)

    message = str(raised.value)
    assert "reference run of AlwaysFails ended failed, not completed: builtins.RuntimeError: broken" in message


class Ledger:
    """A fake service that remembers what it was told, as a real one would across a client's crash."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def add(self, entry: str) -> int:
        if entry not in self.entries:  # dedupes, as the service it stands for does
            self.entries.append(entry)
        return len(self.entries)


def get_ledger() -> Ledger:
    raise RuntimeError("the real ledger is not reachable from tests")


class Posting(Event):
    size: int


class PostTwice(Workflow):
    """Posts two entries in two steps; the result is what the ledger answered last, so it depends on its memory."""

    @step
    async def first(self, ev: StartEvent, ledger: Annotated[Ledger, Resource(get_ledger)]) -> Posting:
        return Posting(size=ledger.add("first"))

    @step
    async def second(self, ev: Posting, ledger: Annotated[Ledger, Resource(get_ledger)]) -> StopEvent:
        return StopEvent(result=ledger.add("second"))


@pytest.mark.parametrize("mode", MODES)
def test_a_fake_service_remembers_across_a_killed_life(mode: str) -> None:
    """A fake keeps its state across every crash of a scenario in both modes, as the service it fakes would."""
    report = explore(PostTwice, {}, depth=2, mode=mode, fakes={get_ledger: Ledger})
    report.assert_ok()
    assert report.reference == 2
    assert {outcome.result for outcome in report.scenarios} == {2}


class Totals(Workflow):
    """Ends with a list in its result and its state: the same bytes every exploration of it writes."""

    @step
    async def go(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        await ctx.store.set("seen", [1])
        return StopEvent(result={"items": [1, 2]})


@pytest.mark.parametrize("mode", MODES)
def test_a_report_changed_by_its_test_leaves_the_next_exploration_as_it_was(mode: str) -> None:
    """A report's reference and results are its own: a test that edits them changes no later exploration's
    verdict, though the same workflow explored again ends with the very same records."""
    first = explore(Totals, {}, mode=mode)
    first.assert_ok()
    first.reference["items"].append(99)
    for outcome in first.scenarios:
        outcome.result["items"].append(98)

    again = explore(Totals, {}, mode=mode)
    again.assert_ok()
    assert again.reference == {"items": [1, 2]}
    assert {str(outcome.result) for outcome in again.scenarios} == {"{'items': [1, 2]}"}
