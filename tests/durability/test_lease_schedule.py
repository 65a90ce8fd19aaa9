"""The runs of one loop share their lease timers: each run is still renewed when its own renewal is due, and
stopped at its own deadline, whatever the other runs in flight do."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from pathlib import Path
from typing import Any

from durableflow import (
    LeaseExpiredError,
    MemoryCheckpointer,
    SQLiteCheckpointer,
    StoreUnavailableError,
    _lease,
    get_clock,
    use_clock,
)

from .crashing import ManualClock, settle
from .workflows import Gated


class Renewals(MemoryCheckpointer):
    """Notes each renewal's run id, in order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.renewed: list[str] = []

    def renew(self, run_id: str, owner: str) -> bool:
        self.renewed.append(run_id)
        return super().renew(run_id, owner)


async def test_each_run_is_renewed_when_its_own_renewal_is_due(clock: ManualClock) -> None:
    """Runs started 4 s apart on a 30 s lease: each renewal comes 10 s after that run's previous one, and a run
    that ended is renewed no more while the others still are."""
    store = Renewals(lease_ttl=30)
    gates = {name: asyncio.Event() for name in "abc"}
    handlers = {}
    for name in "abc":
        wf = Gated(gate=gates[name], checkpointer=store)
        handlers[name] = wf.run(run_id=name, value=1)
        await settle(lambda wf=wf: wf.at_gate == 1)  # type: ignore[misc]
        if name != "c":
            clock.advance(4)  # b starts at +4, c at +8
    clock.advance(2)  # +10: a is due
    await settle(lambda: store.renewed == ["a"])
    clock.advance(3)  # +13
    await asyncio.sleep(0.01)
    assert store.renewed == ["a"]
    clock.advance(1)  # +14: b is due
    await settle(lambda: store.renewed == ["a", "b"])
    gates["c"].set()
    assert await asyncio.wait_for(handlers["c"], 5) == 3
    clock.advance(6)  # +20: a again (10 s after its renewal); c, due at +18, has ended
    await settle(lambda: store.renewed == ["a", "b", "a"])
    clock.advance(4)  # +24: b again
    await settle(lambda: store.renewed == ["a", "b", "a", "b"])
    for name in "ab":
        gates[name].set()
        assert await asyncio.wait_for(handlers[name], 5) == 3
    clock.advance(30)
    await asyncio.sleep(0.01)
    assert store.renewed == ["a", "b", "a", "b"]


async def test_a_run_whose_renewals_fail_stops_alone(tmp_path: Path) -> None:
    """On a 0.3 s lease, one run's renewals get no answer: it stops with LeaseExpiredError at its own deadline,
    while a run beside it keeps its lease renewed and finishes after that deadline has passed."""
    store = SQLiteCheckpointer(tmp_path / "runs.db", lease_ttl=0.3)
    renew = store.renew

    def unanswered_for_stalled(run_id: str, owner: str) -> bool:
        if run_id == "stalled":
            raise StoreUnavailableError("no answer")
        return renew(run_id, owner)

    store.renew = unanswered_for_stalled  # type: ignore[method-assign]
    stalled_gate, healthy_gate = asyncio.Event(), asyncio.Event()
    stalled = Gated(gate=stalled_gate, checkpointer=store).run(run_id="stalled", value=1)
    healthy_wf = Gated(gate=healthy_gate, checkpointer=store)
    healthy = healthy_wf.run(run_id="healthy", value=2)
    await settle(lambda: healthy_wf.at_gate == 1)
    began = asyncio.get_running_loop().time()
    try:
        await asyncio.wait_for(stalled, 5)
    except LeaseExpiredError:
        pass
    else:
        raise AssertionError("the run whose renewals failed went on")
    assert asyncio.get_running_loop().time() - began < 0.3
    await asyncio.sleep(0.4)  # past the stalled run's lease: the healthy one's was renewed meanwhile
    healthy_gate.set()
    assert await asyncio.wait_for(healthy, 5) == 5


def test_a_closed_loop_that_ran_durable_runs_is_freed() -> None:
    """Once its last run has ended, nothing of the lease schedule holds the loop: a process that runs
    ``asyncio.run`` again and again keeps none of the closed loops."""
    store = MemoryCheckpointer()
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one(value: int) -> int:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return await Gated(checkpointer=store).run(value=value)

    for value in range(3):
        assert asyncio.run(one(value)) == value * 2 + 1
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]


async def test_a_clock_is_freed_once_its_runs_end_and_the_next_run_is_still_renewed() -> None:
    """A clock whose runs on a long-lived loop have all ended is not held by the loop's lease schedule, and
    a run that starts after an idle moment arms its renewal afresh."""
    store = Renewals(lease_ttl=30)
    first = ManualClock()
    with use_clock(first):
        assert await asyncio.wait_for(Gated(checkpointer=store).run(run_id="a", value=1), 5) == 3
    freed = weakref.ref(first)
    del first
    gc.collect()
    assert freed() is None
    assert _lease._schedules.get(asyncio.get_running_loop()) is None

    second = ManualClock()
    with use_clock(second):
        gate = asyncio.Event()
        wf = Gated(gate=gate, checkpointer=store)
        handler = wf.run(run_id="b", value=1)
        await settle(lambda: wf.at_gate == 1)
        second.advance(10)
        await settle(lambda: store.renewed == ["b"])
        gate.set()
        assert await asyncio.wait_for(handler, 5) == 3
    assert _lease._schedules.get(asyncio.get_running_loop()) is None


async def test_back_to_back_runs_on_the_real_clock_arm_no_timers_and_are_still_renewed() -> None:
    """On the real clock the timers a finished run leaves armed serve the next: it arms none of its own. A
    timer superseded meanwhile does nothing when it fires, and a run that outlives the timers left armed is
    renewed on time (a 0.3 s lease, renewed every 0.1 s: it stops with LeaseExpiredError otherwise)."""
    store = Renewals(lease_ttl=0.3)
    loop = asyncio.get_running_loop()
    assert await Gated(checkpointer=store).run(run_id="a", value=1) == 3
    schedule = _lease._schedules[loop][id(_lease.get_clock())]
    assert schedule.renewal_at < float("inf") and schedule.deadline is None  # armed, its handle let go

    armed: list[float] = []
    call_at = loop.call_at

    def counting(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, *args, **kwargs)

    loop.call_at = counting  # type: ignore[method-assign]
    try:
        assert await Gated(checkpointer=store).run(run_id="b", value=1) == 3
    finally:
        del loop.call_at
    assert armed == []

    renewal_at = schedule.renewal_at
    schedule._renewals(renewal_at - 1)  # a timer superseded: nothing happens
    assert (schedule.renewal_at, store.renewed) == (renewal_at, [])

    gate = asyncio.Event()
    wf = Gated(gate=gate, checkpointer=store)
    handler = wf.run(run_id="c", value=1)
    await settle(lambda: store.renewed.count("c") >= 3)  # 0.3 s: past the lease, the timers left armed
    gate.set()
    assert await asyncio.wait_for(handler, 5) == 3


def test_a_loop_closed_with_a_durable_run_in_flight_is_freed_once_another_loop_runs_one() -> None:
    """A loop closed while a durable run waits in a step (its lease kept by the loop's schedule, its timers armed
    on that loop) is not held by the schedule for good: once a run starts on another loop, nothing of the lease
    schedule keeps the closed one, nor its run."""
    store = MemoryCheckpointer()
    closed = asyncio.new_event_loop()

    async def start() -> Any:
        wf = Gated(gate=asyncio.Event(), checkpointer=store)
        wf.run(value=1)  # left waiting at the gate when the loop closes
        await settle(lambda: wf.at_gate == 1)
        return weakref.ref(wf)

    left = closed.run_until_complete(start())
    gone = weakref.ref(closed)
    closed.close()
    del closed

    async def another() -> Any:
        return await Gated(checkpointer=store).run(value=2)

    assert asyncio.run(another()) == 5
    gc.collect()
    assert gone() is None and left() is None


def test_loops_of_two_threads_that_begin_at_once_both_get_a_schedule() -> None:
    """Two threads' loops begin their first durable runs while a closed loop's schedule is still held: each
    sweeps the closed loops, one after the other, and neither fails (a closed loop deleted twice, or the
    schedules changing under the other's sweep)."""
    first_asked, second_done = threading.Event(), threading.Event()

    class SlowToAnswer(asyncio.SelectorEventLoop):
        def is_closed(self) -> bool:  # the first thread's sweep stands here while the second's could run
            if threading.current_thread().name == "first" and not first_asked.is_set():
                first_asked.set()
                second_done.wait(0.5)
            return super().is_closed()

    clock = get_clock()
    closed = SlowToAnswer()
    _lease._schedule_of(closed, clock)
    closed.close()
    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]
    failed: list[BaseException] = []

    def begin(loop: asyncio.AbstractEventLoop, wait: threading.Event | None) -> None:
        if wait is not None:
            wait.wait(5)
        try:
            _lease._schedule_of(loop, clock)
        except BaseException as exc:
            failed.append(exc)
        finally:
            second_done.set()

    threads = [
        threading.Thread(target=begin, args=(loops[0], None), name="first"),
        threading.Thread(target=begin, args=(loops[1], first_asked), name="second"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failed == []
        assert closed not in _lease._schedules and all(loop in _lease._schedules for loop in loops)
    finally:
        for loop in loops:
            del _lease._schedules[loop]
            loop.close()
