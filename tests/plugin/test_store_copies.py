"""The copies of a store that crash scenarios resume on are the user's store again: its class (a subclass of
a checkpointer, from a store factory) and every option it was made with (a record key, a timeout).

A copy on the base class, or without the key, resumes the run on another store than the user's: the overrides
of a subclass never run in resumed lives, and a keyed store's sealed records read as tampered with."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durableflow import Checkpointer, Record, RedisCheckpointer, SQLiteCheckpointer
from durableflow.testing import explore
from durableflow.testing._stores import Stores
from durableflow.testing._zygote import open_store, store_address

from .flows import ChargeAsEffect
from .test_planted_bugs import PAYMENTS, SEED

START = {"order": "A-1", "cents": 500}
KEY = "a record key of the user's, at least 32 bytes long"
ACQUIRED = "store-copies-test:acquired"
"""The list each ``Resumes`` pushes its class's name to when a worker asks for a run: what every life ran on."""


class Resumes(RedisCheckpointer):
    """A user's subclass: it counts, in the server itself (lives of kill mode are processes of their own),
    every worker that asked it for a run: a resume."""

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        self.client.rpush(ACQUIRED, type(self).__name__)
        super().acquire(run_id, owner, steal_from)


def crash_scenarios(report: Any) -> list[str]:
    """The scenarios that crash the run and resume it (not the zombies, the probe or the read-back)."""
    return [o.id for o in report.scenarios if "@" not in o.id]


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_redis_checkpointer_subclass_from_a_factory_is_what_resumed_lives_run_on(mode: str, redis_url: str) -> None:
    """Before, a capture copied a ``RedisCheckpointer`` subclass's keys on the server into a plain
    ``RedisCheckpointer``: resumed lives ran on the base class, and the subclass never saw a resume."""
    import redis

    admin = redis.Redis.from_url(redis_url)
    prefixes = (f"user-{n}" for n in itertools.count())
    report = explore(
        ChargeAsEffect, START, mode=mode, store=lambda: Resumes(redis_url, prefix=next(prefixes)), seed=SEED,
        **PAYMENTS,
    )  # fmt: skip

    assert report.ok, report.failure_text()
    resumed = [name.decode() for name in admin.lrange(ACQUIRED, 0, -1)]
    assert len(resumed) >= len(crash_scenarios(report)) > 0
    assert set(resumed) == {"Resumes"}
    admin.close()


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_keyed_sqlite_store_from_a_factory_keeps_its_key_in_every_life(mode: str, tmp_path: Path) -> None:
    """Before, copies of the store dropped ``key=``: a resumed life read records sealed under the key as
    records that were tampered with (SnapshotError), blaming the store, in every crash scenario."""
    paths = (tmp_path / f"run-{n}.db" for n in itertools.count())
    store = lambda: SQLiteCheckpointer(next(paths), key=KEY, timeout=3.0)  # noqa: E731
    report = explore(ChargeAsEffect, START, mode=mode, store=store, seed=SEED, **PAYMENTS)

    assert report.ok, report.failure_text()
    assert crash_scenarios(report)


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_sqlite_store_from_a_factory_may_name_a_file_not_made_yet(mode: str, tmp_path: Path) -> None:
    """As a SQLiteCheckpointer makes its file (and its directory) on first use, so does the exploration: before,
    a capture before the first write copied a file that was not there, and the reference run 'raised
    FileNotFoundError'. The copies of its stores are the exploration's to delete: none is left beside them."""
    paths = (tmp_path / "not-yet" / f"run-{n}.db" for n in itertools.count())
    report = explore(
        ChargeAsEffect, START, mode=mode, store=lambda: SQLiteCheckpointer(next(paths)), seed=SEED, **PAYMENTS
    )

    assert report.ok, report.failure_text()
    assert crash_scenarios(report)
    assert {path.name.partition(".")[0].rstrip("-0123456789") for path in tmp_path.rglob("*.db*")} == {"run"}


def options(store: Checkpointer, besides: set[str]) -> dict[str, Any]:
    """What ``store`` was made with: each parameter of its class's constructor it keeps as an attribute."""
    names = set(inspect.signature(type(store).__init__).parameters) - {"self"} - besides
    kept = {name: getattr(store, name) for name in names if hasattr(store, name)}
    return kept


@pytest.fixture
def stores() -> Iterator[Stores]:
    made = Stores(lambda: pytest.fail("a copy of a plain store is made without the factory"), kill=True)
    yield made
    made.close()


def test_a_copy_of_a_plain_sqlite_store_keeps_every_option_it_was_made_with(stores: Stores, tmp_path: Path) -> None:
    store = SQLiteCheckpointer(tmp_path / "run.db", "fsync", lease_ttl=7.0, key=KEY, timeout=2.5)
    copy = stores.copy(store, "some-run")

    assert type(copy) is SQLiteCheckpointer and copy.path != store.path
    assert options(copy, {"path"}) == options(store, {"path"})
    assert options(store, {"path"}).keys() >= {"durability", "lease_ttl", "key", "timeout"}
    copy.close()


def test_a_copy_of_a_plain_redis_store_keeps_every_option_it_was_made_with(stores: Stores) -> None:
    import fakeredis

    store = RedisCheckpointer(fakeredis.FakeRedis(), prefix="mine", lease_ttl=7.0, key=KEY)
    copy = stores.copy(store, "some-run")

    assert type(copy) is RedisCheckpointer and copy.prefix != store.prefix and copy.client is store.client
    assert options(copy, {"url_or_client", "prefix"}) == options(store, {"url_or_client", "prefix"})
    assert options(store, {"url_or_client", "prefix"}).keys() >= {"lease_ttl", "key"}


def test_the_second_interpreter_opens_a_plain_store_with_every_option_it_was_made_with(tmp_path: Path) -> None:
    """Kill mode's resumed lives reopen the store from its address: before, without its key or timeout."""
    import fakeredis

    sqlite = SQLiteCheckpointer(tmp_path / "run.db", "fsync", lease_ttl=7.0, key=KEY, timeout=2.5)
    redis_store = RedisCheckpointer(fakeredis.FakeRedis(), prefix="mine", lease_ttl=7.0, key=KEY)
    for store, besides in ((sqlite, set()), (redis_store, {"url_or_client"})):
        address = store_address(store)
        assert address is not None
        reopened = open_store(address)
        assert type(reopened) is type(store)
        assert options(reopened, besides) == options(store, besides)
        reopened.close()


def test_a_copy_of_a_redis_store_lists_the_run_by_its_status_and_leaves_no_key_behind(stores: Stores) -> None:
    """A capture copied a run's keys but not its entries in the store's indexes by status, so a copy's
    ``runs(status=...)`` missed the run, and once a resumed life ended it the copy's index keys were left
    on the server: on a factory's Redis, for good."""
    import fakeredis

    client = fakeredis.FakeRedis()
    store = RedisCheckpointer(client, prefix="mine")
    store.create("some-run", "Flow", Record(0, True, b"first"), "worker-1")
    copy = stores.copy(store, "some-run")

    assert [info.run_id for info in copy.runs(status="running")] == ["some-run"]
    copy.append("some-run", Record(1, True, b"second"), "worker-1", status="completed", result="{}")
    assert [info.run_id for info in copy.runs(status="completed")] == ["some-run"]
    stores.discard(copy, "some-run")
    assert sorted(key.decode().partition(":")[0] for key in client.keys("*")) == ["mine"] * 4
