"""The ``durableflow`` command end to end: fresh processes, as a user's shell runs it, a killed run included."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from durableflow import SQLiteCheckpointer

Shell = Callable[..., subprocess.CompletedProcess[str]]


def test_python_m_durableflow_help(shell: Shell) -> None:
    """`python -m durableflow --help` exits 0 and lists the subcommands and exit codes."""
    done = shell("--help")
    assert done.returncode == 0, done.stderr
    assert "crashtest" in done.stdout and "6  store unavailable" in done.stdout
    assert "7  the run waits for input" in done.stdout and "130  interrupted" in done.stdout


def test_without_rich_help_works_and_tables_ask_for_the_extra(shell: Shell) -> None:
    """In a process where rich cannot be imported, `runs --help` works and `runs` exits 2 naming durableflow[cli]."""
    no_rich = [
        sys.executable,
        "-c",
        "import runpy, sys; sys.modules['rich'] = None; runpy.run_module('durableflow', run_name='__main__')",
    ]
    helped = shell("runs", "--help", command=no_rich)
    assert helped.returncode == 0, helped.stderr
    assert "--limit" in helped.stdout
    listed = shell("runs", command=no_rich)
    assert listed.returncode == 2
    assert "install the durableflow[cli] extra (pip install '.[cli]'" in listed.stderr
    assert "Traceback" not in listed.stderr


def test_commands_other_than_crashtest_do_not_load_the_crash_harness(shell: Shell, tmp_path: Path) -> None:
    """`runs` (like run, resume and worker) leaves the exploration engine unimported: a third of its start-up."""
    listed = [
        sys.executable,
        "-c",
        "import atexit, runpy, sys; atexit.register(lambda: print(sorted(m for m in sys.modules if "
        "m.startswith('durableflow.testing')), file=sys.stderr)); runpy.run_module('durableflow', run_name='__main__')",
    ]
    done = shell("runs", "--store", f"sqlite:///{tmp_path / 'runs.db'}", command=listed)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "['durableflow.testing', 'durableflow.testing._settings']"


def test_killed_run_is_resumed_and_completes_with_the_right_result(shell: Shell, project: Path) -> None:
    """A run whose process died after a checkpoint is finished by `resume`, redoing no checkpointed work."""
    (project / "crash-after-2").touch()
    killed = shell("run", "cliflows:Pipeline", "--input", '{"ids": [1, 2, 3]}')
    assert killed.returncode == 17, killed.stderr  # os._exit in the step: no result, no cleanup
    run_id = killed.stdout.split()[0]
    assert (project / "side_effects.log").read_text().split() == ["1", "2"]

    resumed = shell("resume", run_id, "--workflow", "cliflows:Pipeline")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines() == [run_id, '{"converted": [1, 2, 3], "receipt": "paid for 3"}']
    assert (project / "side_effects.log").read_text().split() == ["1", "2", "3"]

    shown = shell("show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "resumed" in shown.stdout and "status completed" in shown.stdout


def test_a_run_waiting_for_input_is_answered_by_the_command_it_prints(shell: Shell) -> None:
    """`run` of a workflow that asks for input exits 7 printing the request; the `resume ... --respond` line it
    tells on stderr, with an answer filled in, finishes the run in a new process."""
    asked = shell("run", "cliflows:Approval", "--input", '{"amount": 5}')
    assert asked.returncode == 7, asked.stderr
    run_id, request = asked.stdout.splitlines()
    assert json.loads(request) == {"question": "approve 5?"}
    told = next(line for line in asked.stderr.splitlines() if "durableflow resume" in line)
    argv = shlex.split(told)
    assert argv[:3] == ["durableflow", "resume", run_id] and argv[-2] == "--respond"
    argv[-1] = argv[-1].replace("...", '"yes"')

    answered = shell(*argv[1:])
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines() == [run_id, '"yes"']


def test_console_script_finds_modules_in_the_current_directory(shell: Shell) -> None:
    """The installed `durableflow` script imports MODULE from the directory it is run in, as `python -m` would."""
    script = Path(sys.executable).with_name("durableflow")
    if not script.exists():
        pytest.skip("the durableflow console script is not installed beside this interpreter")
    done = shell("run", "cliflows:Pipeline", "--input", '{"ids": [5]}', command=[str(script)])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[1]) == {"converted": [5], "receipt": "paid for 1"}


def test_ctrl_c_exits_130_and_keeps_the_run_resumable(project: Path) -> None:
    """Ctrl-C during `run` exits 130 without a traceback and leaves the run stored, still to be resumed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "durableflow", "run", "cliflows:Napping"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    run_id = process.stdout.readline().strip()  # printed once the run is stored
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted" in err and "durableflow resume" in err and "Traceback" not in err
    assert out == ""
    info = SQLiteCheckpointer(project / "durableflow.db").info(run_id)
    assert info.status == "interrupted" and info.result is None  # stored as running; its process is gone
