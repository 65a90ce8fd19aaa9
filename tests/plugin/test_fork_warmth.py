"""Kill mode's forks: what is prepared before a life is forked, so that it writes (and copies) fewer inherited
pages, and how the test's process sees a life gone."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from durableflow.testing import _heap, _kill
from durableflow.testing._world import FakeWorld
from pytest_durableflow import explore

from .flows import ChargeAsEffect, FakePayments, get_payments

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="kill mode forks its lives")


def in_a_fork(body: Callable[[], Any]) -> Any:
    """``body()``'s JSON-able result, computed in a forked child (whatever it does to its heap stays there)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reported through the pipe
        try:
            os.write(write, json.dumps(body()).encode())
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(_heap._glibc() is None, reason="reads glibc's heap")
def test_after_free_chunks_are_held_a_forked_life_allocates_past_the_heap_it_inherited() -> None:
    """After ``hold_free_chunks`` what ``malloc`` hands out lies past where the heap's used part ended, fresh
    pages side by side, not in free chunks scattered through pages the life shares with its parent."""

    def inside_the_heap() -> dict[str, int]:
        libc = _heap._glibc()
        _heap._held.clear()  # what this worker's earlier explorations held stays held, out of the count
        _heap._held_bytes[0] = 0
        # and no bound on what is held: a worker's earlier tests can leave more free chunks than the 4 MB an
        # exploration holds at most, and this test is about where malloc allocates once all of them are held
        _heap._HELD_AT_MOST = 1 << 40
        kept = [bytes(700 + n) for n in range(2000)]  # C-heap chunks: larger than Python's small objects
        del kept[::2]  # every other one freed: free chunks scattered through the heap

        def allocated_inside(edge: int) -> int:
            chunks = [libc.malloc(size) for size in range(16, 2048, 16)]
            for chunk in chunks:
                libc.free(chunk)
            return sum(chunk < edge for chunk in chunks)

        before = allocated_inside(libc.sbrk(0) - libc.mallinfo2().keepcost)
        edge = libc.sbrk(0) - libc.mallinfo2().keepcost  # where the heap's unused top begins
        _heap.hold_free_chunks()
        return {"before": before, "after": allocated_inside(edge), "kept": len(kept)}

    found = in_a_fork(inside_the_heap)
    assert found["before"] > 50  # most sizes were served from the freed chunks
    assert found["after"] == 0


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    shared = FakeWorld(shared=True)
    try:
        yield shared
    finally:
        shared.close()


def test_a_forked_life_connects_the_connection_object_made_before_the_fork(world: FakeWorld) -> None:
    """The client a life is served comes with a connection object made (not connected) before the fork; the
    life adopts it and connects it, making none of its own, and the parent's stays unconnected."""
    client = world.redis_client({"decode_responses": True})
    world.ready_redis_connections()
    pool = client.connection_pool
    (made,) = pool._available_connections
    assert made._sock is None

    def life() -> dict[str, Any]:
        world.adopt_redis_clients()
        client.hset("converted", "1", "text")
        (used,) = pool._available_connections
        return {"same": used is made, "created": pool._created_connections, "value": client.hget("converted", "1")}

    assert in_a_fork(life) == {"same": True, "created": 1, "value": "text"}
    assert made._sock is None and pool._available_connections == [made]


def test_a_life_the_zygote_forked_is_reaped_by_the_time_its_reports_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The zygote closes a life's report pipe only once it has reaped the life: when the test's process has
    read the reports to their end, the life is gone for good, with no need to watch for it."""
    found: list[bool] = []
    wait = _kill._gone

    def gone(pid: int | None, ours: bool) -> None:
        if pid is not None and not ours:
            try:
                os.kill(pid, 0)
                found.append(False)
            except ProcessLookupError:
                found.append(True)
        wait(pid, ours)

    monkeypatch.setattr(_kill, "_gone", gone)
    report = explore(ChargeAsEffect, {"order": "o-1", "cents": 500}, mode="kill", fakes={get_payments: FakePayments})
    report.assert_ok()
    assert found and all(found)
