"""A frozen store stalls only the runs that write to it: a worker of the same process on another store goes on."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from durableflow import Context, Event, RedisCheckpointer, SQLiteCheckpointer, StartEvent, StopEvent, Worker, Workflow
from durableflow import step as workflow_step

from .servers import RedisServer
from .submitting import hand_over


class Ticked(Event):
    n: int


class Ticker(Workflow):
    """Ten short steps, each checkpointed: a run that needs its store all along."""

    @workflow_step
    async def begin(self, ev: StartEvent, ctx: Context) -> Ticked:
        return Ticked(n=0)

    @workflow_step
    async def tick(self, ev: Ticked, ctx: Context) -> Ticked | StopEvent:
        await asyncio.sleep(0.01)
        return Ticked(n=ev.n + 1) if ev.n < 9 else StopEvent(result=ev.n)


async def test_runs_on_sqlite_complete_while_the_redis_of_another_worker_is_frozen(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two workers on one event loop: with Redis stopped (SIGSTOP) for 3 s, the SQLite worker completes its runs."""
    server = redis_server
    redis_store = RedisCheckpointer(server.url, socket_timeout=10)
    sqlite_store = SQLiteCheckpointer(tmp_path / "runs.db")
    try:
        for n in range(4):
            await hand_over(Ticker(), redis_store, f"redis-{n}")
        frozen = Worker([Ticker], redis_store, poll_interval=0.02)
        live = Worker([Ticker], sqlite_store, poll_interval=0.02)
        serving = [asyncio.ensure_future(w.run(handle_signals=False)) for w in (frozen, live)]
        while frozen.stats.recovered < 4:
            await asyncio.sleep(0.005)
        thaw = threading.Event()
        freezer = threading.Thread(target=lambda: (server.freeze(3.0), thaw.set()))
        freezer.start()
        await asyncio.sleep(0.2)  # the Redis runs are waiting on the frozen server now
        for n in range(4):
            await hand_over(Ticker(), sqlite_store, f"sqlite-{n}")
        loop = asyncio.get_running_loop()
        began = loop.time()
        while live.stats.completed < 4:
            assert loop.time() - began < 2.5, "the SQLite runs stalled behind the frozen Redis"
            await asyncio.sleep(0.01)
        assert not thaw.is_set() and frozen.stats.completed < 4
        await asyncio.to_thread(freezer.join)
        while frozen.stats.completed < 4:
            assert loop.time() - began < 30, "the Redis runs did not finish after the thaw"
            await asyncio.sleep(0.01)
        for worker in (frozen, live):
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*serving), 10)
    finally:
        redis_store.close()
        sqlite_store.close()
