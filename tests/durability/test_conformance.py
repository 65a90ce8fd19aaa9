"""The public checkpointer conformance suite, run against every checkpointer durableflow ships."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import pytest

from durableflow import Checkpointer, MemoryCheckpointer, PostgresCheckpointer, RedisCheckpointer, SQLiteCheckpointer
from pytest_durableflow.conformance import CheckpointerConformance


class Opened:
    """Opens checkpointers over one store and closes them all when the test ends."""

    def __init__(self, factory: Callable[[], Checkpointer]) -> None:
        self.factory = factory
        self.opened: list[Checkpointer] = []

    def __call__(self) -> Checkpointer:
        store = self.factory()
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture
def opened() -> Iterator[Callable[[Callable[[], Checkpointer]], Opened]]:
    """Wrap a checkpointer factory so that everything it opened is closed after the test."""
    made: list[Opened] = []

    def make(factory: Callable[[], Checkpointer]) -> Opened:
        made.append(Opened(factory))
        return made[-1]

    yield make
    for each in made:
        each.close_all()


class TestMemoryCheckpointer(CheckpointerConformance):
    survives_process = False

    @pytest.fixture
    def checkpointer(self) -> Checkpointer:
        return MemoryCheckpointer()


class TestSQLiteCheckpointer(CheckpointerConformance):
    @pytest.fixture
    def store(self, tmp_path: Path, opened: Callable[[Callable[[], Checkpointer]], Opened]) -> Opened:
        return opened(lambda: SQLiteCheckpointer(tmp_path / "runs.db"))

    @pytest.fixture
    def checkpointer(self, store: Opened) -> Checkpointer:
        return store()

    @pytest.fixture
    def reopen(self, store: Opened) -> Opened:
        return store


class TestSQLiteCheckpointerFsync(TestSQLiteCheckpointer):
    @pytest.fixture
    def store(self, tmp_path: Path, opened: Callable[[Callable[[], Checkpointer]], Opened]) -> Opened:
        return opened(lambda: SQLiteCheckpointer(tmp_path / "runs.db", durability="fsync"))


class TestRedisCheckpointer(CheckpointerConformance):
    @pytest.fixture
    def store(self, redis_url: str, opened: Callable[[Callable[[], Checkpointer]], Opened]) -> Opened:
        prefix = f"conformance-{uuid.uuid4().hex[:8]}"
        return opened(lambda: RedisCheckpointer(redis_url, prefix=prefix))

    @pytest.fixture
    def checkpointer(self, store: Opened) -> Checkpointer:
        return store()

    @pytest.fixture
    def reopen(self, store: Opened) -> Opened:
        return store


class TestRedisCheckpointerOnFakeredis(CheckpointerConformance):
    survives_process = False  # the fake server lives in this process's memory

    @pytest.fixture
    def store(self, opened: Callable[[Callable[[], Checkpointer]], Opened]) -> Opened:
        server = fakeredis.FakeServer()
        return opened(lambda: RedisCheckpointer(fakeredis.FakeRedis(server=server)))

    @pytest.fixture
    def checkpointer(self, store: Opened) -> Checkpointer:
        return store()

    @pytest.fixture
    def reopen(self, store: Opened) -> Opened:
        return store


class TestPostgresCheckpointer(CheckpointerConformance):
    @pytest.fixture
    def store(self, postgres_session_url: str, opened: Callable[[Callable[[], Checkpointer]], Opened]) -> Opened:
        schema = f"conformance_{uuid.uuid4().hex[:8]}"  # an empty store per test, in the session's database
        return opened(lambda: PostgresCheckpointer(postgres_session_url, schema=schema))

    @pytest.fixture
    def checkpointer(self, store: Opened) -> Checkpointer:
        return store()

    @pytest.fixture
    def reopen(self, store: Opened) -> Opened:
        return store
