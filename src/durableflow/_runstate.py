"""What a run owes: accepted events, their pending deliveries, collect buffers, effect records.

Every change is also noted in a journal, so that a checkpoint writes only what
changed since the previous one. This module holds data only; the run loop in
``_runner`` decides when things change.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, final

from ._events import Event, StopEvent

DeliveryKey = tuple[int, str]  # (event id, step name)


@final
class Delivery:
    """One event owed to one step; it stays pending until the step's completion is recorded."""

    __slots__ = (
        "attempt",
        "crashes",
        "eid",
        "failures",
        "key",
        "persisted",
        "replay_sends",
        "running",
        "sends",
        "sent",
        "sleep_calls",
        "sleeps",
        "step",
        "taken",
        "waits",
    )

    def __init__(self, eid: int, step: str, sent: int = 0, sleeps: list[float] | None = None) -> None:
        # sleeps and taken are a shared empty tuple until first used: most deliveries never use them, and
        # an empty list would be two more objects per delivery for the garbage collector to walk
        self.eid = eid
        self.step = step
        self.key: DeliveryKey = (eid, step)
        """``(eid, step)``: its key in ``RunState.deliveries`` (made once, read on every change)."""
        self.sent = sent
        """Events this delivery's step has sent with ``ctx.send_event`` (durable with the delivery)."""
        self.sleeps: list[float] | tuple[()] = sleeps or ()
        """Deadlines of the step's ``ctx.sleep`` calls, in call order."""
        self.persisted = False
        self.attempt = 1
        """Which attempt of the step this is (or will be): durable, so it continues after a crash."""
        self.crashes = 0
        """Attempts during which the process died (durable): bounded by ``Workflow.step_crash_limit``."""
        self.waits = False
        """The step has called ``ctx.wait_for_event`` (durable): events nobody accepts are parked for it."""
        self.running = False
        """An attempt is under way: written with the next checkpoint, so a crash during it is counted."""
        self.failures: tuple[tuple[float, BaseException, float], ...] = ()  # (first try, last error, when): retry_info
        self.replay_sends = 0
        self.sends = 0
        self.sleep_calls = 0
        self.taken: list[tuple[str, int]] | tuple[()] = ()  # collect_events takes, undone if the attempt fails

    def take(self, buffer_id: str, eid: int) -> None:
        """Note an event taken from a buffer by this attempt."""
        taken = self.taken
        if isinstance(taken, tuple):
            self.taken = taken = []
        taken.append((buffer_id, eid))

    def slept(self, deadline: float) -> None:
        """Note the deadline of the step's next ``ctx.sleep`` call."""
        sleeps = self.sleeps
        if isinstance(sleeps, tuple):
            self.sleeps = sleeps = []
        sleeps.append(deadline)

    def begin_attempt(self) -> None:
        """Reset per-execution counters: sends already accepted and sleeps already begun are replayed."""
        self.replay_sends = self.sent
        self.sends = 0
        self.sleep_calls = 0


current_context: ContextVar[Any] = ContextVar("durableflow_current_context", default=None)
"""A weak reference to the context of the run whose worker task this is (``Context.get_step_context()``)."""

current_delivery: ContextVar[Delivery | None] = ContextVar("durableflow_current_delivery", default=None)
"""The delivery whose step is executing here (read by ``ctx.attempt``, ``ctx.sleep``...)."""


@final
class RunState:
    """The run's bookkeeping besides ``ctx.store``; everything here goes into checkpoints."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.status = "new"
        self.next_eid = 1
        self.deadline: float | None = None
        self.result: StopEvent | None = None
        self.error: dict[str, str] | None = None
        self.events: dict[int, Event] = {}
        self.refs: dict[int, int] = {}
        self.deliveries: dict[DeliveryKey, Delivery] = {}
        self.buffers: dict[str, list[int]] = {}
        self.effects: dict[str, str] = {}
        self.awaiting: list[int] | tuple[()] = ()  # a list once a step asks for input
        self.recoveries = 0
        """Times the run was resumed after its owner died, since a step last completed (poison-run backstop);
        -1 for a run ``wf.submit()`` stored that no worker has started yet."""
        self.seq = 0
        """Sequence number of the last checkpoint written (0: none yet)."""
        # The journal: what changed since the last checkpoint. The sets that change at every step are an empty
        # tuple again once a checkpoint takes them: a run waiting for its checkpoint to be written keeps none
        # alive for the garbage collector (a burst of concurrent runs would promote them all).
        self.new_events: set[int] | tuple[()] = ()
        self.gone_events: set[int] | tuple[()] = ()
        self.touched: set[DeliveryKey] | tuple[()] = ()
        self.gone: set[DeliveryKey] | tuple[()] = ()
        self.dirty_buffers: set[str] | tuple[()] = ()  # buffers the next record rewrites whole (a set once one is)
        self.appended: dict[str, list[int]] = {}
        """Buffers whose only change is events added at their end, and those events: the next record adds
        them (``buffers_add``) instead of rewriting the buffer, so a buffer growing to N events costs O(N)."""
        self.new_effects: set[str] | tuple[()] = ()  # a set once the run records an effect
        self.awaiting_dirty = False
        self.written: dict[str, Any] = {}
        """The run-level fields as last written: a delta repeats none that did not change. A dict rather than a
        tuple: one of only strings, numbers and None is never tracked by the garbage collector, a tuple is until a
        collection finds it so, and a burst of concurrent runs would promote each run's to the oldest generation."""

    def note_written(self) -> None:
        self.written = {
            "status": self.status,
            "next_eid": self.next_eid,
            "deadline": self.deadline,
            "error": self.error,
            "recoveries": self.recoveries,
        }

    def reset_journal(self) -> None:
        """Forget what changed: called once a checkpoint holding those changes is durable."""
        touched = self.touched
        if touched:
            deliveries = self.deliveries
            for key in touched:
                delivery = deliveries.get(key)
                if delivery is not None:
                    delivery.persisted = True
        self.new_events = self.gone_events = self.touched = self.gone = self.dirty_buffers = self.new_effects = ()
        if self.appended:
            self.appended.clear()
        self.awaiting_dirty = False
        self.note_written()

    # -- events --------------------------------------------------------------------

    def add_event(self, event: Event) -> int:
        eid = self.next_eid
        self.next_eid = eid + 1
        self.events[eid] = event
        self.refs[eid] = 0
        new = self.new_events
        if isinstance(new, tuple):
            self.new_events = new = set()
        new.add(eid)
        return eid

    def unref(self, eid: int) -> None:
        refs = self.refs[eid] - 1
        if refs:
            self.refs[eid] = refs
            return
        del self.refs[eid], self.events[eid]
        new = self.new_events
        if isinstance(new, set) and eid in new:
            new.discard(eid)
        else:
            gone = self.gone_events
            if isinstance(gone, tuple):
                self.gone_events = gone = set()
            gone.add(eid)

    # -- deliveries ----------------------------------------------------------------

    def add_delivery(self, eid: int, step: str) -> Delivery:
        delivery = Delivery(eid, step)
        self.deliveries[delivery.key] = delivery
        self.refs[eid] += 1
        self.touch_key(delivery.key)
        return delivery

    def touch(self, delivery: Delivery) -> None:
        self.touch_key(delivery.key)

    def touch_key(self, key: DeliveryKey) -> None:
        """The delivery ``key`` changed: the next checkpoint writes it."""
        touched = self.touched
        if isinstance(touched, tuple):
            self.touched = touched = set()
        touched.add(key)

    def finish_delivery(self, delivery: Delivery) -> None:
        key = delivery.key
        del self.deliveries[key]
        touched = self.touched
        if isinstance(touched, set):
            touched.discard(key)
        if delivery.persisted:
            gone = self.gone
            if isinstance(gone, tuple):
                self.gone = gone = set()
            gone.add(key)
        self.unref(delivery.eid)

    # -- collect buffers, awaited input, effects -----------------------------------

    def buffer(self, buffer_id: str) -> list[int]:
        """The buffer, to change as a whole: the next record rewrites it."""
        self.rewrite(buffer_id)
        if self.appended:
            self.appended.pop(buffer_id, None)
        return self.buffers.setdefault(buffer_id, [])

    def rewrite(self, buffer_id: str) -> None:
        """The next record writes buffer ``buffer_id`` whole."""
        dirty = self.dirty_buffers
        if isinstance(dirty, tuple):
            self.dirty_buffers = dirty = set()
        dirty.add(buffer_id)

    def buffer_append(self, buffer_id: str, eid: int) -> None:
        """Add ``eid`` at the end of the buffer: the next record adds it, unless it rewrites the buffer anyway."""
        self.buffers.setdefault(buffer_id, []).append(eid)
        if buffer_id not in self.dirty_buffers:
            self.appended.setdefault(buffer_id, []).append(eid)

    def await_input(self, eid: int) -> None:
        awaiting = self.awaiting
        if isinstance(awaiting, tuple):
            self.awaiting = awaiting = []
        awaiting.append(eid)
        self.refs[eid] += 1
        self.awaiting_dirty = True

    def answered(self, eid: int) -> None:
        """The input request ``eid`` is answered (the caller drops its reference once done with the event)."""
        self.awaiting.remove(eid)  # type: ignore[union-attr]  # a list once it holds anything
        self.awaiting_dirty = True

    def input_arrived(self) -> None:
        for eid in self.awaiting:
            self.unref(eid)
        self.awaiting = ()
        self.awaiting_dirty = True

    def record_effect(self, key: str, text: str) -> None:
        self.effects[key] = text
        new = self.new_effects
        if isinstance(new, tuple):
            self.new_effects = new = set()
        new.add(key)

    def restore_refs(self) -> None:
        """Recount references after loading a snapshot."""
        self.refs = dict.fromkeys(self.events, 0)
        for eid, _ in self.deliveries:
            self.refs[eid] += 1
        for eids in self.buffers.values():
            for eid in eids:
                self.refs[eid] += 1
        for eid in self.awaiting:
            self.refs[eid] += 1

    def error_of(self, exc: BaseException) -> dict[str, str]:
        cls = type(exc)
        return {"type": f"{cls.__module__}.{cls.__qualname__}", "message": str(exc)}
