"""Fixtures shared by every test directory: a real Redis server on loopback, started once per session.

``redis_url`` points at a flushed database of a ``redis-server`` that pytest-redis
starts on a free local port; tests skip when no ``redis-server`` is installed.
``stalled_redis(seconds)`` makes that server hold every client for a while.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from pytest_redis import factories

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

redis_proc = factories.redis_proc(executable=REDIS_SERVER)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of an empty database on a real redis-server (the session's one, flushed for this test)."""
    if not shutil.which(REDIS_SERVER):
        pytest.skip(f"no redis-server at {REDIS_SERVER}")
    import redis

    server = request.getfixturevalue("redis_proc")
    url = f"redis://{server.host}:{server.port}/0"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
    finally:
        client.close()


_STALL = """
local began = redis.call('TIME')
local now = began
repeat now = redis.call('TIME') until (now[1] - began[1]) * 1000000 + (now[2] - began[2]) >= tonumber(ARGV[1])
return 1
"""


@pytest.fixture
def stalled_redis(redis_url: str) -> Callable[[float], AbstractContextManager[None]]:
    """``with stalled_redis(seconds):`` holds the ``redis_url`` server busy for that long (see ``_stall``)."""
    return lambda seconds: _stall(redis_url, seconds)


@contextmanager
def _stall(url: str, seconds: float) -> Iterator[None]:
    """Hold a real Redis busy for ``seconds`` (a script that spins), starting before the block runs.

    A command sent meanwhile waits in its socket: a client whose timeout is shorter gives up, and Redis
    runs the command once the spin ends, so a write that failed on the client lands later. (``CLIENT
    PAUSE`` is no substitute: Redis drops a paused command whose client hung up.) Leaving the block
    waits for the spin to end.
    """
    import redis

    spinner = threading.Thread(target=lambda: redis.Redis.from_url(url).eval(_STALL, 0, int(seconds * 1e6)))
    spinner.start()
    probe = redis.Redis.from_url(url, socket_timeout=0.05)  # from_url: no retries, so a timeout says "busy"
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until Redis stops answering: the spin has begun
            try:
                probe.ping()
            except redis.TimeoutError:
                break
            time.sleep(0.005)
        else:
            raise AssertionError("the stalling script never held Redis")
        yield
    finally:
        probe.close()
        spinner.join()
