"""On a store the engine writes to from a thread, a step's completion and a run's end are reported only once
their records are committed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import fakeredis

from durableflow import Append, MemoryCheckpointer, Record, RedisCheckpointer, StoreUnavailableError

from .crashing import settle
from .workflows import Gated


class HeldAppends(RedisCheckpointer):
    """A Redis store (the engine writes to it from a thread) whose appends wait, once ``held``, until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = False
        self.entered, self.released = threading.Event(), threading.Event()

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        if self.held:
            self.entered.set()
            self.released.wait(5)
        super().append(run_id, record, owner, *args, **kwargs)


async def test_a_run_is_reported_completed_only_once_its_last_record_is_committed() -> None:
    """On a store written from a thread, the run's result is not given (and the stream not ended) while the record
    that completes it is still being written: a process that died then must not have told anyone it completed."""
    store = HeldAppends(fakeredis.FakeRedis())
    gate = asyncio.Event()
    wf = Gated(gate=gate, checkpointer=store)
    handler = wf.run(run_id="held", value=1)
    await settle(lambda: wf.at_gate == 1)
    store.held = True
    gate.set()
    assert await asyncio.to_thread(store.entered.wait, 5)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not handler.done() and store.info("held").status == "running"
    store.released.set()
    assert await asyncio.wait_for(handler, 5) == 3
    assert store.info("held").status == "completed"


class SharedCommitFails(MemoryCheckpointer):
    """Once ``fail`` is set, the next shared commit (the appends of several runs in one transaction) fails as a
    whole, as a store that went away mid-commit does."""

    fail = False

    def append_many(self, appends: Sequence[Append]) -> list[BaseException | None]:
        if self.fail and len(appends) > 1:
            self.fail = False
            raise StoreUnavailableError("the store went away during the shared commit")
        return super().append_many(appends)


async def test_runs_whose_shared_commit_failed_are_not_reported_completed() -> None:
    """Two runs end together, their last records in one commit, and that commit fails: neither run is reported
    completed, and neither is stored as completed (a worker or a resume continues each)."""
    store = SharedCommitFails()
    gates = [asyncio.Event(), asyncio.Event()]
    workflows = [Gated(gate=gate, checkpointer=store) for gate in gates]
    handlers = [wf.run(run_id=f"run-{i}", value=1) for i, wf in enumerate(workflows)]
    await settle(lambda: all(wf.at_gate == 1 for wf in workflows))
    store.fail = True
    for gate in gates:
        gate.set()  # both steps end in one turn of the loop: their records share a commit
    outcomes = await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 5)
    assert not store.fail, "the two records were not committed together"
    assert [type(outcome) for outcome in outcomes] == [StoreUnavailableError, StoreUnavailableError]
    assert "completed" not in [store.info(f"run-{i}").status for i in range(2)]
