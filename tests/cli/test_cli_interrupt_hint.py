"""What the command tells when it stops early: the resume line after Ctrl-C, filled in; its own version."""

from __future__ import annotations

import importlib.metadata
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from durableflow import SQLiteCheckpointer

Shell = Callable[..., subprocess.CompletedProcess[str]]


def _interrupt(project: Path, *argv: str) -> tuple[str, str]:
    """Start ``durableflow`` with ``argv``, press Ctrl-C once it printed the run id, and give that id and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "durableflow", *argv],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    run_id = process.stdout.readline().strip()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    return run_id, err


def _told(err: str) -> list[str]:
    line = next(line for line in err.splitlines() if "durableflow resume" in line)
    return shlex.split(line.split("`")[1])


def test_ctrl_c_of_run_tells_the_resume_line_with_the_run_id_workflow_and_store(project: Path) -> None:
    """After Ctrl-C the line names this run, its workflow and its store, not placeholders, so it can be pasted."""
    run_id, err = _interrupt(project, "run", "cliflows:Napping", "--store", "sqlite:///elsewhere.db")
    assert "RUN_ID" not in err and "MODULE:Class" not in err
    assert _told(err) == [
        "durableflow", "resume", run_id, "--workflow", "cliflows:Napping", "--store", "sqlite:///elsewhere.db",
    ]  # fmt: skip
    assert SQLiteCheckpointer(project / "elsewhere.db").info(run_id).status == "interrupted"


def test_ctrl_c_of_resume_tells_the_same_resume_line(project: Path, shell: Shell) -> None:
    """A resume interrupted in its turn tells the command that continues it again, with the workflow it was given."""
    first, _ = _interrupt(project, "run", "cliflows:Napping")
    again, err = _interrupt(project, "resume", first, "--workflow", "cliflows:Napping")
    assert again == first
    assert _told(err) == ["durableflow", "resume", first, "--workflow", "cliflows:Napping"]


def test_version(shell: Shell) -> None:
    """`durableflow --version` names the installed version."""
    done = shell("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"durableflow {importlib.metadata.version('durableflow')}"
