"""Fixtures shared by every test directory: a real Redis server on loopback, started once per session.

``redis_url`` points at a flushed database of a ``redis-server`` that pytest-redis
starts on a free local port; tests skip when no ``redis-server`` is installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

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
