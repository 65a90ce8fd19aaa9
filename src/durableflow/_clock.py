"""The one clock every deadline is read from: durable sleeps, retry delays, timeouts, leases.

Deadlines are wall-clock seconds (``time.time()``) so that they mean the same
thing in the process that resumes a run; swapping the clock (frozen time in
tests) changes all of them at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Clock(Protocol):
    """Where durableflow reads the time and waits for deadlines."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline`` (durable sleeps, retry delays)."""
        ...

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the running loop at ``deadline``; returns a cancel function."""
        ...


class SystemClock:
    """The real time; ``time.time`` is looked up on each call so freezegun can patch it."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Callable[[], None]:
        handle = asyncio.get_running_loop().call_later(max(0.0, deadline - time.time()), callback)
        return handle.cancel


_clock: Clock = SystemClock()


def get_clock() -> Clock:
    """The clock in force."""
    return _clock


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Read all time from ``clock`` while the block runs (the ``frozen_clock`` fixture uses this)."""
    global _clock
    previous, _clock = _clock, clock
    try:
        yield clock
    finally:
        _clock = previous
