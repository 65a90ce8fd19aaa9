"""Store servers a test can freeze (SIGSTOP) and kill: a redis-server with an fsync'd append-only file."""

from __future__ import annotations

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
