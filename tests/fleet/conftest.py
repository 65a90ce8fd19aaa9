"""Fixtures for the fleet tests: store servers of the test's own, which it may freeze and kill."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import PostgresServer, RedisServer, pg_bin


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server on loopback, append-only with fsync always, that the test may freeze and kill."""
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on loopback that the test may freeze and kill."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL (on Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root without runuser to start PostgreSQL as 'postgres'")
    server = PostgresServer(bin_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
