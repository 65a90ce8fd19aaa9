"""When a run can make no progress on its own: it is *idle*.

A run is idle while it has not ended, no step is due (every queued delivery waits for a worker its step does
not have free) and every step under way is waiting in ``ctx.wait_for_event`` with no timeout for an event not
sent yet, or whose timeout is more than ``within`` seconds away. Nothing in the run can change that: only an
event sent from outside can. A step that sleeps (``ctx.sleep``), retries after a delay, waits with a timeout
that comes sooner, or runs at all is progress to come. A far timeout is not: ``ctx.wait_for_event`` times out
after 2000 s unless told otherwise, and its timeout only fails the step with ``TimeoutError``; nor is the run's
own ``timeout`` (it can only end the run as timed out, and a stored run keeps its deadline).

A run becomes idle only when a worker finishes its last step (``Runner._worker``) or when a step starts
waiting (``_waiters.wait_for``); both call ``check``, which costs nothing while nobody ``watch``es.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._events import Event
    from ._runner import Runner
    from ._runstate import Delivery, DeliveryKey


@dataclass(frozen=True)
class Wait:
    """A step waiting in ``ctx.wait_for_event``: what for, and when it gives up (loop time; ``None``: never)."""

    step: str
    event_type: type[Event]
    requirements: dict[str, Any] | None
    deadline: float | None
    waiter: asyncio.Future[None]
    request: int | None = None
    """The event id of the input request (``InputRequiredEvent``) the step sent, still awaited."""


_waits: weakref.WeakKeyDictionary[Runner, dict[DeliveryKey, Wait]] = weakref.WeakKeyDictionary()
watches: weakref.WeakKeyDictionary[Runner, asyncio.Future[None]] = weakref.WeakKeyDictionary()
"""The runs someone watches, each with the future ``watch`` gave them (done once the run is idle)."""


def waiting(runner: Runner, delivery: Delivery, wait: Wait) -> None:
    """A step starts waiting for an event (``wait_for``), until ``resumed``."""
    waits = _waits.get(runner)
    if waits is None:
        waits = _waits[runner] = {}
    waits[delivery.key] = wait
    if watches:
        check(runner)


def resumed(runner: Runner, delivery: Delivery, waiter: asyncio.Future[None]) -> None:
    waits = _waits.get(runner)
    if waits is not None and (wait := waits.get(delivery.key)) is not None and wait.waiter is waiter:
        del waits[delivery.key]


def waits(runner: Runner) -> list[Wait]:
    """The steps waiting for events now, in the steps' order."""
    order = list(runner.graph.steps)
    return sorted((_waits.get(runner) or {}).values(), key=lambda wait: order.index(wait.step))


WITHIN = 60.0
"""A wait that times out sooner than this (seconds) is progress to come; a later one is not."""


def idle(runner: Runner, within: float = WITHIN) -> bool:
    """The run can make no progress on its own in the next ``within`` seconds (see the module's doc)."""
    if runner.done or runner.ending or runner.spawn_scheduled:
        return False
    steps, busy = runner.graph.steps, runner.busy
    if any(busy[name] < steps[name].num_workers for name in runner.ready):
        return False  # a step is due
    blocked, soon = 0, runner.loop.time() + within
    for wait in (_waits.get(runner) or {}).values():
        if wait.waiter.done() or (wait.deadline is not None and wait.deadline <= soon):
            return False  # an event that has just come, or a timeout to come
        blocked += 1
    return runner.running == blocked


def watch(runner: Runner) -> asyncio.Future[None]:
    """A future done once the run is idle: at once if it is now (the run's entry goes with the run)."""
    future = watches.get(runner)
    if future is None or future.done():
        future = watches[runner] = runner.loop.create_future()
    check(runner)
    return future


def check(runner: Runner) -> None:
    """Tell the run's watcher, if it has one, that the run is idle (when it is)."""
    future = watches.get(runner)
    if future is not None and not future.done() and idle(runner):
        future.set_result(None)
