"""Kill mode holds the C heap's free chunks before each fork and hands them back at a cap: however it is
interrupted or raced, no chunk is freed twice (glibc would abort the whole test session)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from durableflow.testing import _heap

libc = _heap._glibc()
pytestmark = pytest.mark.skipif(libc is None, reason="holds glibc's free chunks")


class HeapCalls:
    """``malloc`` and ``free`` as ``hold_free_chunks`` calls them, refusing (and noting) a chunk freed twice."""

    def __init__(self) -> None:
        self.real_malloc, self.real_free = libc.malloc, libc.free
        self.freed: set[int] = set()
        self.twice: list[int] = []

    def malloc(self, size: int) -> int | None:
        chunk = self.real_malloc(size)
        self.freed.discard(chunk)
        return chunk

    def free(self, chunk: int) -> None:
        if chunk in self.freed:
            self.twice.append(chunk)  # not freed again: glibc would abort
            return
        self.freed.add(chunk)
        self.real_free(chunk)


@pytest.fixture
def heap_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeapCalls]:
    """A heap with free chunks scattered through it, none held yet, and ``hold_free_chunks`` watched."""
    monkeypatch.setattr(_heap, "_held", [])
    monkeypatch.setattr(_heap, "_held_bytes", [0])
    blocks = [libc.malloc(200) for _ in range(400)]
    for block in blocks[::2]:
        libc.free(block)
    calls = HeapCalls()
    monkeypatch.setattr(libc, "malloc", calls.malloc)
    monkeypatch.setattr(libc, "free", calls.free)
    yield calls
    for chunk in [*_heap._held, *blocks[1::2]]:
        if chunk not in calls.freed:
            calls.real_free(chunk)


def held_at_the_cap() -> None:
    _heap.hold_free_chunks()
    assert len(_heap._held) >= 3
    _heap._held_bytes[0] = _heap._HELD_AT_MOST  # as a long session reaches it: the next call hands them back


class Interrupted(Exception):
    """What a signal handler raises (pytest-timeout's, Ctrl-C's) between two bytecodes."""


def test_held_chunks_handed_back_when_an_exception_interrupts_are_not_freed_again(
    heap_calls: HeapCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    held_at_the_cap()
    freed = [0]

    def free_then_interrupted(chunk: int) -> None:
        heap_calls.free(chunk)
        freed[0] += 1
        if freed[0] == 2:
            raise Interrupted

    monkeypatch.setattr(libc, "free", free_then_interrupted)
    with pytest.raises(Interrupted):
        _heap.hold_free_chunks()
    monkeypatch.setattr(libc, "free", heap_calls.free)

    _heap.hold_free_chunks()  # the next forks
    _heap._held_bytes[0] = _heap._HELD_AT_MOST
    _heap.hold_free_chunks()

    assert freed[0] == 2
    assert heap_calls.twice == []


def test_two_threads_handing_back_held_chunks_at_once_free_none_twice(
    heap_calls: HeapCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ctypes lets go of the GIL around each ``free``: another thread's exploration forks meanwhile."""
    held_at_the_cap()
    first = threading.get_ident()
    inside, other_done = threading.Event(), threading.Event()

    def free_and_let_the_other_in(chunk: int) -> None:
        heap_calls.free(chunk)
        if threading.get_ident() == first and not inside.is_set():
            inside.set()
            other_done.wait(10)

    def other() -> None:
        inside.wait(10)
        try:
            _heap.hold_free_chunks()
        finally:
            other_done.set()

    monkeypatch.setattr(libc, "free", free_and_let_the_other_in)
    thread = threading.Thread(target=other)
    thread.start()
    _heap.hold_free_chunks()
    thread.join(10)

    assert inside.is_set() and other_done.is_set()
    assert heap_calls.twice == []


def test_from_another_thread_nothing_is_asked_of_malloc(heap_calls: HeapCalls, monkeypatch: pytest.MonkeyPatch) -> None:
    """A life forked from another thread (an async test explores from one of its own) mallocs from that thread's
    arena, not from the heap whose free chunks would be held: asking malloc there was only time lost."""
    asked: list[int] = []

    def malloc(size: int) -> int | None:
        asked.append(size)
        return heap_calls.malloc(size)

    monkeypatch.setattr(libc, "malloc", malloc)
    thread = threading.Thread(target=_heap.hold_free_chunks, name="durableflow-explore")
    thread.start()
    thread.join(10)

    assert asked == []
    assert _heap._held == []
