"""Store I/O: a frozen store delays only the runs that wait on it; runs sharing a store share its commits."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import sys
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pytest_redis import factories

from durableflow import (
    Append,
    Context,
    Event,
    MemoryCheckpointer,
    Record,
    RedisCheckpointer,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    _storeio,
    step,
)
from durableflow._checkpointing import RESUME_FOLD
from durableflow._storeio import store_io

from .crashing import Crash, crash_at, settle
from .test_late_writes import GatedMiddle

redis_frozen_proc = factories.redis_proc(executable=shutil.which("redis-server") or "/usr/bin/redis-server")
"""A redis-server of its own, for the test that freezes it with SIGSTOP."""


class Watched(RedisCheckpointer):
    """Counts the appends that reached the client, and the lease renewals."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.appends_begun = 0

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        self.appends_begun += 1
        super().append(run_id, record, owner, *args, **kwargs)


async def test_a_frozen_redis_delays_only_its_own_runs(redis_frozen_proc: Any, tmp_path: Path) -> None:
    """redis-server is stopped with SIGSTOP while a run's checkpoint waits on it: a run on SQLite goes on to
    its end meanwhile, and another SQLite run's lease keeps being renewed. Once Redis thaws, its run finishes."""
    server = redis_frozen_proc
    frozen = Watched(f"redis://{server.host}:{server.port}/0", prefix=f"frozen-{uuid.uuid4().hex[:8]}")
    gate = asyncio.Event()
    on_redis = GatedMiddle(gate=gate, checkpointer=frozen)
    waiting = on_redis.run(value=5)
    await settle(lambda: on_redis.ran == ["double", "add"])

    local = SQLiteCheckpointer(tmp_path / "runs.db", lease_ttl=0.3)  # renewed every 0.1 s
    held_gate = asyncio.Event()
    held = GatedMiddle(gate=held_gate, checkpointer=local)
    holding = held.run(value=1)
    await settle(lambda: held.ran == ["double", "add"])
    renewed_until = local.info(holding.run_id).lease_expires_at
    assert renewed_until is not None

    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        begun = frozen.appends_begun
        gate.set()
        await settle(lambda: frozen.appends_begun > begun)  # add's completion is inside a write to frozen Redis
        on_sqlite = GatedMiddle(checkpointer=local)
        assert await asyncio.wait_for(on_sqlite.run(value=2), 10) == 25
        await settle(lambda: (local.info(holding.run_id).lease_expires_at or 0) > renewed_until, timeout=10)
        assert not waiting.done()  # still waiting for Redis, and nothing else waited with it
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert await asyncio.wait_for(waiting, 10) == 121
    held_gate.set()
    assert await asyncio.wait_for(holding, 10) == 9


class Counting(MemoryCheckpointer):
    """Counts the calls that write: each one is a transaction on a real store."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []  # appends per call
        self.grouped = False

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        if not self.grouped:
            self.writes.append(1)
        super().append(run_id, record, owner, *args, **kwargs)

    def append_many(self, appends: Sequence[Append]) -> list[BaseException | None]:
        self.writes.append(len(appends))
        self.grouped = True
        try:
            return super().append_many(appends)
        finally:
            self.grouped = False


async def test_concurrent_runs_on_one_store_share_their_commits() -> None:
    """Fifty runs started together write their step completions in shared append_many calls, and every run
    finishes with its own result: each step waited for its own checkpoint."""
    store = Counting()
    workflow = GatedMiddle(checkpointer=store)
    results = await asyncio.wait_for(asyncio.gather(*(workflow.run(value=n) for n in range(50))), 10)
    assert results == [(2 * n + 1) ** 2 for n in range(50)]
    assert sum(store.writes) == 50 * 3  # the start is a create; two completions and the end are appends
    assert max(store.writes) >= 25  # at least half the runs' completions went in one call
    assert len(store.writes) < 50


async def test_a_crash_as_a_shared_commit_lands_kills_only_the_run_it_hit(tmp_path: Path) -> None:
    """Twenty runs share their commits; the process "dies" as the 30th record lands, inside a shared commit: that
    run is abandoned where it stands (its step never learns it finished), every other run finishes, and the crashed
    run resumes from what is durable to the same result."""
    store = SQLiteCheckpointer(tmp_path / "runs.db")
    workflow = GatedMiddle(checkpointer=store)
    with crash_at("checkpoint.write.after#30") as reached:
        handlers = [workflow.run(value=n) for n in range(20)]
        outcomes = await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 10)
    assert "checkpoint.write.after#30" in reached
    crashed = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, Crash)]
    assert len(crashed) == 1
    assert [o for n, o in enumerate(outcomes) if n not in crashed] == [
        (2 * n + 1) ** 2 for n in range(20) if n != crashed[0]
    ]
    (n,) = crashed
    assert await asyncio.wait_for(GatedMiddle(checkpointer=store).resume(handlers[n].run_id), 5) == (2 * n + 1) ** 2


async def test_runs_in_flight_keep_few_objects_for_the_garbage_collector(tmp_path: Path) -> None:
    """A burst of concurrent runs promotes every object each run keeps alive to the collector's oldest generation,
    and enough of them set off full collections that walk the whole process: a durable run waiting for its shared
    commit keeps fewer than 36 tracked objects (its events, the run's bookkeeping, one task; 48 before a lone
    worker needed no set, a lone queued delivery no deque, a stream nothing written to no deque, a step no
    coroutine of its own, a state nothing was set in no set of changed keys; 39 before a lone worker needed no
    tuple, a queued append no ``Append`` and no bound method, a lease's stop no bound method)."""
    store = SQLiteCheckpointer(tmp_path / "runs.db")
    workflow = GatedMiddle(checkpointer=store)
    await asyncio.gather(*(workflow.run(value=n) for n in range(10)))  # warm caches up
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        handlers = [workflow.run(value=n) for n in range(200)]
        for _ in range(3):  # each run's first step is done and waits for its shared commit
            await asyncio.sleep(0)
        per_run = (len(gc.get_objects()) - before) / 200
        assert await asyncio.gather(*handlers) == [(2 * n + 1) ** 2 for n in range(200)]
    finally:
        gc.enable()
    assert 20 < per_run < 36


async def test_a_lone_run_writes_at_once_without_waiting_for_a_turn_of_the_loop() -> None:
    """With the store to itself, a run's checkpoint is durable when the step's await returns: no batching."""
    store = Counting()
    assert await GatedMiddle(checkpointer=store).run(value=1) == 9
    assert store.writes == [1, 1, 1]


class Overwrites(Workflow):
    """Writes one large value, then overwrites a small one many times, checkpointing after each write."""

    @step
    async def write(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.store.set("large", "x" * 200_000)
        await ctx.checkpoint()
        for i in range(ev.times):
            await ctx.store.set("small", f"{i:04}" * 250)
            await ctx.checkpoint()
        return StopEvent(result=ev.times)


async def test_a_large_write_is_not_rewritten_until_the_deltas_outweigh_the_state() -> None:
    """The checkpoint after a 200 KB write is a delta (the state is not rewritten for it); once the deltas
    since the last full snapshot weigh about twice the state, they are folded into one, so what a resume
    replays stays bounded by the state's size."""
    store = MemoryCheckpointer()
    handler = Overwrites(checkpointer=store).run(times=600)
    assert await handler == 600
    records = store.load(handler.run_id)  # from the newest full snapshot on
    assert records[0].full and records[0].seq > 1  # deltas were folded along the way
    assert sum(len(r.data) for r in records[1:]) <= 3 * 201_000
    first = Overwrites(checkpointer=store).run(times=1)
    await first
    large, after = store.load(first.run_id)[1:3]
    assert len(large.data) > 200_000 and not large.full
    assert not after.full and len(after.data) < 2_000


class Tick(Event):
    i: int


class Counts(Workflow):
    """One step per tick, each writing one more small key; the process dies as tick ``dies_at`` starts."""

    dies_at = -1
    step_crash_limit = None

    @step
    async def begin(self, ev: StartEvent) -> Tick:
        return Tick(i=0)

    @step
    async def tick(self, ev: Tick, ctx: Context) -> Tick | StopEvent:
        if ev.i == self.dies_at:
            raise Crash(f"tick {ev.i}")
        await ctx.store.set(f"k{ev.i}", ev.i)
        return Tick(i=ev.i + 1) if ev.i < 59 else StopEvent(result=ev.i + 1)


async def test_a_resumed_run_folds_its_deltas_once_they_weigh_a_kilobyte() -> None:
    """A run resumed over more than RESUME_FOLD bytes of small deltas writes a full snapshot as its first
    checkpoint, so the next resume replays one record instead of all of them; a resume over fewer deltas
    writes a delta."""
    store = MemoryCheckpointer()
    Counts.dies_at = 15  # fifteen deltas of about 100 bytes: over a kilobyte, under the run's own threshold
    workflow = Counts(checkpointer=store)
    handler = workflow.run()
    with pytest.raises(Crash):
        await handler
    before = store.load(handler.run_id)
    assert sum(len(r.data) for r in before[1:]) > RESUME_FOLD and not before[-1].full
    with pytest.raises(Crash):
        await workflow.resume(handler.run_id)
    after = store.load(handler.run_id)
    assert after[0].full and after[0].seq == before[-1].seq + 1  # the resume's own record is the full one
    with pytest.raises(Crash):
        await workflow.resume(handler.run_id)
    again = store.load(handler.run_id)
    assert [r.full for r in again] == [True, False]  # one delta since: not worth folding
    Counts.dies_at = -1
    assert await workflow.resume(handler.run_id) == 60


async def test_a_checkpointer_keeps_one_store_io_across_runs() -> None:
    """The store's I/O (its queue and locks) is made once per checkpointer, not again for each run: what a
    finished run used is what the next one gets."""

    store = MemoryCheckpointer()
    assert await GatedMiddle(checkpointer=store).run(value=1) is not None
    first = weakref.ref(store_io(store))
    gc.collect()
    assert first() is not None
    assert await GatedMiddle(checkpointer=store).run(value=1) is not None
    assert store_io(store) is first()


class PathStore(SQLiteCheckpointer):
    """A checkpointer equal to any other on the same file, as a user's value-like class may be."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PathStore) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)


async def test_two_checkpointers_equal_by_value_keep_a_store_io_each(tmp_path: Path) -> None:
    """Store I/O is found by identity: a run on one checkpointer goes on when another, equal to it, is dropped."""
    first = PathStore(tmp_path / "runs.db")
    second = PathStore(tmp_path / "runs.db")
    assert store_io(first) is not store_io(second)
    await Napping(checkpointer=first).run()
    handler = Napping(checkpointer=second).run()
    await asyncio.sleep(0.01)
    del first
    gc.collect()
    assert await handler == "rested"


class Rested(Event):
    pass


class Napping(Workflow):
    @step
    async def nap(self, ev: StartEvent) -> Rested:
        await asyncio.sleep(0.05)
        return Rested()

    @step
    async def wake(self, ev: Rested) -> StopEvent:
        return StopEvent(result="rested")


def test_a_group_commit_left_queued_by_a_closed_loop_does_not_fail_the_next_loops_writes() -> None:
    """Two runs' checkpoints wait for a shared commit when their loop is closed before it: the next write on
    another loop writes them first, as ordered, and tells nobody on the closed loop, instead of failing with
    "Event loop is closed"."""
    store = MemoryCheckpointer()
    for run_id in ("a", "b", "c"):
        store.create(run_id, "W", Record(1, True, b"x"), "owner")
    io = store_io(store)
    io.active = 2  # runs sharing the store: checkpoints are queued for a commit at the loop's next turn
    closed = asyncio.new_event_loop()
    waiting = [io.append(closed, Append(run_id, Record(2, False, b"y"), "owner"), batch=True) for run_id in "ab"]
    for future in waiting:
        assert future is not None
        future.add_done_callback(lambda _: None)  # as a step awaiting it does
    closed.close()
    io.active = 0

    async def lone() -> None:
        assert io.append(asyncio.get_running_loop(), Append("c", Record(2, False, b"y"), "owner"), batch=True) is None

    asyncio.run(lone())
    assert [[r.seq for r in store.load(run_id)] for run_id in "abc"] == [[1, 2]] * 3
    assert not any(future.done() for future in waiting if future is not None)


def test_a_dropped_checkpointer_is_forgotten_without_running_python_code() -> None:
    """A checkpointer's store I/O is forgotten when the checkpointer dies, by a callback that runs no Python code:
    a Ctrl-C arriving while Python code ran in it would be raised there, reported as ignored, and lost (a crash
    exploration interrupted then ran to its end)."""
    store = MemoryCheckpointer()
    store_io(store)
    key = id(store)
    called: list[str] = []

    def noting(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            called.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    sys.setprofile(noting)
    try:
        del store
    finally:
        sys.setprofile(None)
    assert [where for where in called if "_storeio" in where] == []
    assert key not in _storeio._ios
