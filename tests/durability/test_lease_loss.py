"""A worker that cannot show it still holds a run's lease stops driving the run: before the lease could lapse,
and at once when the store says another worker has it."""

from __future__ import annotations

import asyncio

import pytest

from durableflow import LeaseExpiredError, MemoryCheckpointer, RunLeaseError

from .crashing import ManualClock, settle
from .workflows import Gated


async def test_a_run_stops_before_its_lease_could_lapse_when_no_renewal_lands(clock: ManualClock) -> None:
    """A worker whose loop saw 90 s of a 100 s lease pass with no renewal (a paused process, a store that does
    not answer) has stopped the run with LeaseExpiredError, before the lease lapses: it keeps a margin, so its run
    never outlives the lease on a clock that lags another worker's."""
    store = MemoryCheckpointer(lease_ttl=100)
    loop = asyncio.get_running_loop()
    real_time, skew = loop.time, [0.0]
    loop.time = lambda: real_time() + skew[0]  # type: ignore[method-assign]
    try:
        gate = asyncio.Event()
        wf = Gated(gate=gate, checkpointer=store)
        handler = wf.run(run_id="paused", value=1)
        await settle(lambda: wf.at_gate == 1)
        written = store.info("paused").last_seq
        skew[0] = 90.0  # the loop's clock jumps; the run's clock does not move, so no renewal is sent
        await settle(handler.done)  # within 5 s: never at the lease's end (100 s)
        with pytest.raises(LeaseExpiredError):
            await handler
        gate.set()  # the step it was in was stopped: letting it go on writes nothing
        await asyncio.sleep(0.01)
        assert store.info("paused").last_seq == written
    finally:
        del loop.time


async def test_a_run_whose_renewal_is_refused_stops_at_once(clock: ManualClock) -> None:
    """Once another worker has taken the run over, the first renewal the store refuses stops this worker's run
    with RunLeaseError there and then, while its step is still under way (not later, when that step would
    write), and it writes nothing over the new owner's run."""
    store = MemoryCheckpointer(lease_ttl=30)
    gate = asyncio.Event()
    wf = Gated(gate=gate, checkpointer=store)
    handler = wf.run(run_id="taken", value=1)
    await settle(lambda: wf.at_gate == 1)
    written = store.info("taken").last_seq
    store.acquire("taken", "other-worker", steal_from=store.info("taken").lease_owner)  # its owner was thought dead
    clock.advance(10)  # the renewal is due: the store refuses it
    await settle(handler.done)
    with pytest.raises(RunLeaseError):
        await handler
    gate.set()
    await asyncio.sleep(0.01)
    info = store.info("taken")
    assert (info.lease_owner, info.last_seq) == ("other-worker", written)
