"""Shared fixtures for the core tests: small waiting helpers, so no test hangs the suite."""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def until() -> Callable[..., Awaitable[None]]:
    """Wait (briefly) until ``condition()`` is true, so tests can pause a run at a known point."""

    async def wait(condition: Callable[[], bool], timeout: float = 3.0) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while not condition():
            if loop.time() > give_up:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.001)

    return wait


@pytest.fixture
def finish() -> Callable[..., Awaitable[Any]]:
    """Await a handler (or any awaitable) with a bound, so a hung run fails instead of stalling."""

    async def wait(awaitable: Awaitable[Any], timeout: float = 5.0) -> Any:
        return await asyncio.wait_for(asyncio.ensure_future(awaitable), timeout)

    return wait


class ManualClock:
    """A clock that moves only when a test says so (durableflow reads every deadline through it)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep_until(self, deadline: float) -> None:
        while self.t < deadline:
            await asyncio.sleep(0.001)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Callable[[], None]:
        async def wait() -> None:
            await self.sleep_until(deadline)
            callback()

        task = asyncio.get_running_loop().create_task(wait())
        return task.cancel


@pytest.fixture
def manual_clock() -> Iterator[ManualClock]:
    """Install a ManualClock with durableflow.use_clock for the test."""
    from durableflow import use_clock

    with use_clock(ManualClock()) as clock:
        yield clock  # type: ignore[misc]
