"""``ctx.wait_for_event``: a step that waits for an event sent from outside, durably.

An event that no step accepts, sent while a step waits for events, is
parked in a collect buffer (so checkpoints keep it); a waiting step takes the
first parked event that matches its type and requirements. An event that
arrives while several steps wait answers each of them that it matches: the
first takes the parked event, the others each take a copy of their own,
stored like any event. A step restarted after a crash waits again from its
top and finds the event parked, and the request it sent (``waiter_event``)
is not sent twice; nor is it sent again by a retry that finds its answer.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _idle
from ._clock import get_clock
from ._events import Event, InputRequiredEvent, type_key

if TYPE_CHECKING:
    from ._runner import Runner
    from ._runstate import Delivery, DeliveryKey

E = TypeVar("E", bound=Event)

PARKED = "\0parked"  # the collect buffer of events sent from outside that no step accepts


def matches(event: Event, event_type: type[Event], requirements: dict[str, Any] | None) -> bool:
    if not isinstance(event, event_type):
        return False
    return all(event.get(key, _MISSING) == value for key, value in (requirements or {}).items())


_MISSING = object()


# Per run in this process: each parked event (by the id it was parked under), and the steps that were
# waiting when it came, each with the attempt that took it (0: none yet) — an attempt that failed gave it
# back, so the retry may take it again. Not stored: a restored run's parked events (and the copies taken
# before the crash, which snapshots keep as parked) go to every step that waits again.
_Shared = dict[int, tuple[Event, dict["DeliveryKey", int]]]
_shared: weakref.WeakKeyDictionary[Runner, _Shared] = weakref.WeakKeyDictionary()


def _shared_of(runner: Runner) -> _Shared:
    shared = _shared.get(runner)
    if shared is None:  # first look in this process: parked events are there only if the run was restored
        run = runner.run
        waiting = {key: 0 for key, delivery in run.deliveries.items() if delivery.waits}
        shared = _shared[runner] = {eid: (run.events[eid], dict(waiting)) for eid in run.buffers.get(PARKED) or ()}
    return shared


def take(runner: Runner, delivery: Delivery, event_type: type[E], requirements: dict[str, Any] | None) -> E | None:
    """The earliest parked event that fits, taken by this delivery (consumed when its completion is
    recorded): the parked one itself, or, when another step that was waiting for it took it first, a copy."""
    run = runner.run
    shared = _shared_of(runner)
    key = delivery.key
    parked = next((e for e in run.buffers.get(PARKED) or () if matches(run.events[e], event_type, requirements)), None)
    copy = next(
        (
            e
            for e, (event, waiting) in shared.items()
            if waiting.get(key, delivery.attempt) < delivery.attempt and matches(event, event_type, requirements)
        ),
        None,
    )
    if copy is not None and (parked is None or copy < parked):
        event = shared[copy][0]
        shared[copy][1][key] = delivery.attempt
        eid = run.add_event(event)
        run.refs[eid] += 1
        run.buffer(PARKED)  # the snapshot's buffer holds what running steps took: one more now
    elif parked is not None:
        eid, event = parked, run.events[parked]
        run.buffer(PARKED).remove(eid)
        if key in shared.get(eid, (None, {}))[1]:
            shared[eid][1][key] = delivery.attempt
    else:
        return None
    delivery.take(PARKED, eid)
    return event  # type: ignore[return-value]  # matches() checked the type


def park(runner: Runner, event: Event) -> bool:
    """Keep an event nobody accepts for a step that waits for events; ``False`` if none waits, or may.

    Before any step waits, an event of a type the workflow declares (in an annotation or
    ``extra_events``) is kept while the run still owes work: it can only be for a waiter,
    and the step that will wait for it may not have started yet.
    """
    run = runner.run
    waiting = {key: 0 for key, delivery in run.deliveries.items() if delivery.waits}
    cls = type(event)
    if not waiting and not (run.deliveries and runner.graph.types.get(type_key(cls)) is cls):
        return False
    eid = run.add_event(event)
    run.buffer(PARKED).append(eid)
    run.refs[eid] += 1
    shared = _shared_of(runner)
    for earlier, (_, steps) in list(shared.items()):
        for finished in steps.keys() - run.deliveries.keys():  # steps that completed take nothing more
            del steps[finished]
        if not steps:
            del shared[earlier]
    shared[eid] = (event, waiting)
    for wait in _idle.waits(runner):  # an input request it answers is settled in the write that stores it
        if wait.request is not None and matches(event, wait.event_type, wait.requirements):
            _settle(runner, wait.request)
    for waiter in list(runner.waiters or ()):
        if not waiter.done():
            waiter.set_result(None)  # every waiter looks again
    return True


def _show(runner: Runner, delivery: Delivery, request: Event) -> None:
    """A request no step takes is only shown to the stream's reader, once: counted with the step's sends. A step
    that runs again after a restart shows it again, uncounted: the resumed run's reader has not seen it."""
    delivery.sends += 1
    if delivery.sends <= delivery.replay_sends:
        runner.write_stream(request)
        return
    delivery.sent += 1
    runner.run.touch(delivery)
    runner.write_stream(request)


def _answered(runner: Runner, request: Event | None) -> None:
    """An input request a waiting step sent is answered: no longer awaited, so neither ``durableflow show`` nor a
    restore shows it again (asked twice, the reader answers twice, and the next question takes the spare answer)."""
    if isinstance(request, InputRequiredEvent) and (eid := _awaited(runner, request)) is not None:
        _settle(runner, eid)


def _awaited(runner: Runner, request: Event) -> int | None:
    """The id of the awaited input request equal to ``request`` (a step run again after a restart makes a copy)."""
    run = runner.run
    return next((eid for eid in reversed(run.awaiting) if run.events[eid] == request), None)


def _settle(runner: Runner, eid: int) -> None:
    run = runner.run
    if eid not in run.awaiting:
        return
    run.answered(eid)
    shown = run.events[eid]
    if any(ev is shown for ev in runner.reshown):  # put back on the stream by a restore: unread, it goes
        runner.stream = deque(ev for ev in runner.stream if ev is not shown)
    run.unref(eid)


async def wait_for(
    runner: Runner,
    delivery: Delivery,
    event_type: type[E],
    requirements: dict[str, Any] | None,
    waiter_event: Event | None,
    timeout: float | None,
) -> E:
    runner.graph.types.setdefault(type_key(event_type), event_type)  # storable in this process at least
    if delivery.attempt > 1 and (found := take(runner, delivery, event_type, requirements)) is not None:
        # a retry (the attempt number is stored: after a restart too) finds the answer its failed attempt took:
        # the person is not asked again
        _answered(runner, waiter_event)
        return found
    request = None
    if waiter_event is not None:
        if (
            delivery.sends < delivery.replay_sends
            and (found := take(runner, delivery, event_type, requirements)) is not None
        ):
            # asked before the restart and answered: asking again would leave a second answer parked for the
            # next question of its type to take
            delivery.sends += 1
            _answered(runner, waiter_event)
            return found
        if isinstance(waiter_event, InputRequiredEvent) or runner.graph.consumers(type(waiter_event)):
            runner.send(waiter_event, None, delivery)  # counted with the step's sends: not sent again on a re-run
            if isinstance(waiter_event, InputRequiredEvent):
                request = _awaited(runner, waiter_event)
        else:
            _show(runner, delivery, waiter_event)
    loop = asyncio.get_running_loop()
    delivery.waits = True
    delivery.running = False  # waiting for a person is not running: a crash now does not count against the step
    runner.run.touch(delivery)
    expired = False
    waiter: asyncio.Future[None] | None = None

    def expire() -> None:
        nonlocal expired
        expired = True
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    call, cancel, due = (None, None, None) if timeout is None else _time_out(delivery, timeout, expire)
    try:
        while True:
            found = take(runner, delivery, event_type, requirements)
            if found is not None:
                _answered(runner, waiter_event)
                return found
            if expired:
                delivery.sleeps[call] = _EXPIRED  # type: ignore[index]  # a retry waits its own full timeout
                raise TimeoutError(f"no {event_type.__name__} came within the {timeout} s timeout")
            waiter = loop.create_future()
            waiters = runner.waiters
            if waiters is None:
                waiters = runner.waiters = set()
            waiters.add(waiter)
            _idle.waiting(runner, delivery, _idle.Wait(delivery.step, event_type, requirements, due, waiter, request))
            try:
                await waiter
            finally:
                waiters.discard(waiter)
                _idle.resumed(runner, delivery, waiter)
    finally:
        if cancel is not None:
            cancel()
        delivery.running = True
        runner.run.touch(delivery)


_EXPIRED = -1.0
"""A wait's stored deadline once it timed out: the retry of the step waits anew."""


def _time_out(delivery: Delivery, timeout: float, expire: Callable[[], None]) -> tuple[int, Callable[[], None], float]:
    """Arm the wait's deadline on the durable clock, stored with the step's sleeps (in call order), so a wait
    resumed after a restart waits only the rest of its timeout: time spent crashed counts, as for ``ctx.sleep``.
    The time left also runs out on the loop's own clock: a clock that stands still (frozen for a test) does not
    keep a wait for a person waiting for ever.
    Returns the call's index, what cancels it, and when it falls due on the loop's clock."""
    clock = get_clock()
    call = delivery.sleep_calls
    delivery.sleep_calls += 1
    if call < len(delivery.sleeps) and delivery.sleeps[call] != _EXPIRED:
        deadline = delivery.sleeps[call]  # begun before a restart
    else:
        deadline = clock.now() + timeout
        if call < len(delivery.sleeps):
            delivery.sleeps[call] = deadline  # type: ignore[index]  # a list once it holds anything
        else:
            delivery.slept(deadline)
    loop = asyncio.get_running_loop()
    due = loop.time() + max(0.0, deadline - clock.now())
    stop_clock = clock.call_at(deadline, expire)
    handle = loop.call_at(due, expire)

    def cancel() -> None:
        stop_clock()
        handle.cancel()

    return call, cancel, due
