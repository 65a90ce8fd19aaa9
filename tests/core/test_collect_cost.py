"""``ctx.collect_events`` takes N events from its buffer in one pass over it, not one removal per event."""

from __future__ import annotations

from durableflow import Event
from durableflow._runstate import Delivery, RunState
from durableflow._step_calls import choose, collect


class Done(Event):
    n: int


class Late(Event):
    """Buffered too, but not what this call collects: it stays."""


class _CountingList(list[int]):
    """A buffer that counts the elements its changes scan or move: what taking events out of it costs."""

    moved = 0

    def remove(self, value: int) -> None:
        self.moved += len(self)  # scanned up to it, moved after it
        super().remove(value)

    def pop(self, index: int = -1) -> int:  # type: ignore[override]
        self.moved += len(self) - (index % len(self))
        return super().pop(index)

    def clear(self) -> None:
        self.moved += len(self)
        super().clear()

    def __setitem__(self, index: object, value: object) -> None:  # type: ignore[override]
        if isinstance(index, slice):
            self.moved += len(self)
        super().__setitem__(index, value)  # type: ignore[index, assignment]


def test_collecting_n_events_takes_them_from_the_buffer_in_linear_time() -> None:
    """The N-th arrival completes a fan-in of N, with an event of another type buffered after them: the
    N taken go, in one pass (one remove() each scanned and moved the buffer N times, O(N²))."""
    n = 3000
    run, delivery = RunState("r"), Delivery(0, "gather")
    eids = [run.add_event(Done(n=i)) for i in range(n)]
    late = run.add_event(Late())
    buffer = _CountingList([*eids[:-1], late])
    run.buffers = {"b": buffer}
    for eid in buffer:
        run.refs[eid] += 1
    delivery = Delivery(eids[-1], "gather")

    taken = collect(run, delivery, run.events[eids[-1]], [Done] * n, "b")

    assert taken is not None and [ev.n for ev in taken] == [*range(n - 1), n - 1]  # type: ignore[attr-defined]
    assert run.buffers["b"] == [late]
    assert [eid for _, eid in delivery.taken] == [*eids[:-1], eids[-1]]
    assert buffer.moved <= 3 * n  # one remove() each: about n * n = 9,000,000


def test_choosing_many_of_one_type_fills_each_slot_with_the_earliest_that_fits() -> None:
    """Slots of one type fill in buffer order; a subclass fills a slot its base type left open."""

    class Special(Done):
        pass

    run = RunState("r")
    n = 20_000
    eids = [run.add_event(Special(n=i) if i % 7 == 0 else Done(n=i)) for i in range(n)]
    late = run.add_event(Late())

    picked = choose(run, [late, *eids], [Done] * (n - 1) + [Late])

    assert picked == [*eids[: n - 1], late]
    assert choose(run, eids, [Done] * (n + 1)) is None


class _ScannedList(list[int]):
    """A buffer that counts the elements membership tests scan."""

    scanned = 0

    def __contains__(self, value: object) -> bool:
        self.scanned += len(self)
        return super().__contains__(value)


def test_a_fan_in_of_n_does_not_scan_its_buffer_at_each_arrival() -> None:
    """Each of N arrivals is buffered without looking for itself there first (it cannot be there: only its
    delivery holds it), while one delivered again after a restart, already buffered, is not buffered twice."""
    n = 3000
    run = RunState("r")
    buffer = _ScannedList()
    run.buffers = {"b": buffer}
    deliveries = [run.add_delivery(run.add_event(Done(n=i)), "gather") for i in range(n)]
    for delivery in deliveries[:-1]:
        assert collect(run, delivery, run.events[delivery.eid], [Done] * n, "b") is None
    again = deliveries[0]  # resumed: its step runs again, its event already buffered
    assert collect(run, again, run.events[again.eid], [Done] * n, "b") is None
    assert run.buffers["b"] == [d.eid for d in deliveries[:-1]]

    taken = collect(run, deliveries[-1], run.events[deliveries[-1].eid], [Done] * n, "b")

    assert taken is not None and [ev.n for ev in taken] == list(range(n))  # type: ignore[attr-defined]
    assert buffer.scanned <= 2 * n  # a scan at each arrival: about n * n / 2 = 4,500,000
