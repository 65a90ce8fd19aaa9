"""A fan-in buffer that, between two checkpoints, both gains an event (an arrival still being handled) and loses the
ones a finishing step had taken is stored with each of its events once: a restart pairs what it paired before."""

from __future__ import annotations

import asyncio

import pytest

from durableflow import Context, Event, StartEvent, StopEvent, Workflow, step

from .conftest import Store
from .crashing import Crash, crash_at, settle


class Done(Event):
    n: int


class Paired(Event):
    ns: list[int]


class Pairs(Workflow):
    """Four results paired in arrival order by ``pair`` (two workers); each arrival then waits for its gate (a
    progress notice, say) before its step ends. ``total`` gathers the two pairs."""

    gates: dict[int, asyncio.Event]
    arrived: list[int]

    @step
    async def begin(self, ev: StartEvent, ctx: Context) -> Done | None:
        for n in range(4):
            ctx.send_event(Done(n=n))
        return None

    @step(num_workers=2)
    async def pair(self, ev: Done, ctx: Context) -> Paired | None:
        got = ctx.collect_events(ev, [Done, Done])
        type(self).arrived.append(ev.n)
        await type(self).gates[ev.n].wait()
        return None if got is None else Paired(ns=sorted(d.n for d in got))

    @step
    async def total(self, ev: Paired, ctx: Context) -> StopEvent | None:
        pairs = ctx.collect_events(ev, [Paired, Paired])
        return None if pairs is None else StopEvent(result=sorted(p.ns for p in pairs))


async def test_an_arrival_buffered_while_a_taken_pair_finishes_is_stored_once(store: Store) -> None:
    """Results 0 and 1 are paired by the call for 1, which waits; the call for 0 ends (a checkpoint); result 2
    arrives and is buffered while 1's call still waits; then 1's call ends and the process dies once that checkpoint
    is written. The resumed run pairs 2 with 3, as an uncrashed run does, never 2 with itself."""
    Pairs.gates, Pairs.arrived = {n: asyncio.Event() for n in range(4)}, []
    first = Pairs(checkpointer=store.open()).run(run_id="pairs")
    await settle(lambda: Pairs.arrived == [0, 1])
    Pairs.gates[0].set()
    await settle(lambda: Pairs.arrived == [0, 1, 2])
    with crash_at("checkpoint.write.after#1") as reached, pytest.raises(Crash):
        Pairs.gates[1].set()
        await asyncio.wait_for(first, 5)
    assert reached[0] == "step.pair.end#1"  # (hits counted from here): 1's call ends
    for gate in Pairs.gates.values():
        gate.set()
    assert await asyncio.wait_for(Pairs(checkpointer=store.open()).resume("pairs"), 5) == [[0, 1], [2, 3]]
