"""The worker's log names its store without the password a URL may hold: logs outlive the shell that typed it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from durableflow import Worker
from durableflow._checkpointer import without_password

from .conftest import Outcome


def test_the_worker_logs_its_store_without_the_password(
    cli: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def stop_at_once(self: Worker) -> None:
        return None

    monkeypatch.setattr(Worker, "run", stop_at_once)  # the log line is written before it polls the store
    caplog.set_level(logging.INFO, logger="durableflow.worker")
    done = cli("worker", "--workflow", "cliflows:Pipeline", "--store", "redis://app:s3cret@127.0.0.1:1/0")
    assert done.code == 0, done.err
    assert "s3cret" not in caplog.text + done.out + done.err
    assert "on redis://app:***@127.0.0.1:1/0 (concurrency 8)" in caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://me:p%40ss@db/app?sslmode=require", "postgresql://me:***@db/app?sslmode=require"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("sqlite:///runs.db", "sqlite:///runs.db"),
        ("redis://me:pw@host:bad/0", "redis://me:***@host:bad/0"),
        ("redis://host/0?password=pw&socket_timeout=5", "redis://host/0?password=***&socket_timeout=5"),
    ],
)
def test_without_password(url: str, shown: str) -> None:
    assert without_password(url) == shown
