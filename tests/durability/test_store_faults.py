"""Faults of a real store, each with the error it raises: a write that timed out and landed later, a
sequence number written twice, a store that refuses writes, a SQLite file locked or impossible to open.
(PostgreSQL's are in test_postgres_faults.py; a Redis that is down or never answers, in test_faults.py.) A Redis
store names itself in errors without its password."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import redis

from durableflow import Record, RedisCheckpointer, RunConflictError, SQLiteCheckpointer, StoreUnavailableError

Stall = Callable[[float], AbstractContextManager[None]]


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisCheckpointer]:
    checkpointer = RedisCheckpointer(redis_url, socket_timeout=0.3)
    checkpointer.create("late", "tests:Late", Record(1, True, b"first"), "worker")
    checkpointer.append("late", Record(2, False, b"second"), "worker")
    yield checkpointer
    checkpointer.close()


def test_a_write_that_timed_out_and_landed_later_is_not_stored_twice(
    store: RedisCheckpointer, stalled_redis: Stall
) -> None:
    """A Redis too busy to answer in time makes an append fail with StoreUnavailableError, yet Redis
    runs it afterwards; the same sequence number sent again is refused with RunConflictError, so the
    run keeps one record 3 (the first) and stays loadable."""
    with stalled_redis(1.0), pytest.raises(StoreUnavailableError, match="unreachable"):
        store.append("late", Record(3, False, b"third, timed out"), "worker")
    assert store.info("late").last_seq == 3  # it landed once the stall ended
    with pytest.raises(RunConflictError) as raised:
        store.append("late", Record(3, False, b"third, written again"), "worker", status="failed", error="boom")
    assert raised.value.expected_seq == 4
    assert [(r.seq, r.data) for r in store.load("late")] == [(1, b"first"), (2, b"second"), (3, b"third, timed out")]
    assert store.info("late").status == "running"


def test_a_redis_that_refuses_writes_raises_store_unavailable_and_stores_nothing(
    store: RedisCheckpointer, redis_url: str
) -> None:
    """A Redis over its memory limit (or read-only) refuses the append: StoreUnavailableError says so."""
    admin = redis.Redis.from_url(redis_url)
    limit = admin.config_get("maxmemory")["maxmemory"]
    admin.config_set("maxmemory", 1)
    try:
        with pytest.raises(StoreUnavailableError, match="refused"):
            store.append("late", Record(3, False, b"third"), "worker")
    finally:
        admin.config_set("maxmemory", limit)
        admin.close()
    assert store.info("late").last_seq == 2
    store.append("late", Record(3, False, b"third"), "worker")  # once Redis takes writes again


def test_a_sqlite_store_another_process_holds_raises_store_unavailable_after_its_timeout(tmp_path: Path) -> None:
    """A SQLite file whose write lock another connection keeps makes append wait `timeout` seconds, then
    raise StoreUnavailableError saying it is locked; once the lock goes, the same append is stored."""
    store = SQLiteCheckpointer(tmp_path / "runs.db", timeout=0.2)
    store.create("held", "tests:Held", Record(1, True, b"first"), "worker")
    holder = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="locked"):
            store.append("held", Record(2, False, b"second"), "worker")
        assert 0.15 <= time.monotonic() - began < 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.append("held", Record(2, False, b"second"), "worker")
    assert [r.seq for r in store.load("held")] == [1, 2]
    store.close()


def test_a_sqlite_store_that_cannot_be_opened_raises_store_unavailable(tmp_path: Path) -> None:
    """A path under a regular file (no directory can be made there) gives StoreUnavailableError naming it."""
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailableError, match="cannot open SQLite store"):
        SQLiteCheckpointer(tmp_path / "file" / "runs.db").runs()


def test_a_redis_store_names_itself_in_errors_without_its_password() -> None:
    """An unreachable Redis is named in the error, its password hidden: errors end up in logs and tickets."""
    store = RedisCheckpointer("redis://app:s3cret@127.0.0.1:1/0?password=s3cret")  # nothing listens on port 1
    with pytest.raises(StoreUnavailableError) as raised:
        store.info("run")
    assert "s3cret" not in str(raised.value)
    assert "Redis at redis://app:***@127.0.0.1:1/0?password=*** is unreachable" in str(raised.value)
