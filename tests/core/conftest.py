"""Shared fixtures for the core tests: small waiting helpers, so no test hangs the suite."""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from pytest_durableflow import ManualClock


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


@pytest.fixture
def manual_clock() -> Iterator[ManualClock]:
    """Install a ManualClock with durableflow.use_clock for the test."""
    from durableflow import use_clock

    with use_clock(ManualClock()) as clock:
        yield clock  # type: ignore[misc]
