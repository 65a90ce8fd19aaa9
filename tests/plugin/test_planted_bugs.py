"""Engine bugs planted on purpose (monkeypatched), each caught by an exploration a user could write.

Each bug makes every run lose the same thing, so comparing crashed runs with
an uninterrupted one sees nothing: the harness's second worker, read-back and
compaction checks are what catch them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from durableflow import Context, StartEvent, StopEvent, Workflow, _checkpointing, step
from durableflow._checkpointing import RunCheckpoints
from durableflow.testing import explore

from .flows import ChargeAsEffect, FakePayments, get_payments

MODES = [("inprocess", "memory"), ("inprocess", "sqlite"), ("kill", "sqlite")]
"""Each mode on its default store, and in-process on SQLite too (held in memory there: the same statements)."""
SEED = 20260301
PAYMENTS = {"fakes": {get_payments: FakePayments}, "record": frozenset({get_payments})}


class ScratchKey(Workflow):
    """Keeps a scratch key while it works, then deletes it: the deletion must reach the store."""

    @step
    async def work(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.store.set("scratch", "half done")
        await ctx.checkpoint()
        await ctx.store.delete("scratch")
        await ctx.store.set("done", True)
        await ctx.checkpoint()
        return StopEvent(result="done")


def renew_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: the engine renews a run's lease once, and never again."""
    keep_lease = RunCheckpoints.keep_lease

    def planted(
        self: RunCheckpoints, guarded: Callable[..., Any], *callbacks: Callable[[], None]
    ) -> Callable[[], None]:
        fired: list[int] = []

        def once(callback: Callable[[], None]) -> Callable[[], None]:
            wrapped = guarded(callback)

            def run() -> None:
                if not fired:
                    fired.append(1)
                    wrapped()

            return run

        return keep_lease(self, once, *callbacks)

    monkeypatch.setattr(RunCheckpoints, "keep_lease", planted)


def drop_deletions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: a delta leaves out the keys deleted since the last checkpoint."""
    encode_delta = _checkpointing.encode_delta

    def planted(run: Any, store: Any, *args: Any) -> str:
        dirty = store.dirty
        store.dirty = {key for key in dirty if key in store.values}
        try:
            return encode_delta(run, store, *args)
        finally:
            store.dirty = dirty

    monkeypatch.setattr(_checkpointing, "encode_delta", planted)


def compaction_drops_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: a full snapshot (compaction) leaves out the effect records."""
    encode_full = _checkpointing.encode_full

    def planted(run: Any, *args: Any) -> str:
        effects, run.effects = run.effects, {}
        try:
            return encode_full(run, *args)
        finally:
            run.effects = effects

    monkeypatch.setattr(_checkpointing, "encode_full", planted)


@pytest.mark.parametrize(("mode", "store"), MODES)
def test_a_lease_that_is_never_renewed_lets_a_second_worker_in(
    mode: str, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live run past its lease's time: the second worker is refused, unless the lease was not renewed."""
    start = {"order": "A-1", "cents": 500}
    explore(ChargeAsEffect, start, mode=mode, store=store, seed=SEED, **PAYMENTS).assert_ok()

    renew_once(monkeypatch)
    report = explore(ChargeAsEffect, start, mode=mode, store=store, seed=SEED, **PAYMENTS)

    assert [o.kind for o in report.failures] == ["stolen lease"]
    assert "lease was not renewed" in report.failures[0].diff


@pytest.mark.parametrize(("mode", "store"), MODES)
def test_the_second_worker_check_stops_short_of_the_runs_own_timeout(
    mode: str, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose timeout ends it before its lease would lapse cannot have two workers: not a stolen lease.
    One whose timeout falls between one and two leases' time still shows a lease that is never renewed."""
    start = {"order": "A-1", "cents": 500}
    options = {"mode": mode, "store": store, "seed": SEED, "downtime": 0, **PAYMENTS}
    short = explore(lambda: ChargeAsEffect(timeout=10), start, **options)
    # a zombie's pause past its lease outlasts the timeout, as it would for real; nothing else fails
    assert short.scenarios and all(o.id.startswith("zombie@") for o in short.failures), short.failure_text()

    renew_once(monkeypatch)
    timed = explore(lambda: ChargeAsEffect(timeout=45), start, **options)

    assert [o.kind for o in timed.failures] == ["stolen lease"]
    assert "took the run over 41.25 s into a live run whose lease lasts 30 s" in timed.failures[0].diff


@pytest.mark.parametrize(("mode", "store"), MODES)
def test_a_delta_that_drops_deleted_keys_is_caught_by_reading_the_store_back(
    mode: str, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run keeps the deleted key alike, so only reading the stored run back after a checkpoint sees it."""
    explore(ScratchKey, {}, mode=mode, store=store, seed=SEED).assert_ok()

    drop_deletions(monkeypatch)
    report = explore(ScratchKey, {}, mode=mode, store=store, seed=SEED)

    read_back = [o for o in report.failures if o.id.startswith("read-back@checkpoint.write.after#")]
    assert [o.kind for o in read_back] == ["divergent state"]
    assert "scratch" in read_back[0].diff


@pytest.mark.parametrize(("mode", "store"), MODES)
def test_compaction_that_drops_effect_records_is_caught_when_every_checkpoint_compacts(
    mode: str, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few runs write enough to compact; ``compact=True`` compacts at every checkpoint, and the lost record shows."""
    start = {"order": "A-1", "cents": 500}
    compaction_drops_effects(monkeypatch)
    assert explore(ChargeAsEffect, start, mode=mode, store=store, seed=SEED, **PAYMENTS).ok  # no compaction: not seen

    report = explore(ChargeAsEffect, start, mode=mode, store=store, seed=SEED, compact=True, **PAYMENTS)

    assert "divergent state" in {o.kind for o in report.failures}
    assert any("effects" in o.diff for o in report.failures)
