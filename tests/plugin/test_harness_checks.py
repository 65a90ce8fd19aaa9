"""The harness's own checks (the second-worker probe, the store read-back) never pass a scenario they could
not finish: a check that raises, or a life that dies while it checks, is a failing verdict that says so."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    MemoryCheckpointer,
    RunLeaseError,
    RunNotFoundError,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    step,
    use_clock,
)
from durableflow._checkpointer import owner_is_dead
from durableflow.testing import _lives, explore
from durableflow.testing._clock import ManualClock
from durableflow.testing._lives import SECOND_WORKER

from .flows import ChargeAsEffect
from .restarts import AskDurably
from .test_planted_bugs import MODES, PAYMENTS, SEED, ScratchKey

START = {"order": "A-1", "cents": 500}


def second_worker_acquire(monkeypatch: pytest.MonkeyPatch, act: Any) -> None:
    """Plant ``act`` where a second worker asks a store for the run's lease: a checkpointer whose lease
    check breaks (a user's subclass, a corrupt lease table) only when another worker asks."""
    for cls in (MemoryCheckpointer, SQLiteCheckpointer):
        acquire = cls.acquire

        def planted(self: Any, run_id: str, owner: str, *args: Any, _acquire: Any = acquire, **kwargs: Any) -> Any:
            if owner == SECOND_WORKER:
                act()
            return _acquire(self, run_id, owner, *args, **kwargs)

        monkeypatch.setattr(cls, "acquire", planted)


def lease_table_broken() -> None:
    raise KeyError("lease table")


@pytest.mark.parametrize(("mode", "store"), MODES)
def test_a_second_worker_probe_that_raises_is_not_judgeable_not_passed(
    mode: str, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    second_worker_acquire(monkeypatch, lease_table_broken)
    options = {"mode": mode, "store": store, "seed": SEED, **PAYMENTS}
    report = explore(ChargeAsEffect, START, rerun="only={id}", **options)

    probes = [o for o in report.failures if o.id.startswith("second-worker@")]
    assert [o.kind for o in probes] == ["not judgeable"], report.failure_text()
    assert "KeyError: 'lease table'" in probes[0].diff
    again = explore(ChargeAsEffect, START, only=probes[0].rerun.removeprefix("only="), **options)
    assert [(o.id, o.kind) for o in again.scenarios] == [(probes[0].id, "not judgeable")]


@pytest.mark.parametrize("twinned", [True, False], ids=["twin", "own-life"])
def test_a_life_that_dies_in_the_second_worker_probe_is_not_judgeable_not_passed(
    twinned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill mode: the probe's process exits inside the check (a twin of the reference life, or a life of
    its own when scenarios are sampled); nothing came back, so nothing was checked."""
    second_worker_acquire(monkeypatch, lambda: os._exit(3))
    sampled = {} if twinned else {"max_scenarios": 100}
    report = explore(ChargeAsEffect, START, mode="kill", seed=SEED, **sampled, **PAYMENTS)

    probes = [o for o in report.failures if o.id.startswith("second-worker@")]
    assert [o.kind for o in probes] == ["not judgeable"], report.failure_text()
    assert "did not come back" in probes[0].diff


@pytest.mark.parametrize(("mode", "store"), MODES)
def test_a_read_back_that_cannot_compare_is_not_judgeable_not_passed(
    mode: str, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored run decodes to something the comparison cannot read (a decoder bug): said, not passed."""
    monkeypatch.setattr(_lives, "replay", lambda records, run_id, key: {"state": None, "effects": {}})
    report = explore(ScratchKey, {}, mode=mode, store=store, seed=SEED)

    read_back = [o for o in report.failures if o.id.startswith("read-back@")]
    assert [o.kind for o in read_back] == ["not judgeable"], report.failure_text()
    assert "AttributeError" in read_back[0].diff


class LeaseKeptByTheLiving(SQLiteCheckpointer):
    """Bug: a lapsed lease is let go only when its holder's process is gone, so a worker paused past its
    lease (a long GC pause, a stopped VM) keeps every other worker out of its run until it wakes."""

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        try:
            holder = self.info(run_id).lease_owner
        except RunNotFoundError:
            holder = None
        if holder not in (None, owner, steal_from) and not owner_is_dead(holder):
            raise RunLeaseError(run_id, holder, None)
        super().acquire(run_id, owner, steal_from)


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_zombie_scenario_whose_second_worker_cannot_take_over_fails_and_says_so(mode: str, tmp_path: Path) -> None:
    """The zombie's first worker pauses past its lease; the second worker is refused the run. Before, the
    first worker woke, finished the run alone, and the scenario passed with nothing fenced or tested. The
    checkpointer, a subclass from a factory, is also the one every resumed life runs on, not a plain copy."""
    paths = (tmp_path / f"run-{n}.db" for n in itertools.count())
    store = lambda: LeaseKeptByTheLiving(next(paths))  # noqa: E731
    report = explore(ChargeAsEffect, START, mode=mode, store=store, seed=SEED, **PAYMENTS)

    zombies = [o for o in report.scenarios if o.id.startswith("zombie@")]
    assert zombies and all(o.kind == "error during resume" for o in zombies), report.failure_text()
    assert "the second worker, taking the run over from a worker paused past its lease" in zombies[0].diff
    assert "RunLeaseError" in zombies[0].diff
    assert not [o for o in report.failures if not o.id.startswith("zombie@")]


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_on_a_clock_of_the_tests_own_no_worker_is_paused_past_its_lease(mode: str) -> None:
    """Under a ManualClock nothing moves time for a paused worker: a second worker was refused the run (or, in
    a fresh interpreter's clock, let in while the woken worker, its lease not in doubt, charged again). The
    correct workflow then failed; those scenarios are now left out, and the report says why."""
    with use_clock(ManualClock()):
        report = explore(ChargeAsEffect, START, mode=mode, seed=SEED, **PAYMENTS)

    assert report.ok, report.failure_text()
    assert report.scenarios and not [o for o in report.scenarios if "@" in o.id]
    assert any("no zombie@ or second-worker scenarios ran" in note for note in report.notes)


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
@pytest.mark.parametrize("scenario_id", ["zombie@step.pay.start#1", "second-worker@step.pay.start#1"])
def test_on_a_clock_of_the_tests_own_a_zombie_or_second_worker_id_is_refused_as_unknown(
    mode: str, scenario_id: str
) -> None:
    """Such an exploration makes no zombie@ or second-worker@ scenarios, yet replaying one by its id lived it:
    the zombie failed the correct workflow, and the second worker, never checked, passed. Now the id is refused,
    as an id the run never reaches is, and the error says why it does not exist there."""
    options = {"mode": mode, "seed": SEED, "only": scenario_id, **PAYMENTS}
    assert [(o.id, o.ok) for o in explore(ChargeAsEffect, START, **options).scenarios] == [(scenario_id, True)]

    with use_clock(ManualClock()), pytest.raises(ValueError, match=f"^unknown scenario '{scenario_id}': ") as raised:
        explore(ChargeAsEffect, START, **options)
    assert "ManualClock" in str(raised.value)


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_respond_that_raises_is_named_not_blamed_on_the_start_input(mode: str) -> None:
    """The test's ``respond`` raising left the run waiting, and the error said to check the start input."""

    def respond(event: InputRequiredEvent) -> HumanResponseEvent:
        return HumanResponseEvent(response={"yes": "go"}[event.prefix])

    with pytest.raises(AssertionError, match=r"did not finish \(error\): respond raised KeyError: 'ship it\?'"):
        explore(AskDurably, {}, mode=mode, seed=SEED, respond=respond)


STARTS = [0]


class Next(Event):
    pass


class HangsOnceStartedBefore(Workflow):
    """WRONG: counts its starts in a module global and waits forever from the second on (in one interpreter)."""

    @step
    async def begin(self, ev: StartEvent, ctx: Context) -> Next:
        STARTS[0] += 1
        if STARTS[0] > 1:
            await asyncio.Event().wait()
        return Next()

    @step
    async def end(self, ev: Next, ctx: Context) -> StopEvent:
        return StopEvent(result="done")


def test_a_second_uninterrupted_run_that_hangs_says_so() -> None:
    """After failures the run is lived once more, uninterrupted; when that life hung, the error says so, not
    only that its status (running) differs from the first run's."""
    STARTS[0] = 0
    with pytest.raises(AssertionError, match="two uninterrupted runs") as raised:
        explore(HangsOnceStartedBefore, {}, seed=SEED, hang_after=0.2)

    assert 'second run: "hang: did not finish within 0.2 s' in str(raised.value)


def test_in_process_the_second_worker_probes_life_stops_where_it_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its verdict is all that life is for: it dies at the probed point, as kill mode's probe does, instead of
    living the rest of the run for nothing (most of a life an exploration)."""
    lived: list[tuple[str | None, Any]] = []
    live_here = _lives.Lives.live_here

    def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
        life = live_here(self, *args, **kwargs)
        errands = kwargs.get("errands")
        lived.append((None if errands is None else errands.probe_at, life))
        return life

    monkeypatch.setattr(_lives.Lives, "live_here", watched)
    explore(ChargeAsEffect, START, seed=SEED, **PAYMENTS).assert_ok()

    probes = [(point, life) for point, life in lived if point is not None]
    assert len(probes) == 1
    point, life = probes[0]
    assert life.probe == "" and life.ending == "crashed" and life.hits[-1] == point
