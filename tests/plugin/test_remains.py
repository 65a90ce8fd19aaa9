"""Scenarios whose crashes left the same remains share one resume, and are still judged one by one."""

from __future__ import annotations

from typing import Any

import pytest

from durableflow import Context, MemoryCheckpointer, StartEvent, StopEvent, Workflow, step
from durableflow.testing import explore

from .flows import RIGHT, WRONG

SEED = 20260412


class Unshared(MemoryCheckpointer):
    """A memory store of the user's own class: its remains are never compared, so every scenario resumes apart."""


def verdicts(report: Any) -> dict[str, str | None]:
    return {outcome.id: outcome.kind for outcome in report.scenarios}


@pytest.mark.parametrize("store", ["sqlite", "memory"])
@pytest.mark.parametrize("name", sorted(WRONG))
def test_sharing_resumes_changes_no_verdict_of_a_wrong_workflow(name: str, store: str) -> None:
    """On SQLite (whose remains compare byte for byte) and in memory (its runs and records compared) every
    scenario gets the verdict it gets when each scenario resumes apart."""
    entry: Any = WRONG[name]
    workflow, start, kind = entry
    options: dict[str, Any] = {}
    if name == "charge outside ctx.effect":
        from .flows import PAYMENT_FAKES

        options = PAYMENT_FAKES
    shared = explore(workflow, start, depth=2, store=store, seed=SEED, **options)
    each = explore(workflow, start, depth=2, store=Unshared, seed=SEED, **options)

    assert verdicts(shared) == verdicts(each)
    assert kind in {outcome.kind for outcome in shared.failures}


@pytest.mark.parametrize("store", ["sqlite", "memory"])
@pytest.mark.parametrize("name", sorted(RIGHT))
def test_sharing_resumes_passes_every_scenario_of_a_correct_workflow(name: str, store: str) -> None:
    """The correct twins pass with shared resumes too, scenario by scenario."""
    entry: Any = RIGHT[name]
    workflow, start = entry
    options: dict[str, Any] = {}
    if name in ("charge as effect", "concurrent effects"):
        from .flows import PAYMENT_FAKES

        options = PAYMENT_FAKES
    report = explore(workflow, start, depth=2, store=store, seed=SEED, **options)

    report.assert_ok()
    assert verdicts(report) == verdicts(explore(workflow, start, depth=2, store=Unshared, seed=SEED, **options))


RESUMES: list[str] = []


class CountsResumes(Workflow):
    """Two steps with a checkpoint between: several crash points leave the same stored run."""

    @step
    async def first(self, ev: StartEvent, ctx: Context) -> StopEvent:
        RESUMES.append("first")
        await ctx.store.set("half", True)
        await ctx.checkpoint()
        await ctx.store.set("done", True)
        return StopEvent(result="done")


def test_crash_points_that_leave_the_same_remains_share_one_resume() -> None:
    """In-process, where the step's runs can be counted: fewer on SQLite and on the memory store than on a
    store of the user's class (nothing to compare, every scenario resumed apart), for the same scenarios,
    every one of them judged."""
    runs = {}
    for store in ("sqlite", "memory", Unshared):
        RESUMES.clear()
        report = explore(CountsResumes, {}, store=store, seed=SEED, zombies=False)
        report.assert_ok()
        runs[store] = (len(RESUMES), verdicts(report))

    assert runs["sqlite"][1] == runs["memory"][1] == runs[Unshared][1]
    assert len(runs["sqlite"][1]) >= 6
    assert 1 < runs["sqlite"][0] < runs[Unshared][0]
    assert 1 < runs["memory"][0] < runs[Unshared][0]


def test_kill_mode_shares_resumes_and_judges_every_scenario() -> None:
    """Kill mode's SQLite files compare byte for byte too: the same verdicts as in-process, scenario by scenario."""
    killed = explore(CountsResumes, {}, mode="kill", seed=SEED, zombies=False)

    killed.assert_ok()
    assert verdicts(killed) == verdicts(explore(CountsResumes, {}, store=Unshared, seed=SEED, zombies=False))


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_at_depth_two_first_crashes_that_leave_the_same_remains_share_one_resume_and_its_crash_points(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At depth 2 a first crash's resume also captures its own crash points; scenarios whose first crashes
    left the same remains share it, and its captures, as at depth 1: one such resume per distinct remains (a
    store of the user's class resumes every first crash apart), every scenario judged as when none is shared."""
    from durableflow.testing import _exploration

    resumes: list[str] = []
    live = _exploration.Exploration.live

    def counted(self: Any, store: Any, first: bool, capture: Any, nth: int = 0, errands: Any = None) -> Any:
        if not first and (capture is None or self.settings.depth == 1):  # a first crash's resume
            resumes.append("resume")
        return live(self, store, first, capture, nth, errands)

    monkeypatch.setattr(_exploration.Exploration, "live", counted)
    explore(CountsResumes, {}, store=store, seed=SEED, zombies=False).assert_ok()
    at_depth_one, resumes[:] = len(resumes), []
    shared = explore(CountsResumes, {}, depth=2, store=store, seed=SEED, zombies=False)
    at_depth_two, resumes[:] = len(resumes), []
    each = explore(CountsResumes, {}, depth=2, store=Unshared, seed=SEED, zombies=False)

    shared.assert_ok()
    assert verdicts(shared) == verdicts(each)
    first_crashes = {outcome.id.partition(">")[0] for outcome in each.scenarios}
    assert at_depth_two == at_depth_one < len(resumes) == len(first_crashes)
