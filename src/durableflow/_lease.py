"""Keeping a run's lease: renewals every third of its time to live, and a local deadline that stops the run
before the lease can lapse for the other workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, final

from ._clock import get_clock
from ._errors import DurableflowError

if TYPE_CHECKING:
    import asyncio

    from ._checkpointing import RunCheckpoints

LEASE_MARGIN = 0.2
"""The part of the lease's time to live a run keeps in hand: one that could not renew its lease for the rest
stops, before the lease lapses for the other workers (whose clocks, and the stop itself, may lag)."""
RETRY_RENEWAL = 0.1
"""After a renewal the store did not answer, the next is tried this part of the TTL later."""


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

    __slots__ = ("asked_at", "asked_on_loop", "cancel", "cancel_deadline", "durable", "expired", "guarded", "lost")

    def __init__(
        self,
        durable: RunCheckpoints,
        guarded: Callable[[Callable[[], None]], Callable[[], None]],
        lost: Callable[[], None],
        expired: Callable[[], None],
    ) -> None:
        self.durable: RunCheckpoints | None = durable
        self.guarded, self.lost, self.expired = guarded, lost, expired
        self.cancel: Callable[[], None] | None = None
        self.cancel_deadline: Callable[[], None] | None = None
        self.asked_at = self.asked_on_loop = 0.0
        self._schedule(durable.lease_until - durable.checkpointer.lease_ttl * 2 / 3)
        self._watch()

    def _schedule(self, at: float) -> None:
        if self.durable is not None:
            # on the run's clock, not the loop's: frozen time that jumps past a renewal fires it
            self.cancel = get_clock().call_at(at, self.guarded(self._renew))

    def _watch(self) -> None:
        durable = self.durable
        if durable is not None:
            self.cancel_deadline = durable.loop.call_at(durable.drive_until, self.guarded(self._deadline)).cancel

    def _deadline(self) -> None:
        durable = self.durable
        if durable is None:
            return
        if durable.loop.time() < durable.drive_until:  # renewed since this was set: wait for the new deadline
            self._watch()
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
            self._schedule(get_clock().now() + ttl * RETRY_RENEWAL)
            return
        if not held:
            self.lost()
            return
        durable.leased(self.asked_at, self.asked_on_loop)
        self._schedule(self.asked_at + ttl / 3)

    def stop(self) -> None:
        self.durable = None
        for cancel in (self.cancel, self.cancel_deadline):
            if cancel is not None:
                cancel()
        self.cancel = self.cancel_deadline = None
