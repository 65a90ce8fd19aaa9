"""A worker counts a lease from when it asked the store for it (an acquire, a renewal), never from when the answer
came or the run started: the store may have granted it at once, so the run stops before a lease counted from
then could lapse. The loop's clock is moved by hand, as a slow store or a paused process would move it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durableflow import LeaseExpiredError, MemoryCheckpointer, Record, StoreUnavailableError

from .crashing import Crash, ManualClock, settle
from .workflows import Gated


class SlowRenewals(MemoryCheckpointer):
    """Renews at once, then its answer takes ``delay`` seconds of the loop's clock to come back (a stalled
    connection, a paused process)."""

    def __init__(self, skew: list[float], delay: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skew, self.delay, self.renewals = skew, delay, 0

    def renew(self, run_id: str, owner: str) -> bool:
        held = super().renew(run_id, owner)
        self.renewals += 1
        self.skew[0] += self.delay
        return held


async def test_a_renewal_answered_late_counts_the_lease_from_when_it_was_asked(clock: ManualClock) -> None:
    """Lease of 100 s. The renewal is asked 30 s into the run (loop's clock) and answered 30 s later. The lease
    it renewed runs from the ask at the latest, so the run must stop (LeaseExpiredError) by 30 + 80 s, keeping its
    20% margin; one counting from the answer would still drive at 115 s, past what it may assume it holds."""
    loop = asyncio.get_running_loop()
    real_time, skew = loop.time, [0.0]
    loop.time = lambda: real_time() + skew[0]  # type: ignore[method-assign]
    try:
        store = SlowRenewals(skew, delay=30.0, lease_ttl=100)
        gate = asyncio.Event()
        wf = Gated(gate=gate, checkpointer=store)
        handler = wf.run(run_id="slow", value=1)
        await settle(lambda: wf.at_gate == 1)
        written = store.info("slow").last_seq
        skew[0] = 30.0
        clock.advance(34)  # the renewal falls due on the run's clock (a third of the TTL)
        await settle(lambda: store.renewals == 1)
        assert not handler.done()  # answered at 60 s: the lease held
        skew[0] = 115.0
        await settle(handler.done, timeout=2.0)
        with pytest.raises(LeaseExpiredError):
            await handler
        gate.set()  # the step it was in was stopped: letting it go on writes nothing
        await asyncio.sleep(0.01)
        assert store.info("slow").last_seq == written
    finally:
        del loop.time


class SlowLoads(MemoryCheckpointer):
    """Loads a run's records in ``delay`` seconds of the loop's clock (a large run, a slow disk)."""

    def __init__(self, skew: list[float], delay: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skew, self.delay = skew, delay

    def load(self, run_id: str) -> list[Record]:
        records = super().load(run_id)
        self.skew[0] += self.delay
        return records


class DyingGate:
    """A gate at which the process dies."""

    async def wait(self) -> None:
        raise Crash("killed at the gate")


async def test_a_resumed_run_counts_its_lease_from_the_acquire_not_from_the_end_of_its_load(
    clock: ManualClock,
) -> None:
    """Lease of 100 s. A run whose owner died is resumed: the lease is acquired, then its records take 30 s to
    load. The lease runs from the acquire, so with no renewal the run must stop by 80 s after it (its 20% margin
    kept); one counting from the end of the load would still drive at 85 s."""
    loop = asyncio.get_running_loop()
    real_time, skew = loop.time, [0.0]
    loop.time = lambda: real_time() + skew[0]  # type: ignore[method-assign]
    try:
        store = SlowLoads(skew, delay=30.0, lease_ttl=100)
        with pytest.raises(Crash):
            await Gated(gate=DyingGate(), checkpointer=store).run(run_id="loaded", value=1)  # type: ignore[arg-type]
        assert store.info("loaded").status == "interrupted"
        gate = asyncio.Event()
        wf = Gated(gate=gate, checkpointer=store)
        skew[0] = 0.0
        handler = wf.resume("loaded")  # acquired at 0 s, loaded at 30 s
        await settle(lambda: wf.at_gate == 1)
        written = store.info("loaded").last_seq
        skew[0] = 85.0
        await settle(handler.done, timeout=2.0)
        with pytest.raises(LeaseExpiredError):
            await handler
        gate.set()
        await asyncio.sleep(0.01)
        assert store.info("loaded").last_seq == written
    finally:
        del loop.time


class OneBlip(MemoryCheckpointer):
    """Does not answer the first renewal (a dropped connection); answers every later one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.renewals = 0

    def renew(self, run_id: str, owner: str) -> bool:
        self.renewals += 1
        if self.renewals == 1:
            raise StoreUnavailableError("connection reset")
        return super().renew(run_id, owner)


async def test_a_renewal_that_got_no_answer_is_tried_again_before_the_lease_is_in_danger(clock: ManualClock) -> None:
    """Lease of 100 s. The first renewal (at 34 s) gets no answer; the next is tried a tenth of the TTL later, is
    answered at 40 s of the loop's clock, and so the run still drives at 90 s (past the first lease's 80 s deadline)
    and completes; a retry a whole TTL later would have let the first deadline stop it."""
    loop = asyncio.get_running_loop()
    real_time, skew = loop.time, [0.0]
    loop.time = lambda: real_time() + skew[0]  # type: ignore[method-assign]
    try:
        store = OneBlip(lease_ttl=100)
        gate = asyncio.Event()
        wf = Gated(gate=gate, checkpointer=store)
        handler = wf.run(run_id="blip", value=1)
        await settle(lambda: wf.at_gate == 1)
        clock.advance(34)
        await settle(lambda: store.renewals == 1)
        skew[0] = 40.0
        clock.advance(10)  # a tenth of the TTL: the renewal is tried again, and answered
        await settle(lambda: store.renewals == 2)
        skew[0] = 90.0
        await asyncio.sleep(0.01)  # the loop runs its timers: a deadline that had passed would stop the run now
        assert not handler.done()
        gate.set()
        assert await asyncio.wait_for(handler, 5) == 3
    finally:
        del loop.time
