"""A checkpoint that timed out on the client and landed later: the engine finds out which record the store holds."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from durableflow import (
    Context,
    Event,
    MemoryCheckpointer,
    Record,
    RedisCheckpointer,
    StartEvent,
    StopEvent,
    StoreUnavailableError,
    Workflow,
    step,
)

from .crashing import settle
from .workflows import Gated


class Doubled(Event):
    value: int


class Added(Event):
    value: int


class GatedMiddle(Workflow):
    """double, then add one once the gate opens (if any), then square; counts the runs of each step."""

    def __init__(self, gate: asyncio.Event | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.gate = gate
        self.ran: list[str] = []

    @step
    async def double(self, ev: StartEvent) -> Doubled:
        self.ran.append("double")
        return Doubled(value=ev.value * 2)

    @step
    async def add(self, ev: Doubled, ctx: Context) -> Added:
        self.ran.append("add")
        if self.gate is not None:
            await self.gate.wait()
        await ctx.store.set("added", ev.value + 1)
        return Added(value=ev.value + 1)

    @step
    async def square(self, ev: Added) -> StopEvent:
        self.ran.append("square")
        return StopEvent(result=ev.value**2)


class AfterTheStall(RedisCheckpointer):
    """A Redis checkpointer whose failed append returns only once Redis has run what it held back.

    So the engine's next write reaches Redis after the one that timed out has landed, every time.
    """

    def __init__(self, *args: Any, stall_over: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stall_over = stall_over
        self.timed_out: list[int] = []

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        try:
            super().append(run_id, record, owner, *args, **kwargs)
        except StoreUnavailableError:
            self.timed_out.append(record.seq)
            self.stall_over.wait(10)
            raise


async def test_a_checkpoint_that_landed_after_its_timeout_is_recognised_and_the_run_finishes(
    redis_url: str, stalled_redis: Callable[[float], AbstractContextManager[None]]
) -> None:
    """Redis is held busy while step add's completion is written: the client gives up, Redis stores the
    record afterwards. The engine writes nothing after a write the store failed (no "failed" status, which
    would keep workers off the run): the landed record is the run's last, its lease is given up, and a resume
    continues from the completion without running add again."""
    prefix = f"late-{uuid.uuid4().hex[:8]}"
    stall_over = threading.Event()
    store = AfterTheStall(redis_url, prefix=prefix, socket_timeout=0.2, stall_over=stall_over)
    gate = asyncio.Event()
    workflow = GatedMiddle(gate=gate, checkpointer=store)
    handler = workflow.run(run_id="late", value=5)
    await settle(lambda: workflow.ran == ["double", "add"])
    completion = store.info("late").last_seq + 1  # the record add's completion goes to
    with stalled_redis(1.0):
        gate.set()
        await settle(lambda: store.timed_out == [completion])
    stall_over.set()
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(handler, 10)

    await settle(lambda: store.info("late").lease_owner is None)
    info = store.info("late")
    assert (info.status, info.last_seq) == ("interrupted", completion)  # the landed record, nothing after it
    again = GatedMiddle(checkpointer=RedisCheckpointer(redis_url, prefix=prefix))
    assert await asyncio.wait_for(again.resume("late"), 10) == 121
    assert again.ran == ["square"]  # add's completion was durable: it does not run again


class Overtaken(MemoryCheckpointer):
    """A memory store whose first delta fails unreachable after another record took that sequence number."""

    armed = False

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        if self.armed and not record.full:
            self.armed = False
            super().append(run_id, Record(record.seq, False, record.data + b" "), owner)  # not what was sent
            raise StoreUnavailableError("the write timed out")
        super().append(run_id, record, owner, *args, **kwargs)


async def test_a_sequence_number_taken_by_another_record_stops_the_run_without_writing() -> None:
    """When the record under the timed-out write's number is not the one this worker sent, the worker no
    longer knows the stored run: it writes nothing more, as after losing its lease."""
    store = Overtaken()
    gate = asyncio.Event()
    workflow = Gated(gate=gate, checkpointer=store)
    handler = workflow.run(run_id="overtaken", value=5)
    await settle(lambda: workflow.at_gate == 1)
    before = store.info("overtaken").last_seq
    store.armed = True
    gate.set()
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(handler, 5)
    info = store.info("overtaken")
    assert (info.status, info.last_seq) == ("interrupted", before + 1)  # only the foreign record: nothing after it
    assert store.load("overtaken")[-1].data.endswith(b" ")
