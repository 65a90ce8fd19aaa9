"""In-process crashes at named crash points, and a clock the tests move by hand.

A ``Crash`` is a ``BaseException``: step code cannot swallow it with
``except Exception``, and the engine abandons the run where it stands, as if
the process had died there.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from durableflow import Checkpointer, _crashpoints, _snapshot
from pytest_durableflow import ManualClock as _ManualClock


class Crash(BaseException):
    """The process dies here."""


@contextmanager
def crash_at(point: str, on_crash: Callable[[], None] | None = None) -> Iterator[list[str]]:
    """Crash the run at ``point`` (``name#hit``, hits counted from 1), calling ``on_crash`` first;
    yields the points reached, as ``name#hit``."""
    hits: Counter[str] = Counter()
    reached: list[str] = []

    def listener(name: str) -> None:
        hits[name] += 1
        reached.append(f"{name}#{hits[name]}")
        if reached[-1] == point:
            if on_crash is not None:
                on_crash()
            raise Crash(point)

    with _crashpoints.armed(listener):
        yield reached


@contextmanager
def recording_points() -> Iterator[list[str]]:
    """Record every crash point reached while the block runs, as ``name#hit``."""
    points: list[str] = []
    hits: Counter[str] = Counter()

    def listener(point: str) -> None:
        hits[point] += 1
        points.append(f"{point}#{hits[point]}")

    with _crashpoints.armed(listener):
        yield points


def stored_document(checkpointer: Checkpointer, run_id: str) -> dict[str, Any]:
    """The run as its last durable checkpoint holds it: the full record with every later delta applied."""
    return _snapshot.replay(checkpointer.load(run_id), run_id)


async def settle(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds; fail instead of hanging."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not condition():
        if loop.time() > give_up:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


class ManualClock(_ManualClock):
    """The plugin's ManualClock, noting every deadline it was asked for, whose sleepers a crash can kill."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        super().__init__(start)
        self.sleep_deadlines: list[float] = []
        """Every deadline a sleep waited for, in call order."""
        self.timer_deadlines: list[float] = []

    async def sleep_until(self, deadline: float) -> None:
        self.sleep_deadlines.append(deadline)
        await super().sleep_until(deadline)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Callable[[], None]:
        self.timer_deadlines.append(deadline)
        return super().call_at(deadline, callback)

    def kill_sleepers(self) -> None:
        """The process dies while steps sleep: each waiting sleep raises ``Crash``."""
        for _, waiter in self._sleepers:
            if not waiter.done():
                waiter.set_exception(Crash("killed while sleeping"))


def points_reached(run: Callable[[], Awaitable[Any]]) -> list[str]:
    """The crash points an uncrashed ``run()`` reaches, in order (for parametrizing at collection)."""

    async def record() -> list[str]:
        with recording_points() as points:
            await run()
        return points

    return asyncio.run(record())
