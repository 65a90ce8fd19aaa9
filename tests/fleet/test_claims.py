"""Claiming a stored run on a network store happens off the event loop: a store that does not answer a claim
holds up only the run being claimed, and a worker whose claim got no answer tries that run again later."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import fakeredis

from durableflow import RedisCheckpointer, SQLiteCheckpointer, StoreUnavailableError, Worker

from .servers import RedisServer
from .submitting import hand_over
from .test_frozen_store import Ticker


async def test_resume_on_a_frozen_redis_returns_at_once_and_other_runs_go_on(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """With redis-server stopped (SIGSTOP) for 2 s, resume() of a run stored there returns without waiting, a
    run on SQLite completes meanwhile, and the resumed run completes once Redis thaws."""
    redis_store = RedisCheckpointer(redis_server.url, socket_timeout=10)
    sqlite_store = SQLiteCheckpointer(tmp_path / "runs.db")
    try:
        await hand_over(Ticker(), redis_store, "claimed-while-frozen")
        thaw = threading.Event()
        freezer = threading.Thread(target=lambda: (redis_server.freeze(2.0), thaw.set()))
        freezer.start()
        await asyncio.sleep(0.1)  # the server is stopped now
        loop = asyncio.get_running_loop()
        began = loop.time()
        handler = Ticker(checkpointer=redis_store).resume("claimed-while-frozen")
        assert loop.time() - began < 0.5, "resume() waited for the frozen store on the event loop"
        assert await asyncio.wait_for(Ticker(checkpointer=sqlite_store).run(), 1.5) == 9
        assert not thaw.is_set() and not handler.done()  # the claim still waits on Redis, and only it
        await asyncio.to_thread(freezer.join)
        await asyncio.wait_for(handler.claimed(), 10)
        assert await asyncio.wait_for(handler, 10) == 9
        assert redis_store.info("claimed-while-frozen").status == "completed"
    finally:
        redis_store.close()
        sqlite_store.close()


class Unanswered(RedisCheckpointer):
    """Its first ``failures`` lease acquisitions get no answer from the server."""

    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures

    def acquire(self, *args: Any, **kwargs: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("the server did not answer the lease acquisition")
        super().acquire(*args, **kwargs)


async def test_a_worker_whose_claim_got_no_answer_frees_the_slot_and_claims_the_run_again() -> None:
    """concurrency=1, two interrupted runs, the first claim unanswered: the worker gives that slot back and
    later drives both runs to their result."""
    server = fakeredis.FakeServer()
    store = Unanswered(fakeredis.FakeRedis(server=server), failures=1)
    for n in range(2):
        await hand_over(Ticker(), store, f"run-{n}")
    worker = Worker([Ticker], store, concurrency=1, poll_interval=0.01, max_poll_interval=0.02)
    serving = asyncio.ensure_future(worker.run(handle_signals=False))
    try:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10
        while worker.stats.completed < 2:
            assert loop.time() < give_up, f"not both runs completed: {worker.stats}"
            assert not serving.done(), serving.exception()
            await asyncio.sleep(0.01)
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 10)
    assert store.failures == 0 and worker.stats.recovered == 2
    assert [store.info(f"run-{n}").status for n in range(2)] == ["completed", "completed"]
