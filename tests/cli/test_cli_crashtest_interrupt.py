"""Ctrl-C in `durableflow crashtest`, early as late: the scenarios judged so far, no traceback, exit 130, and
nothing left running (lives, second interpreters) or stored (a real Redis) behind it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

LONG = '''
"""Converts documents one by one, each taking a little real time, and says so in a file as each life starts."""

import os
import time

from durableflow import Context, StartEvent, StopEvent, Workflow, step


class Long(Workflow):
    @step
    async def convert(self, ev: StartEvent, ctx: Context) -> StopEvent:
        with open("lives.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        done = await ctx.store.get("done", default=[])
        for doc_id in ev.ids:
            if doc_id not in done:
                time.sleep(0.05)
                done.append(doc_id)
                await ctx.store.set("done", done)
                await ctx.checkpoint()
        return StopEvent(result=done)
'''

ZYGOTE = "durableflow.testing._zygote import serve"

DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)
"""Runs the command with SIGINT as a terminal's shell leaves it, even under a runner that ignores it (as a
non-interactive shell does for the commands it starts in the background): an ignored SIGINT stays ignored."""


def in_session(session: int) -> list[str]:
    """The processes of ``session`` still there: ``pid command``, zombies included."""
    listed = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-s", str(session)], capture_output=True, text=True)
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def ctrl_c(
    project: Path, when: Callable[[subprocess.Popen[str]], bool], whole_group: bool, *options: str, presses: int = 1
) -> subprocess.CompletedProcess[str]:
    """Start a crashtest of ``Long`` in a session of its own, wait until ``when`` holds, then send SIGINT
    ``presses`` times: to its whole process group as a terminal's Ctrl-C does, or to the command's process
    alone. Fail unless every process of the session is gone soon after the command exits."""
    (project / "long.py").write_text(LONG)
    command = [
        sys.executable, "-c", DEFAULT_SIGINT, "-m", "durableflow", "crashtest", "long:Long",
        "--input", '{"ids": [1, 2, 3, 4, 5, 6]}', "--depth", "2", "--seed", "1", *options,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        give_up = time.monotonic() + 60
        while not when(process):
            assert process.poll() is None and time.monotonic() < give_up, "the moment to press Ctrl-C never came"
            time.sleep(0.005)
        for press in range(presses):
            time.sleep(0.02 * press)  # an impatient user, pressing again while the first stops it
            if whole_group:
                os.killpg(process.pid, signal.SIGINT)
            else:
                process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        left = in_session(process.pid)
        give_up = time.monotonic() + 10
        while left and time.monotonic() < give_up:  # a second interpreter ends once it sees its socket closed
            time.sleep(0.05)
            left = in_session(process.pid)
        assert left == [], f"left running: {left}"
    finally:
        if process.poll() is None or in_session(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def during_the_reference_run(project: Path) -> Callable[[subprocess.Popen[str]], bool]:
    return lambda process: (project / "lives.log").exists()


def while_a_second_interpreter_starts(process: subprocess.Popen[str]) -> bool:
    return any(ZYGOTE in line for line in in_session(process.pid))


def assert_interrupted(done: subprocess.CompletedProcess[str]) -> int:
    """Exit 130, no traceback, and the summary of what ran: how many scenarios, and that it was interrupted."""
    assert done.returncode == 130, done.stdout + done.stderr
    for noise in ("Traceback", "Exception ignored", "never retrieved", "Error"):
        assert noise not in done.stderr, done.stderr
    summary = " ".join(done.stdout.split())  # (off a terminal, 80 columns: the summary may wrap)
    ran = re.search(
        r"crash exploration of Long: .*interrupted(?: before any scenario ran|: (\d+) ran, of the \d+ found so far)",
        summary,
    )
    assert ran is not None, done.stdout
    return int(ran.group(1) or 0)


@pytest.mark.parametrize("whole_group", [True, False], ids=["terminal", "process"])
@pytest.mark.parametrize("mode", ["kill", "inprocess"])
def test_ctrl_c_during_the_reference_run_says_no_scenario_ran(project: Path, mode: str, whole_group: bool) -> None:
    """Before the first scenario there is nothing to judge: it says so, with no traceback, and exits 130."""
    done = ctrl_c(project, during_the_reference_run(project), whole_group, "--mode", mode)
    assert assert_interrupted(done) == 0
    assert "interrupted before any scenario ran" in done.stdout


@pytest.mark.parametrize("whole_group", [True, False], ids=["terminal", "process"])
def test_ctrl_c_while_kill_modes_second_interpreter_starts(project: Path, redis_url: str, whole_group: bool) -> None:
    """Kill mode starts its second interpreters with the first resume: Ctrl-C while they import is not theirs
    to report, and they end with the command, the real Redis store emptied of the exploration's keys."""
    import redis

    done = ctrl_c(project, while_a_second_interpreter_starts, whole_group, "--mode", "kill", "--store", redis_url)
    assert_interrupted(done)
    assert redis.Redis.from_url(redis_url).keys("*") == []


def after_the_first_scenarios(process: subprocess.Popen[str]) -> bool:
    assert process.stderr is not None
    return bool(process.stderr.readline())  # off a terminal, a progress line every two seconds


def test_ctrl_c_pressed_again_while_it_stops_cuts_nothing_short(project: Path, redis_url: str) -> None:
    """A second Ctrl-C while the first stops the exploration is ignored: the lives are stopped, the real Redis
    store emptied, and what ran printed, as after one."""
    import redis

    done = ctrl_c(project, after_the_first_scenarios, True, "--mode", "kill", "--store", redis_url, presses=3)
    assert assert_interrupted(done) > 0
    assert redis.Redis.from_url(redis_url).keys("*") == []
