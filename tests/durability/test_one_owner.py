"""Promise 7, one owner: a worker that drives a run holds its lease; a second one gets RunLeaseError or waits,
so two workers, in one process or two, never drive one run."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from durableflow import RunLeaseError, StoreUnavailableError, WorkflowCancelledError

from .conftest import Store
from .crashing import ManualClock, settle
from .processes import finish, start_worker, wait_for_any, wait_for_files
from .workflows import Gated, read_journal


async def _driven_at_the_gate(store: Store) -> tuple[Gated, asyncio.Event, object]:
    """Worker A runs Gated and is held inside step second, holding the lease."""
    gate = asyncio.Event()
    first = Gated(gate=gate, checkpointer=store.open())
    handler = first.run(run_id="owned", value=20)
    await settle(lambda: first.at_gate == 1)
    return first, gate, handler


async def test_a_second_worker_gets_run_lease_error_while_the_first_drives(store: Store) -> None:
    """resume() of a run another live worker drives fails with RunLeaseError, and runs none of its steps."""
    _, gate, handler = await _driven_at_the_gate(store)
    second = Gated(checkpointer=store.open())
    with pytest.raises(RunLeaseError) as raised:
        await second.resume("owned")
    assert raised.value.holder == store.open().info("owned").lease_owner
    assert second.at_gate == 0
    gate.set()
    assert await asyncio.wait_for(handler, 5) == 41


async def test_resume_with_wait_takes_over_once_the_lease_ends(store: Store) -> None:
    """resume(run_id, wait=...) waits while the lease is held and drives the run once its holder lets go."""
    first, _, handler = await _driven_at_the_gate(store)
    second = Gated(checkpointer=store.open())
    waiting = second.resume("owned", wait=10)
    await asyncio.sleep(0.3)
    assert not waiting.done() and second.at_gate == 0
    handler.cancel()  # the first worker stops; its lease is released
    with pytest.raises(WorkflowCancelledError):
        await handler
    assert await asyncio.wait_for(waiting, 5) == 41
    assert (first.at_gate, second.at_gate) == (1, 1)


async def test_resume_with_a_short_wait_gives_up_with_run_lease_error(store: Store) -> None:
    """resume(run_id, wait=0.3) of a run that stays leased raises RunLeaseError once the wait is over."""
    _, gate, handler = await _driven_at_the_gate(store)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(RunLeaseError):
        await asyncio.wait_for(Gated(checkpointer=store.open()).resume("owned", wait=0.3), 5)
    assert loop.time() - began >= 0.3
    gate.set()
    assert await asyncio.wait_for(handler, 5) == 41


async def test_a_worker_that_lost_its_lease_writes_nothing_more(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose expired lease was taken over fails with RunLeaseError at its next checkpoint, writing nothing."""
    first, gate, handler = await _driven_at_the_gate(store)

    def unanswered(run_id: str, owner: str) -> bool:
        raise StoreUnavailableError("the first worker is stalled: its renewals get no answer")

    assert first.checkpointer is not None
    monkeypatch.setattr(first.checkpointer, "renew", unanswered)
    checkpointer = store.open()
    clock.advance(checkpointer.lease_ttl + 1)  # the first worker stalls past its lease
    assert await asyncio.wait_for(Gated(checkpointer=store.open()).resume("owned"), 5) == 41
    finished = checkpointer.info("owned")
    gate.set()
    with pytest.raises(RunLeaseError):
        await asyncio.wait_for(handler, 5)
    assert checkpointer.info("owned") == finished
    assert first.at_gate == 1


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_two_processes_resuming_one_run_at_once_one_drives_it(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two processes resume a killed run at the same moment: one finishes it, the other gets RunLeaseError."""
    url = f"sqlite:///{tmp_path / 'runs.db'}" if kind == "sqlite" else request.getfixturevalue("redis_url")
    journal = tmp_path / "journal"
    killed = start_worker("start", store=url, run_id="race", journal=journal, total=4, kill_at=1)
    assert finish(killed) == -signal.SIGKILL
    go, release = tmp_path / "go", tmp_path / "release"
    outs = [tmp_path / f"out-{n}" for n in range(2)]
    resumers = [
        start_worker(
            "resume", store=url, run_id="race", journal=journal, hold_until=release,
            ready=tmp_path / f"ready-{n}", go=go, out=outs[n],
        )
        for n in range(2)
    ]  # fmt: skip
    wait_for_files(tmp_path / "ready-0", tmp_path / "ready-1")
    go.touch()
    wait_for_any(*outs, timeout=15)  # the process refused the lease answers while the other holds it at count 1
    release.touch()
    for process in resumers:
        assert finish(process) == 0
    outcomes = {process.pid: json.loads((tmp_path / f"out-{n}").read_text()) for n, process in enumerate(resumers)}
    assert sorted(outcome["outcome"] for outcome in outcomes.values()) == ["RunLeaseError", "completed"]
    winner = next(pid for pid, outcome in outcomes.items() if outcome["outcome"] == "completed")
    loser = next(pid for pid in outcomes if pid != winner)
    assert outcomes[winner]["result"] == [0, 1, 2, 3]
    lines = read_journal(journal)
    assert all(pid != loser for _, _, pid in lines), "the process that got RunLeaseError ran a step"
    assert sorted(n for what, n, pid in lines if what == "start" and pid == winner) == [1, 2, 3]
    assert sorted(n for what, n, _ in lines if what == "return") == [0, 1, 2, 3]
