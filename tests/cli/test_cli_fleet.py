"""``durableflow worker``, ``purge`` and ``runs --status/--after``: recovering a dead process's run from a shell,
deleting old runs, and paging through a filtered listing."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Outcome


def _interrupted_run(project: Path, shell: Callable[..., subprocess.CompletedProcess[str]]) -> str:
    """A Pipeline run whose process died (exit 17) after converting document 1: its id."""
    (project / "crash-after-1").touch()
    died = shell("run", "cliflows:Pipeline", "--input", '{"ids": [1, 2]}')
    assert died.returncode == 17, died.stderr
    return died.stdout.split()[0]


def test_runs_and_show_call_a_run_whose_process_died_interrupted(
    project: Path, shell: Callable[..., subprocess.CompletedProcess[str]], cli: Callable[..., Outcome]
) -> None:
    """The dead process's run is listed by --status interrupted, not by --status running, and show says so."""
    run_id = _interrupted_run(project, shell)
    assert run_id in cli("runs", "--status", "interrupted").out
    assert "no runs with status running" in cli("runs", "--status", "running").out
    shown = cli("show", run_id)
    assert shown.code == 0 and "interrupted" in shown.out
    assert "last held by (dead or lapsed)" in shown.out  # the dead owner's lease is not shown as held


def test_the_worker_command_recovers_the_run_and_stops_cleanly_on_sigterm(
    project: Path, shell: Callable[..., subprocess.CompletedProcess[str]], cli: Callable[..., Outcome]
) -> None:
    """`durableflow worker --workflow ...` completes the interrupted run, then exits 0 on SIGTERM with a summary."""
    run_id = _interrupted_run(project, shell)
    worker = subprocess.Popen(
        [sys.executable, "-m", "durableflow", "worker", "--workflow", "cliflows:Pipeline", "--poll", "0.05"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        give_up = time.monotonic() + 30
        while run_id not in cli("runs", "--status", "completed").out:
            assert time.monotonic() < give_up, "the worker did not complete the run"
            assert worker.poll() is None, worker.communicate()
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "recovered 1 run(s) and started 0: 1 completed, 0 failed, 0 left waiting, 0 handed back" in out
    assert "recovering run " + run_id in err
    assert (project / "side_effects.log").read_text().split() == ["1", "2"]


def test_the_worker_command_needs_a_workflow(cli: Callable[..., Outcome]) -> None:
    """Without --workflow or a config listing workflows, `worker` is a usage error that says how to name them."""
    outcome = cli("worker")
    assert outcome.code == 2 and "--workflow MODULE:Class" in outcome.err


def test_purge_deletes_ended_runs_and_refuses_running_ones(
    cli: Callable[..., Outcome], project: Path, shell: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """purge --older-than 0s deletes completed runs but keeps an interrupted one; --status running is refused."""
    done = [cli("run", "cliflows:Orders", "--input", f'{{"order_id": {n}}}').lines[0] for n in range(2)]
    interrupted = _interrupted_run(project, shell)
    refused = cli("purge", "--older-than", "0s", "--status", "running")
    assert refused.code == 2 and "only ended runs are purged" in refused.err
    assert "purged 0 run(s)" in cli("purge", "--older-than", "1d").out
    assert (
        "purged 2 run(s) (completed) that ended over 0s ago"
        in cli("purge", "--older-than", "0", "--status", "completed").out
    )
    listed = cli("runs").out
    assert interrupted in listed and not any(run_id in listed for run_id in done)


def test_purge_of_a_store_that_does_not_exist_creates_no_file(cli: Callable[..., Outcome], tmp_path: Path) -> None:
    """purge on a SQLite path nobody has written yet says so and leaves no empty database behind."""
    missing = tmp_path / "never.db"
    outcome = cli("purge", "--older-than", "30d", "--store", f"sqlite:///{missing}")
    assert outcome.code == 0 and "does not exist yet" in outcome.out
    assert not missing.exists()


def test_runs_pages_through_a_filtered_listing_with_the_printed_cursor(cli: Callable[..., Any]) -> None:
    """A full page ends with the command for the next one; running it lists the following runs, never the same."""
    ids = [cli("run", "cliflows:Orders", "--input", f'{{"order_id": {n}}}').lines[0] for n in range(3)]
    seen: list[str] = []
    argv = ["runs", "--status", "completed", "--limit", "2"]
    for _ in range(3):
        out = cli(*argv).out
        seen += [run_id for run_id in ids if run_id in out]
        next_lines = [line for line in out.splitlines() if line.startswith("next page: ")]
        if not next_lines:
            break
        argv = shlex.split(next_lines[0].removeprefix("next page: "))[1:]
    assert sorted(seen) == sorted(ids) and len(seen) == 3


def _completed_failed_and_waiting(cli: Callable[..., Outcome], project: Path) -> tuple[str, str, str]:
    completed = cli("run", "cliflows:Orders", "--input", '{"order_id": 1}')
    (project / "payments-down").touch()
    failed = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}')
    (project / "payments-down").unlink()
    waiting = cli("run", "cliflows:Approval", "--input", '{"amount": 5}')
    assert (completed.code, failed.code, waiting.code) == (0, 1, 7), (completed, failed, waiting)
    return completed.lines[0], failed.lines[0], waiting.lines[0]


@pytest.mark.parametrize(
    "statuses", [["--status", "completed", "failed"], ["--status", "completed", "--status", "failed"]]
)
def test_status_takes_several_values_at_once_or_repeated_for_runs_and_purge(
    cli: Callable[..., Outcome], project: Path, statuses: list[str]
) -> None:
    """`--status completed failed` and `--status completed --status failed` both select either status."""
    completed, failed, waiting = _completed_failed_and_waiting(cli, project)
    listed = cli("runs", *statuses)
    assert listed.code == 0, listed.err
    assert completed in listed.out and failed in listed.out and waiting not in listed.out
    purged = cli("purge", "--older-than", "0", *statuses)
    assert purged.code == 0, purged.err
    assert "purged 2 run(s) (completed, failed)" in purged.out
    left = cli("runs").out
    assert waiting in left and completed not in left and failed not in left


@pytest.mark.parametrize("command", ["runs", "purge"])
def test_the_readme_synopsis_shows_status_as_the_help_does(cli: Callable[..., Outcome], command: str) -> None:
    """The README's synopsis of `runs` and `purge` writes --status as `-h` prints it: one or more values."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.partition("## The CLI\n\n```\n")[2].partition("```")[0]
    synopsis = next(line for line in block.splitlines() if line.startswith(f"durableflow {command} "))
    usage = " ".join(cli(command, "-h").out.split())
    assert "[--status STATUS [STATUS ...]]" in synopsis
    assert "[--status STATUS [STATUS ...]]" in usage
