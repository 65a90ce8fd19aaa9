"""A crash is a real restart: downtime, threads, varying names; every wrong workflow fails in both modes alike."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

import pytest

from durableflow import Context, StartEvent, StopEvent, Workflow, step
from durableflow.testing import explore
from durableflow.testing._zygote import hash_seeds_for

from .flows import FakePayments, get_payments
from .restarts import RIGHT, WRONG

MODES = ["inprocess", "kill"]
SEED = 20260207
FAKES = {"fakes": {get_payments: FakePayments}, "record": frozenset({get_payments})}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_workflow_fails_in_both_modes_with_the_same_verdicts(name: str) -> None:
    """Each scenario gets the same verdict in-process and in kill mode, and the failures have the expected kind."""
    workflow, start, kind = WRONG[name]
    reports = {mode: explore(workflow, start, mode=mode, seed=SEED, **FAKES) for mode in MODES}

    # ids name effects by key, and a random key is another name in each run: compare verdicts in order
    verdicts = {mode: [o.kind for o in report.scenarios] for mode, report in reports.items()}
    assert reports["inprocess"].failures
    assert {o.kind for o in reports["inprocess"].failures} == {kind}
    assert verdicts["inprocess"] == verdicts["kill"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(RIGHT))
def test_a_correct_twin_passes(name: str, mode: str) -> None:
    """The correct twin of each passes every scenario at depth 2 (kill mode: a sample)."""
    workflow, start = RIGHT[name]
    sample = 30 if mode == "kill" else None
    report = explore(workflow, start, depth=2, mode=mode, seed=SEED, max_scenarios=sample, **FAKES)

    report.assert_ok()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["MinuteKeyedBilling", "MinuteKeyedByName"])
def test_the_clock_jumps_by_the_downtime_across_each_crash(name: str, mode: str) -> None:
    """With ``downtime=0`` a minute-keyed charge is resumed within its minute and passes; the default fails it,
    whether the minute is read through ``time.time()`` or a name imported from ``datetime``, which the
    exploration points at the frozen clock and back."""
    from . import restarts

    start = {"order": "A-1", "cents": 500}
    workflow = getattr(restarts, name)
    assert explore(workflow, start, mode=mode, seed=SEED, downtime=0, **FAKES).ok
    assert not explore(workflow, start, mode=mode, seed=SEED, **FAKES).ok
    assert restarts.datetime is datetime.datetime


def test_in_process_a_world_that_cannot_be_copied_is_lived_again_from_the_start() -> None:
    """A fake that deepcopy refuses cannot be captured at a crash point: in-process, every scenario then runs
    the workflow again from its start, says so in a note, and still judges it."""
    from .test_kill_mode import CountThenPost, LockedLedger, get_ledger

    report = explore(CountThenPost, {"count": 1}, fakes={get_ledger: LockedLedger}, seed=SEED)

    assert report.scenarios
    assert any("copies your fakes" in note for note in report.notes)


def test_kill_mode_resumes_under_another_hash_seed_and_a_rerun_iterates_alike() -> None:
    """Sends in set order lose a region when the resumed life iterates the set otherwise; the same hash seed
    gives the same verdicts again, and the sorted twin passes."""
    from .restarts import REGIONS, SetOrderSends, SortedSends

    hash_seed = reordering_hash_seed(REGIONS["regions"])
    first = explore(SetOrderSends, REGIONS, mode="kill", seed=SEED, hash_seed=hash_seed)
    again = explore(SetOrderSends, REGIONS, mode="kill", seed=SEED, hash_seed=hash_seed)

    assert first.failures, first.notes
    assert not first.notes
    assert [(o.id, o.kind) for o in again.scenarios] == [(o.id, o.kind) for o in first.scenarios]
    replayed = explore(SetOrderSends, REGIONS, mode="kill", hash_seed=hash_seed, only=first.failures[0].id)
    assert replayed.failures[0].kind == first.failures[0].kind
    explore(SortedSends, REGIONS, mode="kill", seed=SEED, hash_seed=hash_seed).assert_ok()


def reordering_hash_seed(names: list[str]) -> int:
    """An exploration ``hash_seed`` whose resumed lives iterate ``set(names)`` otherwise than this process.

    The first life is forked from this process, whose hash seed is random; a fixed ``hash_seed`` that
    happened to give the same order would let the set-order workflow pass by chance.
    """
    here = list(set(names))
    for hash_seed in range(7, 100):
        if all(set_order(names, seed) != here for seed in hash_seeds_for(hash_seed)):
            return hash_seed
    raise AssertionError(f"no hash seed iterates {names} otherwise than this process")


def set_order(names: list[str], hash_seed: int) -> list[str]:
    """How a process under ``hash_seed`` iterates ``set(names)``."""
    code = f"import sys; print(*set({names!r}), sep=chr(10))"
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_in_process_mode_cannot_vary_the_hash_seed() -> None:
    """One interpreter has one hash seed: in-process, the set-order workflow passes (the README says so)."""
    from .restarts import REGIONS, SetOrderSends

    assert explore(SetOrderSends, REGIONS, seed=SEED).ok


def test_a_workflow_defined_in_a_test_travels_to_the_zygote_by_value() -> None:
    """A workflow class local to the test cannot be imported by name: it is pickled by value, and its
    resumed lives still run under the other hash seed (no note says otherwise)."""

    class Local(Workflow):
        @step
        async def only(self, ev: StartEvent, ctx: Context) -> StopEvent:
            await ctx.store.set("seen", sorted(set(ev.names)))
            return StopEvent(result=len(ev.names))

    report = explore(Local, {"names": ["a", "b"]}, mode="kill", seed=SEED)

    report.assert_ok()
    assert report.notes == []


def test_a_factory_of_a_workflow_defined_in_a_test_resumes_under_its_qualified_name() -> None:
    """A factory local to the test returns a class local to it: both travel by value, and the resumed lives
    still find the run under the class's qualified name (runs are bound to it)."""

    class Local(Workflow):
        @step
        async def only(self, ev: StartEvent, ctx: Context) -> StopEvent:
            await ctx.store.set("seen", len(ev.names))
            return StopEvent(result=len(ev.names))

    def make() -> Local:
        return Local(timeout=None)

    report = explore(make, {"names": ["a", "b"]}, mode="kill", seed=SEED)

    report.assert_ok()
    assert report.notes == []


def test_each_life_of_a_run_in_kill_mode_has_a_hash_seed_of_its_own() -> None:
    """The life that dies, the life that resumes it and the life that resumes that one run in three
    processes under three hash seeds: none iterates a set of strings as the life before it did."""
    from .restarts import SEEN, HashSeeds, Seeds, get_seeds

    SEEN.clear()
    outcome = explore(
        HashSeeds, {}, mode="kill", fakes={get_seeds: Seeds}, only="step.second.start#1>step.second.start#1"
    ).scenarios[0]

    assert outcome.ok, outcome.diff
    by_process = dict(SEEN)
    assert len(by_process) >= 3
    assert len(set(by_process.values())) == len(by_process)
