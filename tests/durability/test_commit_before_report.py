"""On a store the engine writes to from a thread, a step's completion and a run's end are reported only once
their records are committed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import fakeredis

from durableflow import Record, RedisCheckpointer

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
