"""Fixtures for the durability tests: stores that outlive a crashed engine, hook recording, a manual clock."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from pytest_redis import factories

from durableflow import (
    Checkpointer,
    MemoryCheckpointer,
    RedisCheckpointer,
    SQLiteCheckpointer,
    hookimpl,
    plugin_manager,
    use_clock,
)

from .crashing import ManualClock

redis_restartable_proc = factories.redis_proc(executable=shutil.which("redis-server") or "/usr/bin/redis-server")
"""A redis-server of its own, for the test that stops and restarts it."""


@dataclass
class Store:
    """One place runs live; ``open()`` gives a new checkpointer over it, as a restarted process would."""

    kind: str
    open_new: Callable[[], Checkpointer]
    opened: list[Checkpointer] = field(default_factory=list)

    def open(self) -> Checkpointer:
        checkpointer = self.open_new()
        self.opened.append(checkpointer)
        return checkpointer


def _store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "memory":  # one object: it cannot outlive the process, only the engine
        memory = MemoryCheckpointer()
        return Store(kind, lambda: memory)
    if kind == "sqlite":
        return Store(kind, lambda: SQLiteCheckpointer(tmp_path / "runs.db"))
    if kind == "fakeredis":
        server = fakeredis.FakeServer()
        return Store(kind, lambda: RedisCheckpointer(fakeredis.FakeRedis(server=server)))
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"durability-{uuid.uuid4().hex[:8]}"
        return Store(kind, lambda: RedisCheckpointer(url, prefix=prefix))
    raise ValueError(kind)


@pytest.fixture
def make_store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Store]]:
    """Make a store of a kind (memory, sqlite, fakeredis, redis); every checkpointer opened is closed at the end."""
    made: list[Store] = []

    def make(kind: str) -> Store:
        made.append(_store(kind, tmp_path / f"store-{len(made)}", request))
        return made[-1]

    yield make
    for store in made:
        for checkpointer in store.opened:
            checkpointer.close()


@pytest.fixture(params=["memory", "sqlite", "fakeredis"])
def store(request: pytest.FixtureRequest, make_store: Callable[[str], Store]) -> Store:
    """A store of each kind whose server does not matter to the test."""
    return make_store(request.param)


class HookRecorder:
    """A durableflow plugin that notes every checkpoint written and every step that finished."""

    def __init__(self) -> None:
        self.checkpoints: list[tuple[str, int, bool]] = []
        self.finished_steps: list[tuple[str, str, Any, Exception | None]] = []
        self.on_checkpoint: Callable[[str, int], None] | None = None

    @hookimpl
    def durableflow_checkpoint_written(self, run_id: str, seq: int, full: bool) -> None:
        self.checkpoints.append((run_id, seq, full))
        if self.on_checkpoint is not None:
            self.on_checkpoint(run_id, seq)

    @hookimpl
    def durableflow_step_finished(
        self, run_id: str, step: str, event: Any, output: Any, error: Exception | None
    ) -> None:
        self.finished_steps.append((run_id, step, event, error))


@pytest.fixture
def hooks() -> Iterator[HookRecorder]:
    """A registered hook recorder, unregistered after the test."""
    recorder = HookRecorder()
    plugin_manager.register(recorder)
    try:
        yield recorder
    finally:
        plugin_manager.unregister(recorder)


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    """durableflow reads all time from a clock that moves only when the test advances it."""
    manual = ManualClock()
    with use_clock(manual):
        yield manual
