"""A real SIGKILL: a process dies mid-run, and a new one resumes the run from the store to the right result."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from durableflow import RedisCheckpointer, SQLiteCheckpointer

from .processes import finish, start_worker, wait_for_files
from .workflows import Tally, read_journal


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_run_killed_mid_step_resumes_to_the_right_result_without_repeating_completed_steps(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A process SIGKILLed inside step count(2) after two checkpointed counts is resumed by this one: the result
    is right, steps 0 and 1 never run again, and the killed step's unsaved state change is gone."""
    if kind == "sqlite":
        url, checkpointer = f"sqlite:///{tmp_path / 'runs.db'}", SQLiteCheckpointer(tmp_path / "runs.db")
    else:
        url = request.getfixturevalue("redis_url")
        checkpointer = RedisCheckpointer(url)
    journal = tmp_path / "journal"
    worker = start_worker("start", store=url, run_id="killed", journal=journal, total=5, kill_at=2)
    assert finish(worker) == -signal.SIGKILL
    assert checkpointer.info("killed").status == "interrupted"  # stored as running, its owner is dead
    try:
        result = await Tally(str(journal), checkpointer=checkpointer).resume("killed")
        assert result == [0, 1, 2, 3, 4]  # count 2 appears once: the killed attempt's write was never durable
        assert checkpointer.info("killed").status == "completed"
    finally:
        checkpointer.close()
    lines = read_journal(journal)
    assert [(what, n) for what, n, pid in lines if pid == worker.pid] == [
        ("start", 0), ("return", 0), ("start", 1), ("return", 1), ("start", 2),
    ]  # fmt: skip
    assert [(what, n) for what, n, pid in lines if pid != worker.pid] == [
        ("start", 2), ("return", 2), ("start", 3), ("return", 3), ("start", 4), ("return", 4),
    ]  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="only /proc tells a zombie from a live process")
async def test_a_killed_process_not_yet_reaped_is_dead_and_its_run_resumes_at_once(tmp_path: Path) -> None:
    """A SIGKILLed child that its parent has not reaped is a zombie: ``os.kill(pid, 0)`` still finds it, but it
    will never run again. Its run is interrupted at once and resumes without waiting out the lease."""
    url, checkpointer = f"sqlite:///{tmp_path / 'runs.db'}", SQLiteCheckpointer(tmp_path / "runs.db")
    journal, release = tmp_path / "journal", tmp_path / "release"
    worker = start_worker("start", store=url, run_id="zombie", journal=journal, total=3, hold_until=release)
    try:
        wait_for_files(journal)  # step count(0) started: the run is stored and leased by the worker
        assert checkpointer.info("zombie").status == "running"
        worker.kill()
        os.waitid(os.P_PID, worker.pid, os.WEXITED | os.WNOWAIT)  # it has died, and is left unreaped
        assert Path(f"/proc/{worker.pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        assert checkpointer.info("zombie").status == "interrupted"
        release.touch()
        result = await Tally(str(journal), checkpointer=checkpointer).resume("zombie")  # no RunLeaseError
        assert result == [0, 1, 2]
        assert checkpointer.info("zombie").status == "completed"
    finally:
        checkpointer.close()
        worker.kill()
        worker.communicate()  # reaps it
