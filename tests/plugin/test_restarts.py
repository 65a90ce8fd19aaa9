"""A crash is a real restart: downtime, threads, varying names; every wrong workflow fails in both modes alike."""

from __future__ import annotations

import pytest

from durableflow.testing import explore

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
def test_the_clock_jumps_by_the_downtime_across_each_crash(mode: str) -> None:
    """With ``downtime=0`` a minute-keyed charge is resumed within its minute and passes; the default fails it."""
    from .restarts import MinuteKeyedBilling

    start = {"order": "A-1", "cents": 500}
    assert explore(MinuteKeyedBilling, start, mode=mode, seed=SEED, downtime=0, **FAKES).ok
    assert not explore(MinuteKeyedBilling, start, mode=mode, seed=SEED, **FAKES).ok


def test_in_process_a_world_that_cannot_be_copied_is_lived_again_from_the_start() -> None:
    """A fake that deepcopy refuses cannot be captured at a crash point: in-process, every scenario then runs
    the workflow again from its start, says so in a note, and still judges it."""
    from .test_kill_mode import CountThenPost, LockedLedger, get_ledger

    report = explore(CountThenPost, {"count": 1}, fakes={get_ledger: LockedLedger}, seed=SEED)

    assert report.scenarios
    assert any("copies your fakes" in note for note in report.notes)
