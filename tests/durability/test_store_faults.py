"""Faults of a real store, each with the error it raises: a write that timed out and landed later, a
sequence number written twice, a store that refuses writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
import redis

from durableflow import Record, RedisCheckpointer, RunConflictError, StoreUnavailableError

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
