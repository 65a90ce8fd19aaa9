"""Throwaway servers for benchmarks: a redis-server and a PostgreSQL server on free loopback ports."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """The URL of a redis-server without persistence, or ``None`` (with a note) when none is installed."""
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(executable).exists():
        print("note: no redis-server installed; Redis is skipped")
        yield None
        return
    try:
        import redis
    except ImportError:
        print("note: redis-py is not installed (pip install '.[redis]' in durableflow's clone); Redis is skipped")
        yield None
        return
    port = _free_port()
    server = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"redis-server did not answer on port {port}")
        client.close()
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextlib.contextmanager
def postgres_server(options: str = "") -> Iterator[str | None]:
    """The URL of a database on a fresh PostgreSQL server, or ``None`` (with a note) when there is no pg_ctl.

    As root, the server runs as the ``postgres`` user (PostgreSQL refuses root), as in the tests.
    """
    pg_ctl = shutil.which("pg_ctl") or max(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), default=None)
    if pg_ctl is None:
        print("note: no pg_ctl installed; PostgreSQL is skipped")
        yield None
        return
    import psycopg

    home = Path(tempfile.mkdtemp(prefix="durableflow-bench-pg-"))
    data = home / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(home, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([*run_as, pg_ctl, "initdb", "-D", str(data), "-o", "--auth=trust -U postgres"], check=True, **quiet)
    server_options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={home} {options}"
    subprocess.run(
        [*run_as, pg_ctl, "start", "-w", "-D", str(data), "-l", str(home / "log"), "-o", server_options],
        check=True,
        **quiet,
    )
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        for _ in range(200):
            try:
                psycopg.connect(url).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.05)
        yield url
    finally:
        subprocess.run([*run_as, pg_ctl, "stop", "-D", str(data), "-m", "fast"], check=False, **quiet)
        shutil.rmtree(home, ignore_errors=True)
