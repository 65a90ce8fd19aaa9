"""Keeping a run's lease: renewals every third of its time to live, and a local deadline that stops the run
before the lease can lapse for the other workers.

The runs of one loop share two timers (``_Schedule``): one on the run's clock for the next renewal due, one on
the loop's clock for the next deadline. A run's lease costs a set entry rather than two timer handles, two
context copies and their closures, objects that each in-flight run would keep alive for the garbage collector
to walk; most runs end long before either timer fires.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, final

from . import _clock as _clocks
from ._clock import Clock, SystemClock, get_clock
from ._errors import DurableflowError, LeaseExpiredError, RunLeaseError

if TYPE_CHECKING:
    import asyncio

    from ._checkpointer import Checkpointer
    from ._runstate import RunState
    from ._storeio import StoreIO

LEASE_MARGIN = 0.2
"""The part of the lease's time to live a run keeps in hand: one that could not renew its lease for the rest
stops, before the lease lapses for the other workers (whose clocks, and the stop itself, may lag)."""
RETRY_RENEWAL = 0.1
"""After a renewal the store did not answer, the next is tried this part of the TTL later."""
_NEVER = float("inf")


@final
class LeaseKeeper:
    """Renews one run's lease every third of its time to live, until stopped, and stops the run if no
    renewal succeeded before the lease would lapse, less a margin: past that, another worker may take
    the run over, and two must never drive it at once.

    The renewals follow the run's clock (frozen time that jumps past one fires it); the deadline
    follows the loop's monotonic clock, which counts a frozen store's silence and a paused process.
    An object rather than closures that call each other: those would form a reference cycle holding
    the whole run until the garbage collector found it, and every durable run would leave one behind.
    """

    __slots__ = ("asked_at", "asked_on_loop", "due", "durable", "expired", "guarded", "lost", "schedule")

    def __init__(
        self,
        durable: LeaseHolder,
        guarded: Callable[[Callable[[], None]], Callable[[], None]],
        lost: Callable[[], None],
        expired: Callable[[], None],
    ) -> None:
        self.durable: LeaseHolder | None = durable
        self.guarded, self.lost, self.expired = guarded, lost, expired
        self.asked_at = self.asked_on_loop = 0.0
        self.due = durable.lease_until - durable.checkpointer.lease_ttl * 2 / 3  # on the run's clock
        self.schedule = _schedule_of(durable.loop, get_clock())
        self.schedule.add(self)

    def _deadline(self) -> None:
        """The loop's clock passed the run's deadline (the schedule checked it): stop driving the run."""
        if self.durable is None:
            return
        self.stop()
        self.expired()

    def _renew(self) -> None:
        durable = self.durable
        if durable is None:
            return
        self.asked_at, self.asked_on_loop = get_clock().now(), durable.loop.time()
        if durable.io.inline:
            self._renewed(self._renew_in_store())
            return
        pending = durable.io.call(durable.loop, self._renew_in_store)
        assert pending is not None
        pending.add_done_callback(self._answered)

    def _answered(self, done: asyncio.Future[bool | None]) -> None:
        self.guarded(lambda: self._renewed(done.result()))()

    def _renew_in_store(self) -> bool | None:
        """Whether this worker still holds the lease; ``None`` if the store did not say."""
        durable = self.durable
        if durable is None:
            return True
        try:
            return durable.checkpointer.renew(durable.run.run_id, durable.owner)
        except DurableflowError:
            return None

    def _renewed(self, held: bool | None) -> None:
        durable = self.durable
        if durable is None:  # stopped meanwhile
            return
        ttl = durable.checkpointer.lease_ttl
        if held is None:  # unanswered: try again soon, while the deadline stands
            self.schedule.renew_at(self, get_clock().now() + ttl * RETRY_RENEWAL)
            return
        if not held:
            self.lost()
            return
        durable.leased(self.asked_at, self.asked_on_loop)
        self.schedule.renew_at(self, self.asked_at + ttl / 3)

    def stop(self) -> None:
        durable = self.durable
        if durable is not None:
            self.durable = None
            self.schedule.discard(self, durable.loop)

    __call__ = stop  # the keeper is its own stop: a run keeps no bound method of it


class LeaseHolder:
    """A run's side of its lease: when it lapses, whether it is in doubt, renewing it now (``RunCheckpoints``)."""

    checkpointer: Checkpointer
    loop: asyncio.AbstractEventLoop
    io: StoreIO
    run: RunState
    owner: str

    # Defaults of what most runs never change, kept on the class: each run's instance sets only what it must.
    lease_until = _NEVER
    """When the lease lapses unless renewed, on the run's clock: the time the last renewal that succeeded
    (or the acquire) was sent, plus the TTL. Known once ``keep_lease`` or ``leased`` set it."""
    drive_until = _NEVER
    """The same, less a safety margin, on the loop's monotonic clock: past it the run stops (``keep_lease``)."""
    doubt_after = _NEVER
    """``lease_until`` less the margin: past it no step or effect begins before ``confirm_lease``."""

    def leased(self, at: float, on_loop: float) -> None:
        """The lease was acquired by a call sent at ``at`` (run's clock), ``on_loop`` (loop's clock)."""
        ttl = self.checkpointer.lease_ttl
        self.lease_until = at + ttl
        self.drive_until = on_loop + ttl * (1 - LEASE_MARGIN)
        self.doubt_after = self.lease_until - ttl * LEASE_MARGIN

    def keep_lease(
        self,
        guarded: Callable[[Callable[[], None]], Callable[[], None]],
        lost: Callable[[], None],
        expired: Callable[[], None],
    ) -> Callable[[], None]:
        """Renew the lease every third of its time to live until the returned callable is called;
        ``lost()`` when another worker has it, ``expired()`` when no renewal succeeded before the lease
        would lapse, less a margin. ``guarded`` wraps each timer callback."""
        if self.lease_until == _NEVER:  # a new run: its create, sent after this, leases it for longer
            self.leased(get_clock().now(), self.loop.time())
        return LeaseKeeper(self, guarded, lost, expired)

    def lease_in_doubt(self) -> bool:
        """Whether the renewal that would show this worker still holds the lease is overdue (the process was
        paused, or the store did not answer): then no step or effect may begin before ``confirm_lease``."""
        return _clocks._clock.now() >= self.doubt_after or self.loop.time() >= self.drive_until  # (get_clock()'s)

    def unrenewed(self) -> float:
        """Seconds since the last renewal that succeeded was sent."""
        ttl = self.checkpointer.lease_ttl
        return max(
            get_clock().now() - (self.lease_until - ttl),
            self.loop.time() - (self.drive_until - ttl * (1 - LEASE_MARGIN)),
        )

    async def confirm_lease(self) -> None:
        """Renew the lease now: ``RunLeaseError`` if another worker has it (it may have run this step or effect),
        ``LeaseExpiredError`` if the store cannot say."""
        asked_at, on_loop = get_clock().now(), self.loop.time()
        run_id, owner, checkpointer = self.run.run_id, self.owner, self.checkpointer

        def renew() -> bool:
            return checkpointer.renew(run_id, owner)

        try:
            held = await self.io.ask(self.loop, renew)
        except DurableflowError as exc:
            raise LeaseExpiredError(run_id, self.lease_until, self.unrenewed(), str(exc)) from None
        if not held:
            raise RunLeaseError.lost(run_id, None, None)
        self.leased(asked_at, on_loop)


@final
class _Schedule:
    """The lease keepers of one loop and one clock, and the two timers that serve them all.

    Each timer is armed for the earliest time any keeper needs (a renewal on ``clock``, a deadline on the
    loop's clock) and, when it fires, serves the keepers that are due and arms itself for the next.

    Once no keeper is left, both timers are cancelled and the schedule leaves ``_schedules``: a test clock
    that forgets its timers between scenarios must not leave it believing one is armed, and an armed
    deadline holds its loop (as the handle's loop and the callback's argument), so that the loop's weakly
    keyed entry would keep the loop itself alive: every closed loop that ever ran a durable run, and every
    clock used on a long-lived loop, would stay in memory. The loop and the clock are held only while one
    of their runs keeps a lease; a run that starts when none is in flight arms the timers afresh. On the
    real clock, which outlives every loop, the timers are left armed instead (only their handles let go, so
    nothing here holds the loop): back-to-back runs then arm none.
    """

    __slots__ = ("cancel_renewal", "clock", "deadline", "deadline_at", "keepers", "renewal_at", "sweeping")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.keepers: set[LeaseKeeper] = set()
        self.renewal_at = self.deadline_at = _NEVER
        self.cancel_renewal: Callable[[], None] | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.sweeping = False  # renewals are being sent: the timer is armed once they all are

    def add(self, keeper: LeaseKeeper) -> None:
        self.keepers.add(keeper)
        durable = keeper.durable
        assert durable is not None
        if keeper.due < self.renewal_at and not self.sweeping:
            self._arm_renewal(keeper.due)
        if durable.drive_until < self.deadline_at:
            self._arm_deadline(durable.loop, durable.drive_until)

    def discard(self, keeper: LeaseKeeper, loop: asyncio.AbstractEventLoop) -> None:
        keepers = self.keepers
        keepers.discard(keeper)
        if keepers:
            return
        if type(self.clock) is SystemClock:
            # The real clock lives as long as the process: the timers stay armed for the next run, which then
            # arms none (back-to-back runs would otherwise arm and cancel two timers each). Only the handles
            # are let go: held here they would hold the loop, and through this entry keep it alive once closed.
            # A timer that fires with nobody due does nothing.
            self.cancel_renewal, self.deadline = None, None
            return
        if self.cancel_renewal is not None:
            self.cancel_renewal()
            self.cancel_renewal, self.renewal_at = None, _NEVER
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline, self.deadline_at = None, _NEVER
        with _schedules_lock:
            by_clock = _schedules.get(loop)
            if by_clock is not None and by_clock.get(id(self.clock)) is self:
                del by_clock[id(self.clock)]
                if not by_clock:
                    del _schedules[loop]

    def renew_at(self, keeper: LeaseKeeper, at: float) -> None:
        keeper.due = at
        if at < self.renewal_at and not self.sweeping:
            self._arm_renewal(at)

    # -- renewals, on the run's clock --------------------------------------------------

    def _arm_renewal(self, at: float) -> None:
        if self.cancel_renewal is not None:
            self.cancel_renewal()
        self.renewal_at = at
        self.cancel_renewal = self.clock.call_at(at, functools.partial(self._renewals, at))

    def _renewals(self, armed_at: float) -> None:
        if armed_at != self.renewal_at:  # a timer let go (``discard``) and since superseded by another
            return
        self.cancel_renewal, self.renewal_at = None, _NEVER
        now = self.clock.now()
        self.sweeping = True
        try:
            for keeper in [k for k in self.keepers if k.due <= now]:
                keeper.due = _NEVER  # until its renewal is answered
                keeper.guarded(keeper._renew)()  # a crash abandons that run alone
        finally:
            self.sweeping = False
            soonest = min([k.due for k in self.keepers], default=_NEVER)
            if soonest < self.renewal_at:
                self._arm_renewal(soonest)

    # -- deadlines, on the loop's clock ------------------------------------------------

    def _arm_deadline(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline_at = at
        self.deadline = loop.call_at(at, self._deadlines, loop, at)

    def _deadlines(self, loop: asyncio.AbstractEventLoop, armed_at: float) -> None:
        if armed_at != self.deadline_at:  # a timer let go (``discard``) and since superseded by another
            return
        self.deadline, self.deadline_at = None, _NEVER
        now = loop.time()
        for keeper in [k for k in self.keepers if k.durable is not None and k.durable.drive_until <= now]:
            keeper.guarded(keeper._deadline)()
        soonest = min([k.durable.drive_until for k in self.keepers if k.durable is not None], default=_NEVER)
        if soonest < self.deadline_at:
            self._arm_deadline(loop, soonest)


_schedules: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Schedule]] = weakref.WeakKeyDictionary()
_schedules_lock = threading.Lock()
"""Held to change ``_schedules``: loops of other threads start runs (and sweep closed loops) at the same time."""


def _schedule_of(loop: asyncio.AbstractEventLoop, clock: Clock) -> _Schedule:
    """The schedule of ``loop`` and ``clock`` (keyed by the clock's id: the schedule holds the clock, so that
    id stays its own)."""
    by_clock = _schedules.get(loop)
    if by_clock is None:
        with _schedules_lock:  # another thread's sweep would delete the same loop, or see the dict grow
            # A loop closed while a run was in flight never had its schedule emptied, and the schedule holds
            # that loop (its runs, its timers) so that its weak key never lapses: dropped as the next loop begins.
            for closed in [other for other in _schedules if other.is_closed()]:
                del _schedules[closed]
            by_clock = _schedules[loop] = {}
    schedule = by_clock.get(id(clock))
    if schedule is None:
        schedule = by_clock[id(clock)] = _Schedule(clock)
    return schedule
