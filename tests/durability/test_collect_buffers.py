"""A collect buffer that grows one event at a time is written as additions, not rewritten whole at each
checkpoint: a fan-in of N members costs O(N) bytes, and a run that dies while collecting resumes with every
member it had buffered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durableflow import Context, Event, MemoryCheckpointer, Record, StartEvent, StopEvent, Workflow, step
from durableflow._snapshot import unframe
from durableflow._waiters import PARKED
from durableflow.cli._inspect import _changes

from .crashing import Crash, crash_at


class Item(Event):
    i: int
    n: int


class Done(Event):
    i: int
    n: int


class FanIn(Workflow):
    """Sends n items, turns each into a Done, and collects the n Done events."""

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Item | None:
        for i in range(ev.n):
            ctx.send_event(Item(i=i, n=ev.n))
        return None

    @step
    async def work(self, ev: Item) -> Done:
        return Done(i=ev.i, n=ev.n)

    @step
    async def gather(self, ev: Done, ctx: Context) -> StopEvent | None:
        done = ctx.collect_events(ev, [Done] * ev.n)
        return None if done is None else StopEvent(result=sorted(d.i for d in done))  # type: ignore[attr-defined]


class Every(MemoryCheckpointer):
    """Keeps every record written, compacted away or not."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[Record] = []

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        self.written.append(record)
        super().create(run_id, workflow, record, owner)

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        self.written.append(record)
        super().append(run_id, record, owner, *args, **kwargs)


async def test_a_growing_buffer_is_written_as_additions() -> None:
    """500 members: each member's checkpoint adds its one event to the buffer; only the checkpoints that take the
    whole set and retire it hold the buffer whole, and the run writes under 1,200 bytes per member in all."""
    store = Every()
    handler = FanIn(checkpointer=store, timeout=None).run(n=500)
    assert await asyncio.wait_for(handler, 30) == list(range(500))
    docs = [unframe(r.data, handler.run_id, r.seq) for r in store.written]
    added = [eid for doc in docs for eids in doc.get("buffers_add", {}).values() for eid in eids]
    assert len(set(added)) == len(added) > 490  # each once; the few whose checkpoint was a full snapshot are in it
    whole = [
        doc for doc in docs if doc["kind"] == "delta" and any(len(e) > 10 for e in doc.get("buffers", {}).values())
    ]
    assert len(whole) <= 1  # the checkpoint of the step that took all 500
    assert sum(len(r.data) for r in store.written) < 1_200 * 500  # rewriting the buffer each time: 3,600


@pytest.mark.parametrize("dies_at", [120, 333])
async def test_a_run_that_dies_while_collecting_resumes_with_every_member(dies_at: int) -> None:
    """The process dies as a member's checkpoint lands, with part of the set buffered: the resumed run collects
    every member once, the buffered ones read back from the additions."""
    store = MemoryCheckpointer()
    workflow = FanIn(checkpointer=store, timeout=None)
    with crash_at(f"checkpoint.write.after#{dies_at}"), pytest.raises(Crash):
        handler = workflow.run(run_id="fan", n=200)
        await asyncio.wait_for(handler, 30)
    assert await asyncio.wait_for(workflow.resume("fan"), 30) == list(range(200))


async def test_show_names_the_buffers_a_delta_grew() -> None:
    """`durableflow show` lists a delta's buffer additions beside its other changes."""
    store = Every()
    handler = FanIn(checkpointer=store, timeout=None).run(n=3)
    assert await handler == [0, 1, 2]
    docs = [unframe(r.data, handler.run_id, r.seq) for r in store.written]
    grew = next(doc for doc in docs if doc.get("buffers_add"))
    assert "buffers grown gather" in _changes(grew, set())


def test_show_names_the_engines_own_buffer_of_outside_events_in_words() -> None:
    """The buffer of events sent from outside that no step took is the engine's: `show` says what it is,
    not its internal name (which starts with a NUL so that no step's name can clash with it)."""
    shown = _changes({"kind": "delta", "buffers": {PARKED: [1]}, "buffers_add": {PARKED: [2], "gather": [3]}}, set())
    assert "\0" not in shown and "\\x00" not in shown  # neither the NUL nor its escape
    assert "buffers parked (events sent from outside" in shown and "buffers grown parked (" in shown
    assert "gather" in shown
