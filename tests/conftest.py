"""Fixtures shared by every test directory: a real Redis server on loopback, started once per session.

``redis_url`` points at a flushed database of a ``redis-server`` that pytest-redis
starts on a free local port; tests skip when no ``redis-server`` is installed.
``stalled_redis(seconds)`` makes that server hold every client for a while; ``secured_redis_url`` is one
of another server, which asks for a password.
``postgres_url`` is a new database on a PostgreSQL server started the same way (pytest-postgresql).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from pytest_redis import factories

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


# pytest-redis and pytest-postgresql start their servers through mirakuru, which marks each server with
# mirakuru_uuid="<pid of the starter>:<uuid>" and, when any process that imported it exits, kills every
# process whose mark merely *contains* that process's pid. Over a long suite the pids wrap around, and a
# process whose pid is a substring of another xdist worker's mark killed that worker's PostgreSQL server.
# Here a process kills, at its exit, only the servers it started itself.
def _kill_own_servers() -> None:
    mark = f"mirakuru_uuid={os.getpid()}:".encode()
    for environ in glob.glob("/proc/[0-9]*/environ"):
        try:
            entries = Path(environ).read_bytes().split(b"\0")
        except OSError:  # gone, or another user's process
            continue
        if any(entry.startswith(mark) for entry in entries):
            with contextlib.suppress(OSError):
                os.kill(int(environ.split("/")[2]), signal.SIGKILL)


with contextlib.suppress(ImportError):
    from mirakuru import base as _mirakuru

    atexit.unregister(_mirakuru.cleanup_subprocesses)
    atexit.register(_kill_own_servers)

redis_proc = factories.redis_proc(executable=REDIS_SERVER)
secured_redis_proc = factories.redis_proc(executable=REDIS_SERVER, password="s3cret")


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of an empty database on a real redis-server (the session's one, flushed for this test)."""
    yield from _empty_database(request, "redis_proc", "")


@pytest.fixture
def secured_redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """``redis_url`` of a redis-server that asks for a password, ``s3cret``, which the URL holds."""
    yield from _empty_database(request, "secured_redis_proc", ":s3cret@")


def _empty_database(request: pytest.FixtureRequest, server_fixture: str, credentials: str) -> Iterator[str]:
    if not shutil.which(REDIS_SERVER):
        pytest.skip(f"no redis-server at {REDIS_SERVER}")
    import redis

    server = request.getfixturevalue(server_fixture)
    url = f"redis://{credentials}{server.host}:{server.port}/0"
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


# -- PostgreSQL -----------------------------------------------------------------------------


def _pg_ctl() -> str | None:
    """pg_ctl on the PATH, or the newest of Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    return max(candidates, key=lambda path: int(Path(path).parts[-3].split(".")[0]), default=None)


@pytest.fixture(scope="session")
def postgresql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A PostgreSQL server of this test process on a free loopback port (pytest-postgresql's executor).

    PostgreSQL refuses to run as root: under root (CI), the server runs as the ``postgres`` user that
    Debian's package creates, through a ``runuser`` wrapper around pg_ctl, in a directory it owns.
    Skips when no pg_ctl is installed.
    """
    pg_ctl = _pg_ctl()
    if pg_ctl is None:
        pytest.skip("no pg_ctl (on Debian: apt-get install postgresql)")
    from port_for import get_port
    from pytest_postgresql.executors import PostgreSQLExecutor

    home = Path(tempfile.mkdtemp(prefix="durableflow-pg-"))  # not under pytest's tmp: that is root-only
    executable = pg_ctl
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(home, user.pw_uid, user.pw_gid)
        executable = str(home / "pg_ctl")
        Path(executable).write_text(f'#!/bin/sh\nexec runuser -u postgres -- "{pg_ctl}" "$@"\n')
        os.chmod(executable, 0o755)
    port = get_port(None)
    assert port is not None
    server = PostgreSQLExecutor(
        executable=executable,
        host="127.0.0.1",
        port=port,
        datadir=str(home / "data"),
        unixsocketdir=str(home),
        logfile=str(home / "server.log"),
        startparams="-w",
        dbname="durableflow",
        # crash safety of the server is not under test (the client is killed, not the server): skip its fsyncs
        postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
    )
    server.start()
    try:
        _wait_for_connections(f"postgresql://{server.user}@{server.host}:{server.port}/postgres")
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def _wait_for_connections(url: str) -> None:
    """The port opens, and pg_ctl says "running", before the server takes connections: try until it does."""
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_session_url(postgresql_server: Any) -> str:
    """A database of this test process's PostgreSQL server, for tests that isolate themselves in it
    (a schema of their own, say): cheaper than a new database per test."""
    import psycopg

    server = postgresql_server
    with psycopg.connect(f"postgresql://{server.user}@{server.host}:{server.port}/postgres", autocommit=True) as admin:
        admin.execute("CREATE DATABASE session_tests")
    return f"postgresql://{server.user}@{server.host}:{server.port}/session_tests"


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL server, dropped after the test."""
    import psycopg

    server = request.getfixturevalue("postgresql_server")
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin_url = f"postgresql://{server.user}@{server.host}:{server.port}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://{server.user}@{server.host}:{server.port}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
