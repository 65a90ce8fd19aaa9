"""Threads: a thread of a life that has ended never reaches the fake world, in either mode."""

from __future__ import annotations

import pytest

from durableflow.testing import _world, explore

from . import threads
from .flows import FakePayments, get_payments

MODES = ["inprocess", "kill"]
SEED = 20260301
PAYMENTS = {"fakes": {get_payments: FakePayments}, "record": frozenset({get_payments})}


@pytest.mark.parametrize("mode", MODES)
def test_plain_def_steps_with_three_workers_pass_every_scenario(mode: str) -> None:
    """Three workers in threads write Redis idempotently: every scenario passes at depth 2 (kill mode: a sample)."""
    sample = 40 if mode == "kill" else None
    report = explore(threads.PlainDefWorkers, {"chunks": 3}, depth=2, mode=mode, seed=SEED, max_scenarios=sample)

    report.assert_ok()
    assert len(report.scenarios) > 10


@pytest.mark.parametrize("mode", MODES)
def test_effects_run_in_threads_by_two_workers_pass_every_scenario(mode: str) -> None:
    """``ctx.effect`` around a charge made in ``asyncio.to_thread``, two workers at once: all pass, both modes."""
    report = explore(threads.ToThreadEffects, {}, mode=mode, seed=SEED, **PAYMENTS)

    report.assert_ok()


def test_a_thread_left_running_after_its_life_is_refused_the_world() -> None:
    """In-process, a thread its life never joined reaches for Redis after the life ended: it gets
    ``WorldClosed``, nothing is written, and every scenario is judged as usual."""
    threads.REFUSED.clear()
    threads.RELEASE.clear()
    try:
        report = explore(threads.LeavesAThread, {}, seed=SEED)
    finally:
        threads.RELEASE.set()
    _wait_for(lambda: len(threads.REFUSED) >= len(report.scenarios))

    report.assert_ok()
    assert set(threads.REFUSED) == {"WorldClosed"}


def test_the_modes_agree_on_a_workflow_that_leaves_a_thread_behind() -> None:
    """Kill mode's thread dies with its process, in-process mode's is refused when it wakes: the same verdicts
    (in-process on SQLite too, where scenarios that left the same remains share a resume)."""
    threads.REFUSED.clear()
    threads.RELEASE.clear()
    try:
        reports = [explore(threads.LeavesAThread, {}, mode=mode, seed=SEED) for mode in MODES]
        reports.append(explore(threads.LeavesAThread, {}, store="sqlite", seed=SEED))
    finally:
        threads.RELEASE.set()

    verdicts = [[(o.id, o.kind) for o in report.scenarios] for report in reports]
    assert verdicts[0] == verdicts[1] == verdicts[2]
    assert reports[0].ok


def test_a_thread_still_inside_the_world_when_its_life_ends_makes_scenarios_not_judgeable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread inside a slow fake call when its life ends cannot be stopped: the scenarios it may have
    touched are reported as not judgeable, never as an internal error or a made-up verdict."""
    monkeypatch.setattr(_world, "GRACE", 0.02)
    ledger = {"fakes": {threads.get_ledger: threads.SlowLedger}, "record": frozenset({threads.get_ledger})}

    report = explore(threads.InsideWhenItEnds, {"seconds": 0.3}, seed=SEED, zombies=False, **ledger)

    kinds = {o.kind for o in report.scenarios}
    assert "not judgeable" in kinds
    assert kinds <= {None, "not judgeable"}
    assert "asyncio.to_thread" in report.failure_text()


def _wait_for(condition: object, seconds: float = 5.0) -> None:
    import time

    give_up = time.monotonic() + seconds
    while not condition() and time.monotonic() < give_up:  # type: ignore[operator]
        time.sleep(0.01)
