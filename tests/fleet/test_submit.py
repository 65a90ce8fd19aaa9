"""wf.submit(): a run stored for a worker to drive, not driven by the process that submitted it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from durableflow import (
    Checkpointer,
    MemoryCheckpointer,
    RedisCheckpointer,
    RunExistsError,
    SQLiteCheckpointer,
    Worker,
    WorkflowRuntimeError,
)

from .test_frozen_store import Ticker


@pytest.fixture(params=["memory", "sqlite", "fakeredis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Checkpointer]:
    checkpointer: Checkpointer
    if request.param == "memory":
        checkpointer = MemoryCheckpointer()
    elif request.param == "sqlite":
        checkpointer = SQLiteCheckpointer(tmp_path / "runs.db")
    else:
        checkpointer = RedisCheckpointer(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    yield checkpointer
    checkpointer.close()


async def _served(worker: Worker, done: object, timeout: float = 10.0) -> None:
    serving = asyncio.ensure_future(worker.run(handle_signals=False))
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    try:
        while not done():  # type: ignore[operator]
            assert loop.time() < give_up, f"the worker did not get there in time: {worker.stats}"
            assert not serving.done(), serving.exception()
            await asyncio.sleep(0.005)
    finally:
        worker.stop()
        await asyncio.wait_for(serving, timeout)


async def test_a_submitted_run_is_stored_untouched_for_a_worker_which_drives_it(store: Checkpointer) -> None:
    """submit() returns once the run is stored, unleased, with its start event and no step run; a worker
    with max_recoveries=0 drives it to its result: its first start is not counted as a recovery."""
    run_id = await Ticker(checkpointer=store).submit(run_id="queued")
    assert run_id == "queued"
    info = store.info(run_id)
    assert (info.status, info.last_seq, info.lease_owner) == ("interrupted", 1, None)
    assert [info.run_id for info in store.runs("interrupted")] == ["queued"]
    worker = Worker([Ticker], store, poll_interval=0.01, max_recoveries=0)
    await _served(worker, lambda: worker.stats.completed + worker.stats.failed == 1)
    info = store.info(run_id)
    assert (info.status, info.result, worker.stats.failed) == ("completed", "9", 0)


async def test_a_submitted_runs_timeout_starts_when_a_worker_starts_it(store: Checkpointer) -> None:
    """A run of a workflow with a 0.3 s timeout, left 0.5 s in the store before a worker takes it, completes."""
    run_id = await Ticker(checkpointer=store, timeout=0.3).submit()
    await asyncio.sleep(0.5)
    worker = Worker([lambda: Ticker(timeout=5)], store, poll_interval=0.01)
    await _served(worker, lambda: worker.stats.completed + worker.stats.failed == 1)
    assert store.info(run_id).status == "completed"


async def test_submitting_under_a_taken_run_id_raises_run_exists_error(store: Checkpointer) -> None:
    await Ticker(checkpointer=store).submit(run_id="taken")
    before = store.info("taken")
    with pytest.raises(RunExistsError, match="'taken'"):
        await Ticker(checkpointer=store).submit(run_id="taken")
    assert store.info("taken") == before


async def test_submit_needs_a_checkpointer() -> None:
    with pytest.raises(WorkflowRuntimeError, match="give the workflow a checkpointer"):
        await Ticker().submit()
