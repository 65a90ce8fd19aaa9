"""Store servers a test can freeze (SIGSTOP) and kill: redis-server with an fsync'd append-only file, PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    give_up = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > give_up:
                raise AssertionError(f"nothing listens on port {port} after {timeout}s") from None
            time.sleep(0.02)


class RedisServer:
    """A redis-server of the test's own on loopback, durable across a SIGKILL (appendfsync always)."""

    def __init__(self, directory: Path) -> None:
        self.executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def kill_and_restart(self, downtime: float = 0.3) -> None:
        """SIGKILL the server (it writes nothing more), stay down ``downtime`` seconds, start it again."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        time.sleep(downtime)
        self.start()

    def freeze(self, seconds: float) -> None:
        """Stop the server's process (it answers nothing, connections hang) for ``seconds``."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait()
            self.process = None


def pg_bin() -> Path | None:
    """The directory of PostgreSQL's programs: pg_ctl's on the PATH, or the newest under /usr/lib/postgresql."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3].split(".")[0]))
    return candidates[-1].parent if candidates else None


class PostgresServer:
    """A PostgreSQL server of the test's own on loopback that a SIGKILL-like stop cannot make forget a commit
    (``synchronous_commit=on``: a commit's WAL reaches the kernel before it is acknowledged; fsync is off, since
    the machine does not crash). Under root it runs as the ``postgres`` user, as PostgreSQL requires."""

    def __init__(self, bin_dir: Path) -> None:
        import pwd
        import tempfile

        self.bin = bin_dir
        self.home = Path(tempfile.mkdtemp(prefix="durableflow-fleet-pg-"))
        self.data = self.home / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.home, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "--auth=trust", "--username=postgres", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / program), *args], check=True, capture_output=True)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on "
            "-c full_page_writes=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.home / "server.log"), "-w", "start")
        wait_for_port(self.port)

    def _pids(self) -> list[int]:
        """The postmaster and every process it started."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def kill_and_restart(self, downtime: float = 0.3) -> None:
        """Stop the server as a crash would (immediate mode: no shutdown checkpoint, recovery on start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        time.sleep(downtime)
        self.start()

    def freeze(self, seconds: float) -> None:
        stopped = []
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):  # a backend whose client left since it was listed
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        try:
            time.sleep(seconds)
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def freeze_session(self, application_name: str, seconds: float) -> bool:
        """Stop the server process of the session that goes by ``application_name`` for ``seconds``, the
        others going on: as a network partition between that client and the server. False if none."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
            ).fetchall()
        for (pid,) in rows:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            for (pid,) in rows:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        return bool(rows)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            for pid in self._pids():
                with contextlib.suppress(ProcessLookupError):  # a backend that ended since it was listed
                    os.kill(pid, signal.SIGCONT)
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.home, ignore_errors=True)
