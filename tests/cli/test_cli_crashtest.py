"""`durableflow crashtest`: the crash exploration from a shell, with its matrix, re-run lines and exit codes."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Outcome

Cli = Callable[..., Outcome]

LEDGER = '''
"""A ledger of documents: one workflow records progress after its Redis write, one before it."""

from typing import Annotated

from redis import Redis

from durableflow import Context, Resource, StartEvent, StopEvent, Workflow, step


def get_redis() -> Redis:
    return Redis(host="localhost", port=6379, decode_responses=True)


class Careful(Workflow):
    @step
    async def convert(self, ev: StartEvent, ctx: Context, redis: Annotated[Redis, Resource(get_redis)]) -> StopEvent:
        done = await ctx.store.get("done", default=[])
        for doc_id in ev.ids:
            if doc_id not in done:
                redis.sadd("converted", doc_id)  # idempotent: doing it twice changes nothing
                done.append(doc_id)
                await ctx.store.set("done", done)
                await ctx.checkpoint()
        return StopEvent(result=done)


class Hasty(Workflow):
    @step
    async def convert(self, ev: StartEvent, ctx: Context, redis: Annotated[Redis, Resource(get_redis)]) -> StopEvent:
        done = await ctx.store.get("done", default=[])
        for doc_id in ev.ids:
            if doc_id not in done:
                done.append(doc_id)
                await ctx.store.set("done", done)
                await ctx.checkpoint()  # progress is durable before the work it stands for
                redis.sadd("converted", doc_id)
        return StopEvent(result=done)
'''


@pytest.fixture
def ledger(project: Path) -> Path:
    (project / "ledger.py").write_text(LEDGER)
    return project


def test_a_crash_safe_workflow_passes_every_scenario(cli: Cli, ledger: Path) -> None:
    """Every crash point of a workflow that records progress after an idempotent write passes: exit 0."""
    outcome = cli("crashtest", "ledger:Careful", "--input", '{"ids": [1, 2]}', "--depth", "2")
    assert outcome.code == 0, outcome.out + outcome.err
    assert "crash point" in outcome.out and "step.convert.end#1" in outcome.out
    assert re.search(r"all \d+ scenarios passed", outcome.out)


def test_lost_work_fails_with_a_rerun_line_that_reproduces_it(cli: Cli, ledger: Path) -> None:
    """A workflow that records progress before its side effect exits 1,
    and each re-run line replays just that failure."""
    outcome = cli("crashtest", "ledger:Hasty", "--input", '{"ids": [1, 2]}', "--mode", "kill")
    assert outcome.code == 1
    assert "lost work" in outcome.out
    reruns = [line.removeprefix("re-run: ") for line in outcome.out.splitlines() if line.startswith("re-run: ")]
    assert reruns
    argv = shlex.split(reruns[0])
    assert argv[:2] == ["durableflow", "crashtest"]
    scenario = argv[argv.index("--scenario") + 1]
    replay = cli(*argv[1:])
    assert replay.code == 1
    assert f"{scenario}: lost work" in replay.out
    assert "1 of 1 scenarios failed" in replay.out


def test_report_writes_the_crash_matrix_as_html(cli: Cli, ledger: Path) -> None:
    """--report writes a self-contained page with one cell per scenario, failing cells linked to their diff."""
    outcome = cli("crashtest", "ledger:Hasty", "--input", '{"ids": [1]}', "--report", "matrix.html")
    assert outcome.code == 1
    page = (ledger / "matrix.html").read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    cells = re.findall(r'<td style="background:[^"]+" title="([^"]+)"', page)
    assert len(cells) == int(re.search(r"(\d+) scenarios of", page).group(1))  # type: ignore[union-attr]
    assert any("lost work" in title for title in cells)
    assert 'class="failure"' in page and "re-run:" in page


def test_an_unknown_workflow_is_a_usage_error(cli: Cli, ledger: Path) -> None:
    """A target that does not name a workflow exits 2 before exploring anything."""
    assert cli("crashtest", "ledger:Nothing", "--input", "{}").code == 2


def reruns(out: str) -> list[list[str]]:
    """The re-run lines a crashtest printed, split as a POSIX shell splits them."""
    return [shlex.split(line.removeprefix("re-run: ")) for line in out.splitlines() if line.startswith("re-run: ")]


def test_a_depth_2_failure_in_kill_mode_replays_from_its_rerun_line(cli: Cli, ledger: Path) -> None:
    """A failure of a crash during the resume (``a>b``) prints a line that replays that very scenario in kill mode."""
    outcome = cli("crashtest", "ledger:Hasty", "--input", '{"ids": [1, 2]}', "--depth", "2", "--mode", "kill")
    assert outcome.code == 1
    argv = next(argv for argv in reruns(outcome.out) if ">" in argv[argv.index("--scenario") + 1])
    scenario = argv[argv.index("--scenario") + 1]
    replay = cli(*argv[1:])
    assert replay.code == 1
    assert f"{scenario}: lost work" in replay.out and "1 of 1 scenarios failed" in replay.out


def test_a_run_that_asks_for_input_needs_respond(cli: Cli, project: Path) -> None:
    """Without --respond the exploration stops at the input request (exit 7, naming --respond);
    with it every request is answered, after restarts too."""
    unanswered = cli("crashtest", "cliflows:Approval", "--input", '{"amount": 5}')
    assert unanswered.code == 7 and "--respond" in unanswered.err
    answered = cli("crashtest", "cliflows:Approval", "--input", '{"amount": 5}', "--respond", '{"response": "yes"}')
    assert answered.code == 0, answered.out + answered.err
    assert re.search(r"all \d+ scenarios passed", answered.out)


PAYOUT = '''
"""A payout approved by a human, counted with an INCR that a re-run step repeats."""

from typing import Annotated

from redis import Redis

from durableflow import Context, HumanResponseEvent, InputRequiredEvent, Resource, StartEvent, StopEvent, Workflow, step


def get_redis() -> Redis:
    return Redis(host="localhost", port=6379, decode_responses=True)


class Payout(Workflow):
    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> InputRequiredEvent:
        await ctx.store.set("payee", ev.payee)
        return InputRequiredEvent(question=f"pay {ev.payee}?")

    @step
    async def pay(
        self, ev: HumanResponseEvent, ctx: Context, redis: Annotated[Redis, Resource(get_redis)]
    ) -> StopEvent:
        payee = await ctx.store.get("payee")
        redis.incr(f"paid:{payee}")  # not idempotent: a pay step that runs again pays again
        return StopEvent(result=f"{payee}: {ev.response}")
'''


def test_a_rerun_line_carries_quoted_json_respond_and_hang_after(cli: Cli, project: Path) -> None:
    """The re-run line of a human-in-the-loop failure quotes its JSON (quotes inside included) and carries
    --respond and --hang-after, so that run as printed it replays the same scenario to the same verdict."""
    (project / "payout.py").write_text(PAYOUT)
    given, answer = '{"payee": "O\'Brien"}', '{"response": "yes, it\'s fine"}'
    outcome = cli("crashtest", "payout:Payout", "--input", given, "--respond", answer, "--hang-after", "3")
    assert outcome.code == 1, outcome.out + outcome.err
    failure = re.search(r"^(\S+): (duplicated effect|divergent state)$", outcome.out, re.MULTILINE)
    assert failure, outcome.out
    scenario, kind = failure.groups()
    argv = next(argv for argv in reruns(outcome.out) if argv[argv.index("--scenario") + 1] == scenario)
    assert argv[argv.index("--input") + 1] == given and argv[argv.index("--respond") + 1] == answer
    assert float(argv[argv.index("--hang-after") + 1]) == 3
    replay = cli(*argv[1:])
    assert replay.code == 1, replay.out + replay.err
    assert f"{scenario}: {kind}" in replay.out and "1 of 1 scenarios failed" in replay.out


def test_an_unreachable_store_exits_6_without_a_traceback(cli: Cli, ledger: Path) -> None:
    """A workflow that imports fine, explored against a Redis store nothing listens at, exits 6: store unavailable."""
    pytest.importorskip("redis")
    outcome = cli("crashtest", "ledger:Careful", "--input", '{"ids": [1]}', "--store", "redis://127.0.0.1:1/0")
    assert outcome.code == 6
    assert "unreachable" in outcome.err and "Traceback" not in outcome.err


def test_an_input_the_uninterrupted_run_fails_on_exits_1_saying_so(cli: Cli, ledger: Path) -> None:
    """Without ids the run fails every time, crashed or not; that is reported, not passed as all green."""
    outcome = cli("crashtest", "ledger:Careful", "--input", "{}", "--depth", "2")
    assert outcome.code == 1
    assert "reference run of Careful ended failed, not completed" in outcome.err
    assert "scenarios passed" not in outcome.out


def test_a_store_path_is_refused_since_every_scenario_gets_its_own_store(cli: Cli, ledger: Path) -> None:
    outcome = cli("crashtest", "ledger:Careful", "--input", '{"ids": [1]}', "--store", "sqlite:///runs.db")
    assert outcome.code == 2
    assert "takes a kind (sqlite, memory, fakeredis) or a redis:// URL, not a path" in outcome.err
    assert not (ledger / "runs.db").exists()


SLOW = '''
"""Checkpoints after each document, each taking a little real time: an exploration that lasts."""

import time

from durableflow import Context, StartEvent, StopEvent, Workflow, step


class Slow(Workflow):
    @step
    async def convert(self, ev: StartEvent, ctx: Context) -> StopEvent:
        done = await ctx.store.get("done", default=[])
        for doc_id in ev.ids:
            if doc_id not in done:
                time.sleep(0.05)
                done.append(doc_id)
                await ctx.store.set("done", done)
                await ctx.checkpoint()
        return StopEvent(result=done)
'''

PROGRESS = re.compile(r"^crashing slow:Slow: (\d+) scenarios? judged \((\d+) failed\) of (\d+) planned so far$")


def interrupt(project: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run a long crashtest of ``Slow`` from a shell, press Ctrl-C (SIGINT to its whole process group, as a
    terminal sends it) once it has printed a progress line, and return how it ended and that line."""
    (project / "slow.py").write_text(SLOW)
    argv = [
        sys.executable,
        "-m",
        "durableflow",
        "crashtest",
        "slow:Slow",
        "--input",
        '{"ids": [1, 2, 3, 4, 5, 6, 7, 8]}',
    ]
    command = [*argv, "--depth", "2", "--seed", "1", "--report", "matrix.html", *options]
    process = subprocess.Popen(
        command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stderr is not None
        progress = process.stderr.readline().rstrip("\n")  # not a terminal: a plain line, not a bar
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err), progress


def assert_partial(done: subprocess.CompletedProcess[str], progress: str, project: Path) -> None:
    """Exit 130, the scenarios judged so far in the matrix and the page, no traceback."""
    assert PROGRESS.match(progress), progress
    assert done.returncode == 130, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "never retrieved" not in done.stderr, done.stderr
    ran = re.search(r"all (\d+) scenarios passed \(interrupted: (\d+) ran, of the (\d+) found so far\)", done.stdout)
    assert ran is not None, done.stdout
    assert 0 < int(ran.group(1)) == int(ran.group(2)) < int(ran.group(3))
    assert "checkpoint.write.before#1" in done.stdout  # the matrix: the first point explored
    page = (project / "matrix.html").read_text()
    assert page.startswith("<!doctype html>") and "interrupted: the rest never ran" in page


def test_ctrl_c_keeps_the_scenarios_judged_so_far_and_writes_the_report(project: Path) -> None:
    """Off a terminal, progress comes as plain lines on stderr; Ctrl-C then stops the exploration, prints the
    matrix of what ran, writes the page and exits 130, with no traceback."""
    done, progress = interrupt(project)
    assert_partial(done, progress, project)


def test_ctrl_c_in_kill_mode_on_a_real_redis_leaves_no_key_behind(project: Path, redis_url: str) -> None:
    """Ctrl-C reaches every process of kill mode (lives and the second interpreters too): it ends as in-process
    mode does, and the real Redis store holds no key of the exploration afterwards."""
    import redis

    done, progress = interrupt(project, "--mode", "kill", "--store", redis_url)
    assert_partial(done, progress, project)
    assert redis.Redis.from_url(redis_url).keys("*") == []


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_real_redis_store_holds_no_key_after_an_exploration(
    cli: Cli, ledger: Path, redis_url: str, mode: str
) -> None:
    """Every scenario's store is a prefix of its own in the user's Redis: deleted once judged, failures too."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("users-own-key", "kept")
    outcome = cli("crashtest", "ledger:Hasty", "--input", '{"ids": [1, 2]}', "--mode", mode, "--store", redis_url)
    assert outcome.code == 1 and "lost work" in outcome.out
    assert client.keys("*") == [b"users-own-key"]


def test_kill_mode_with_its_redis_store_down_exits_6_without_a_traceback(cli: Cli, ledger: Path) -> None:
    """Kill mode's lives would each meet the dead store in a process of their own: it is found before any
    life is forked, and said once, with what to do."""
    outcome = cli(
        "crashtest", "ledger:Careful", "--input", '{"ids": [1]}', "--mode", "kill", "--store", "redis://127.0.0.1:1/0"
    )
    assert outcome.code == 6
    assert "unreachable" in outcome.err and "start it" in outcome.err and "Traceback" not in outcome.err
    assert "scenarios" not in outcome.out


@pytest.mark.parametrize(
    ("mode", "seed", "start"),
    [("kill", "7", "PYTHONHASHSEED=7 durableflow crashtest"), ("kill", None, "durableflow crashtest"),
     ("kill", "random", "durableflow crashtest"), ("inprocess", "7", "durableflow crashtest")],
)  # fmt: skip
def test_a_kill_mode_rerun_line_carries_the_hash_seed_its_dying_lives_ran_under(
    monkeypatch: pytest.MonkeyPatch, mode: str, seed: str | None, start: str
) -> None:
    """Kill mode forks the lives that die from this process, under its hash seed: a set-order failure comes
    back on its re-run line only under the same one, which only the environment can fix."""
    import argparse

    from durableflow.cli._crashtest import _rerun_line

    if seed is None:
        monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    else:
        monkeypatch.setenv("PYTHONHASHSEED", seed)
    args = argparse.Namespace(
        target="flows:Flow", input="{}", respond=None, paths=[], mode=mode, store="sqlite:///r.db",
        hang_after=10.0, downtime=300.0, seed=1,
    )  # fmt: skip
    assert _rerun_line(args, "step.a.end#1").startswith(start + " flows:Flow")
