"""A failing exploration fails its test, says what went wrong, and prints a line that re-runs just that scenario."""

from __future__ import annotations

import re

import pytest

from .downstream import failure_sections, failures, reruns

WRONG_TESTS = """
import pytest
import flows


@pytest.mark.parametrize("name", list(flows.WRONG))
def test_wrong(crash_harness, fake_resources, name):
    fake_resources.override(flows.get_payments, flows.FakePayments, record=True)
    workflow, start, _ = flows.WRONG[name]
    crash_harness.explore(workflow, start).assert_ok()
"""

DEPTH_FROM_THE_COMMAND_LINE = """
import flows


def test_instance_progress(crash_harness):
    crash_harness.explore(flows.InstanceProgress, {"ids": [1, 2]}).assert_ok()
"""

DEPTH_2 = """
import pytest
import flows


@pytest.mark.durableflow(depth=2)
def test_instance_progress(crash_harness):
    crash_harness.explore(flows.InstanceProgress, {"ids": [1, 2]}).assert_ok()
"""


def run(project: pytest.Pytester, mode: str, *args: str) -> pytest.RunResult:
    """Kill mode's lives are forked from the process that runs pytest: it gets a process of its own, whose
    output nothing they inherit can reach (run in this process, about one kill-mode run in ten lost its
    terminal summary from what the test reads)."""
    if mode == "kill":
        return project.runpytest_subprocess("-p", "no:cacheprovider", *args)
    return project.runpytest(*args)


def test_every_wrong_workflow_fails_its_test_naming_the_kind(project: pytest.Pytester) -> None:
    """A downstream test exploring each wrong workflow fails, and its output names each failing scenario's kind."""
    from .flows import WRONG

    project.makepyfile(test_wrong=WRONG_TESTS)
    result = project.runpytest()

    result.assert_outcomes(failed=len(WRONG))
    sections = failure_sections(result)
    for name, (workflow, _, kind) in WRONG.items():
        text = sections[f"test_wrong[{name}]"]
        assert f"crash exploration of {workflow.__name__}: " in text
        assert failures(text), text
        assert {found for _, found in failures(text)} == {kind}


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_the_printed_rerun_line_replays_exactly_that_failure(project: pytest.Pytester, mode: str) -> None:
    """The re-run line a failure printed runs that one scenario alone, in the same mode, and it fails the same way."""
    project.makepyfile(test_wrong=WRONG_TESTS)
    first = run(project, mode, "-k", "rpush", f"--durableflow-mode={mode}")
    first.assert_outcomes(failed=1)
    failed = dict(failures(first))
    printed_lines = reruns(first)
    assert len(printed_lines) == len(failed) > 0

    args, scenario = printed_lines[-1]
    again = run(project, mode, *args)

    again.assert_outcomes(failed=1)
    assert failures(again) == [(scenario, failed[scenario])]
    again.stdout.fnmatch_lines([f"*crash exploration of PushThenRecord: 1 of 1 scenarios failed [[]mode={mode} *"])


def test_a_depth_2_failure_replays_from_its_two_crash_points(project: pytest.Pytester) -> None:
    """A scenario id with two crash points (``a>b``) printed at depth 2 replays as that one pair."""
    project.makepyfile(test_depth_2=DEPTH_2)
    first = project.runpytest()
    first.assert_outcomes(failed=1)
    pairs = [(args, scenario) for args, scenario in reruns(first) if ">" in scenario]
    assert pairs

    args, scenario = pairs[0]
    again = project.runpytest(*args)

    again.assert_outcomes(failed=1)
    assert failures(again) == [(scenario, dict(failures(first))[scenario])]


def test_a_depth_2_kill_mode_failure_replays_from_its_rerun_line(project: pytest.Pytester) -> None:
    """A pair that a kill-mode run at ``--durableflow-depth=2`` printed replays alone, though its re-run line does
    not carry the depth, and fails the same way."""
    project.makepyfile(test_depth_2=DEPTH_FROM_THE_COMMAND_LINE)
    first = run(
        project,
        "kill",
        "--durableflow-mode=kill",
        "--durableflow-depth=2",
        "--durableflow-max-scenarios=40",
        "--durableflow-seed=1",
    )
    first.assert_outcomes(failed=1)
    pairs = [(args, scenario) for args, scenario in reruns(first) if ">" in scenario]
    assert pairs
    args, scenario = pairs[0]
    assert not any(arg.startswith("--durableflow-depth") for arg in args)

    again = run(project, "kill", *args)

    again.assert_outcomes(failed=1)
    assert failures(again) == [(scenario, dict(failures(first))[scenario])]
    again.stdout.fnmatch_lines(["*of InstanceProgress: 1 of 1 scenarios failed [[]mode=kill depth=2 *"])


SET_ORDER = """
import flows


def test_ship_in_set_order(crash_harness):
    crash_harness.explore(flows.ShipInSetOrder, {"skus": ["sku-a", "sku-b", "sku-c", "sku-d"]}).assert_ok()
"""


def test_a_kill_mode_rerun_line_carries_the_hash_seed_its_dying_lives_ran_under(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lives that die are forked from the test's process: a set-order failure there comes back on its re-run
    line only under the same PYTHONHASHSEED, which the line carries when it is set, and a note asks for when not."""
    project.makepyfile(test_set_order=SET_ORDER)
    monkeypatch.setenv("PYTHONHASHSEED", "11")
    first = run(project, "kill", "--durableflow-mode=kill", "--durableflow-seed=3")
    first.assert_outcomes(failed=1)
    assert re.search(r"re-run: PYTHONHASHSEED=11 pytest 'test_set_order.py", first.stdout.str())
    printed = reruns(first)
    for args, scenario in printed[:2]:
        again = run(project, "kill", *args)
        assert failures(again) == [(scenario, dict(failures(first))[scenario])]

    monkeypatch.delenv("PYTHONHASHSEED")
    project.makepyfile(test_wrong=WRONG_TESTS)
    unseeded = run(project, "kill", "test_wrong.py", "-k", "rpush", "--durableflow-mode=kill")
    unseeded.assert_outcomes(failed=1)
    assert "note: the lives that died ran under this process's hash seed, a random one" in unseeded.stdout.str()
    assert "re-run: pytest 'test_wrong.py" in unseeded.stdout.str()


TWO_EXPLORATIONS = """
import flows


def test_two_workflows(crash_harness):
    crash_harness.explore(flows.AddThenRecord, {"ids": [1, 2]}).assert_ok()
    crash_harness.explore(flows.PushThenRecord, {"ids": [1, 2]}).assert_ok()
"""


def test_a_failure_in_a_tests_second_exploration_replays_that_exploration_alone(project: pytest.Pytester) -> None:
    """The re-run line says which exploration of the test it replays; the others run nothing."""
    project.makepyfile(test_two=TWO_EXPLORATIONS)
    first = project.runpytest()
    first.assert_outcomes(failed=1)
    failed = dict(failures(first))
    args, replayed = reruns(first)[0]
    nth, _, scenario = replayed.partition(":")
    assert nth == "2" and scenario in failed

    again = project.runpytest(*args)
    again.assert_outcomes(failed=1)
    assert failures(again) == [(scenario, failed[scenario])]
    again.stdout.fnmatch_lines(["*crash exploration of PushThenRecord: 1 of 1 scenarios failed*"])


def test_a_rerun_line_works_from_the_directory_pytest_was_started_in(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started from a subdirectory of the rootdir, the re-run line names the test file relative to it."""
    tests = project.mkpydir("tests")
    (tests / "test_wrong.py").write_text(DEPTH_FROM_THE_COMMAND_LINE)
    monkeypatch.chdir(tests)
    first = project.runpytest_subprocess("-p", "no:cacheprovider")
    first.assert_outcomes(failed=1)
    args, scenario = reruns(first)[0]
    assert args[0] == "test_wrong.py::test_instance_progress"

    again = project.runpytest_subprocess("-p", "no:cacheprovider", *args)
    again.assert_outcomes(failed=1)
    assert [found for found, _ in failures(again)] == [scenario]
