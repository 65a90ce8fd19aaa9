"""A checkpoint whose write failed loses nothing and claims nothing: what it held goes into the next record,
and an end whose write timed out is reported only if that very record is in the store."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from durableflow import (
    Context,
    Event,
    MemoryCheckpointer,
    Record,
    RunStatus,
    StartEvent,
    StopEvent,
    StoreUnavailableError,
    Workflow,
    step,
)

from .crashing import Crash
from .test_failed_writes import FlakyStore
from .workflows import Gated


class Noted(Event):
    pass


class NotesThroughAFailedCheckpoint(Workflow):
    """``note`` sets a key, asks for a checkpoint that fails (and carries on), sets another; ``read`` dies while
    ``crash`` is set, else returns both keys."""

    def __init__(self, store: FlakyStore, crash: bool, **options: Any) -> None:
        super().__init__(checkpointer=store, **options)
        self.store, self.crash = store, crash

    @step
    async def note(self, ev: StartEvent, ctx: Context) -> Noted:
        await ctx.store.set("before", 1)
        self.store.fail_next = True
        with contextlib.suppress(StoreUnavailableError):
            await ctx.checkpoint()
        await ctx.store.set("after", 2)
        return Noted()

    @step
    async def read(self, ev: Noted, ctx: Context) -> StopEvent:
        if self.crash:
            raise Crash("the process dies")
        return StopEvent(
            result=[await ctx.store.get("before", default=None), await ctx.store.get("after", default=None)]
        )


async def test_what_a_failed_checkpoint_held_is_in_the_next_one() -> None:
    """A checkpoint that failed is not simply skipped: what changed before it (a state key set, then the failed
    ``ctx.checkpoint()``) is in the record written after it, so once the step's completion is durable a crash
    loses none of it."""
    store = FlakyStore()
    with contextlib.suppress(Crash):
        await asyncio.wait_for(NotesThroughAFailedCheckpoint(store, crash=True).run(run_id="noted"), 5)
    resumed = NotesThroughAFailedCheckpoint(store, crash=False).resume("noted")
    assert await asyncio.wait_for(resumed, 5) == [1, 2]


class TakenOverDuringTheEnd(MemoryCheckpointer):
    """The append that would complete a run times out; meanwhile another worker took the run over (its lease
    lapsed) and wrote its own next record, of the same number."""

    def append(
        self,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        if status == "completed":
            self.acquire(run_id, "another-worker", steal_from=owner)
            super().append(run_id, Record(record.seq, False, b"another worker's record"), "another-worker")
            raise StoreUnavailableError("the write timed out")
        super().append(run_id, record, owner, status, result, error)


async def test_an_end_whose_write_timed_out_is_not_reported_when_another_record_took_its_place() -> None:
    """The record that would end the run timed out and another worker's record holds its number: the run is not
    reported completed (its end never landed), and nothing more is written over the new owner's."""
    store = TakenOverDuringTheEnd()
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(Gated(checkpointer=store).run(run_id="taken", value=1), 5)
    info = store.info("taken")
    assert (info.status, info.lease_owner) == ("running", "another-worker")
    assert store.load("taken")[-1].data == b"another worker's record"
