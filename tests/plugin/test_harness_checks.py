"""The harness's own checks (the second-worker probe, the store read-back) never pass a scenario they could
not finish: a check that raises, or a life that dies while it checks, is a failing verdict that says so."""

from __future__ import annotations

import os
from typing import Any

import pytest

from durableflow import MemoryCheckpointer, SQLiteCheckpointer
from durableflow.testing import _lives, explore
from durableflow.testing._lives import SECOND_WORKER

from .flows import ChargeAsEffect
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
    monkeypatch.setattr(_lives, "replay", lambda records, run_id: {"state": None, "effects": {}})
    report = explore(ScratchKey, {}, mode=mode, store=store, seed=SEED)

    read_back = [o for o in report.failures if o.id.startswith("read-back@")]
    assert [o.kind for o in read_back] == ["not judgeable"], report.failure_text()
    assert "AttributeError" in read_back[0].diff
