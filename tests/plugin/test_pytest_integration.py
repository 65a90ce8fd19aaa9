"""The plugin inside pytest: header, seeds, ini twins, the marker, the terminal summary, xdist and shards."""

from __future__ import annotations

import gc
import json
from itertools import chain

import pytest

from .downstream import failure_seeds, failures, header_seed, printed, reruns, write_ini

SAMPLED = """
import flows


def test_sampled(crash_harness):
    report = crash_harness.explore(flows.AddThenRecord, {"ids": [1, 2]})
    print("SCENARIOS", " ".join(o.id for o in report.scenarios))
    report.assert_ok()
"""


def sampled_ids(project: pytest.Pytester, *args: str) -> tuple[list[str], pytest.RunResult]:
    result = project.runpytest("-s", "--durableflow-max-scenarios=3", *args)
    result.assert_outcomes(passed=1)
    (line,) = printed(result, "SCENARIOS")
    return line.split(), result


def test_the_report_header_says_seed_mode_depth_and_store_in_one_line(project: pytest.Pytester) -> None:
    """The header line carries the session seed and the mode, so that a CI log says how to reproduce the run."""
    project.makepyfile("def test_nothing(): pass")
    result = project.runpytest("--durableflow-seed=123", "--durableflow-mode=kill", "--durableflow-store=sqlite")

    result.stdout.fnmatch_lines(["durableflow: seed=123 mode=kill depth=1 store=sqlite"])


def test_the_same_seed_samples_the_same_scenarios(project: pytest.Pytester) -> None:
    """With --durableflow-max-scenarios, two runs with one seed explore the same sample; other seeds pick others."""
    project.makepyfile(test_sampled=SAMPLED)

    first, _ = sampled_ids(project, "--durableflow-seed=1")
    again, _ = sampled_ids(project, "--durableflow-seed=1")
    others = [sampled_ids(project, f"--durableflow-seed={seed}")[0] for seed in (2, 3)]

    assert len(first) == 3
    assert again == first
    assert any(other != first for other in others)


def test_the_random_seed_in_the_header_reproduces_the_sample(project: pytest.Pytester) -> None:
    """Without --durableflow-seed a random seed is drawn and shown; passing it back gives the same sample."""
    project.makepyfile(test_sampled=SAMPLED)

    drawn, result = sampled_ids(project)
    again, _ = sampled_ids(project, f"--durableflow-seed={header_seed(result)}")

    assert again == drawn


SETTINGS = """
import flows


def test_settings(crash_harness, checkpointer):
    report = crash_harness.explore(flows.AddThenRecord, {"ids": [1]})
    print("MODE", report.mode)
    print("DEPTH", report.depth)
    print("SCENARIOS", " ".join(o.id for o in report.scenarios))
    print("STORE", type(checkpointer).__name__)


def test_hang(crash_harness):
    outcome = crash_harness.run_scenario(flows.WaitsForInstanceSignal, {}, "step.consume.start#1")
    print("HANG", outcome.kind, outcome.seconds)
"""


def run_settings(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    project.makepyfile(test_options=SETTINGS)
    result = project.runpytest("-s", "-k", "test_settings", *args)
    result.assert_outcomes(passed=1)
    return result


@pytest.mark.parametrize(
    ("ini", "tag", "expected"),
    [
        ("durableflow_mode = kill", "MODE", "kill"),
        ("durableflow_depth = 2", "DEPTH", "2"),
        ("durableflow_store = sqlite", "STORE", "SQLiteCheckpointer"),
        ("durableflow_store = fakeredis", "STORE", "RedisCheckpointer"),
        ("durableflow_scenario = step.convert.start#1", "SCENARIOS", "step.convert.start#1"),
    ],
)
def test_an_ini_setting_applies_like_its_option(project: pytest.Pytester, ini: str, tag: str, expected: str) -> None:
    """Each ``durableflow_*`` ini setting changes what the tests get, as the command-line option does."""
    write_ini(project, ini)
    assert printed(run_settings(project), tag) == [expected]

    name, _, value = ini.partition(" = ")
    write_ini(project)
    option = "--" + name.replace("_", "-")
    assert printed(run_settings(project, f"{option}={value}"), tag) == [expected]


def test_the_ini_seed_is_the_session_seed(project: pytest.Pytester) -> None:
    """``durableflow_seed`` fixes the session seed the header shows."""
    write_ini(project, "durableflow_seed = 99")
    assert header_seed(run_settings(project)) == 99


def test_the_ini_max_scenarios_samples(project: pytest.Pytester) -> None:
    """``durableflow_max_scenarios`` caps each exploration at that many scenarios."""
    write_ini(project, "durableflow_max_scenarios = 2")
    (line,) = printed(run_settings(project), "SCENARIOS")
    assert len(line.split()) == 2


def test_the_ini_hang_bound_cuts_a_hang_short(project: pytest.Pytester) -> None:
    """``durableflow_hang_after`` bounds each life of a run: a hang is reported after it, not after the 5 s default."""
    write_ini(project, "durableflow_hang_after = 0.3")
    project.makepyfile(test_options=SETTINGS)
    result = project.runpytest("-s", "-k", "test_hang", "-W", "error::pytest.PytestUnraisableExceptionWarning")
    gc.collect()
    result.assert_outcomes(passed=1)

    ((kind, seconds),) = (line.split() for line in printed(result, "HANG"))
    assert kind == "hang"
    assert 0.3 <= float(seconds) < 4.0  # the default bound is 5 s


def test_the_ini_redis_url_points_the_redis_store_at_that_server(project: pytest.Pytester, redis_url: str) -> None:
    """``durableflow_redis_url`` is the server behind ``durableflow_store = redis``."""
    write_ini(project, "durableflow_store = redis", f"durableflow_redis_url = {redis_url}")
    project.makepyfile(
        test_url="""
        def test_url(checkpointer):
            pool = checkpointer.client.connection_pool.connection_kwargs
            print("SERVER", pool["host"], pool["port"])
        """
    )
    result = project.runpytest("-s")

    result.assert_outcomes(passed=1)
    host_port = redis_url.removeprefix("redis://").rsplit("/", 1)[0].replace(":", " ")
    assert printed(result, "SERVER") == [host_port]


def test_the_ini_report_path_gets_the_crash_matrix(project: pytest.Pytester) -> None:
    """``durableflow_report`` writes the HTML crash matrix of the session's explorations there."""
    write_ini(project, "durableflow_report = matrix.html")
    result = run_settings(project)

    result.stdout.fnmatch_lines(["crash matrix written to matrix.html"])
    html = (project.path / "matrix.html").read_text()
    assert "AddThenRecord" in html and "step.convert.start#1" in html


def test_the_command_line_beats_the_ini_file(project: pytest.Pytester) -> None:
    """An option on the command line overrides the same setting in the ini file."""
    write_ini(project, "durableflow_mode = kill")
    result = run_settings(project, "--durableflow-mode=inprocess")

    assert printed(result, "MODE") == ["inprocess"]
    result.stdout.fnmatch_lines(["durableflow: seed=* mode=inprocess *"])


MARKED = """
import pytest
import flows


def explore_and_print(crash_harness, request):
    report = crash_harness.explore(flows.AddThenRecord, {"ids": [1]})
    print("REPORT", request.node.name, report.mode, report.depth, len(report.scenarios))


@pytest.mark.durableflow(mode="kill", depth=2, max_scenarios=3)
def test_marked(crash_harness, request):
    explore_and_print(crash_harness, request)


def test_unmarked(crash_harness, request):
    explore_and_print(crash_harness, request)
"""


def test_the_marker_sets_a_tests_defaults(project: pytest.Pytester) -> None:
    """``@pytest.mark.durableflow(mode=, depth=, max_scenarios=)`` applies to that test only."""
    project.makepyfile(test_defaults=MARKED)
    result = project.runpytest("-s")

    result.assert_outcomes(passed=2)
    assert sorted(printed(result, "REPORT")) == ["test_marked kill 2 3", "test_unmarked inprocess 1 9"]


def test_the_command_line_overrides_the_marker(project: pytest.Pytester) -> None:
    """Options given on the command line win over the marker's defaults, and the marker wins over the ini file."""
    write_ini(project, "durableflow_mode = inprocess", "durableflow_depth = 1")
    project.makepyfile(test_defaults=MARKED)
    result = project.runpytest(
        "-s", "-k", "test_marked", "--durableflow-mode=inprocess", "--durableflow-max-scenarios=2"
    )

    result.assert_outcomes(passed=1)
    assert printed(result, "REPORT") == ["test_marked inprocess 2 2"]


SUMMARY = """
import flows


def test_right(crash_harness):
    crash_harness.explore(flows.AddThenRecord, {"ids": [1]}).assert_ok()


def test_wrong(crash_harness):
    crash_harness.explore(flows.RecordThenAdd, {"ids": [1]}).assert_ok()
"""


def test_the_summary_says_which_failing_scenarios_were_expected_by_tests_that_passed(
    project: pytest.Pytester,
) -> None:
    """A test that checks a wrong workflow is caught passes: a green run is not read as one with failures."""
    project.makepyfile(
        test_expects="""
import flows

def test_caught(crash_harness):
    assert crash_harness.explore(flows.RecordThenAdd, {"ids": [1]}).failures
"""
    )
    result = project.runpytest("--durableflow-seed=5")

    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [r"1 explorations, 9 scenarios, (\d+) failed \(\1 of them in tests that passed, which expect them\) "]
    )


def test_the_terminal_summary_lists_each_exploration(project: pytest.Pytester) -> None:
    """After the run one section lists each exploration: its test, mode, depth, scenarios, failures, slowest one."""
    project.makepyfile(test_summary=SUMMARY)
    result = project.runpytest("--durableflow-seed=5")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= durableflow crash exploration =*",
            "2 explorations, 18 scenarios, 1 failed (session seed 5)",
        ]
    )
    for test, failed in (("test_right", 0), ("test_wrong", 1)):  # slowest first: either may come first
        line = rf"  test_summary\.py::{test} +inprocess +depth 1 +9 scenarios +{failed} failed +[\d.]+s, "
        result.stdout.re_match_lines([line + r"slowest \S+#\d+ \d+ms"])


# -- pytest-xdist ------------------------------------------------------------------------------

XDIST = """
import pytest
import flows


@pytest.mark.parametrize("ids", [[1], [2], [3], [1, 2]])
def test_wrong(crash_harness, ids):
    crash_harness.explore(flows.PushThenRecord, {"ids": ids}).assert_ok()
"""


def test_under_xdist_each_worker_uses_the_controllers_seed(project: pytest.Pytester) -> None:
    """With ``-n 2`` the workers use the controller's random seed: every test's seed is the one it has without xdist."""
    project.makepyfile(test_xdist=XDIST)
    spread = project.runpytest("-n", "2")
    spread.assert_outcomes(failed=4)
    assert "[gw0]" in spread.stdout.str() and "[gw1]" in spread.stdout.str(), "both workers explored"
    spread.stdout.re_match_lines([r"4 explorations, \d+ scenarios, \d+ failed \(session seed \d+\)"])

    alone = project.runpytest(f"--durableflow-seed={header_seed(spread)}")
    alone.assert_outcomes(failed=4)

    assert len(failure_seeds(spread)) == 4
    assert failure_seeds(spread) == failure_seeds(alone)


def test_under_xdist_a_given_seed_gives_the_seeds_it_gives_without(project: pytest.Pytester) -> None:
    """``--durableflow-seed`` gives each test the same seed with ``-n 2`` as without it."""
    project.makepyfile(test_xdist=XDIST)
    spread = project.runpytest("-n", "2", "--durableflow-seed=42")
    alone = project.runpytest("--durableflow-seed=42")

    assert header_seed(spread) == header_seed(alone) == 42
    assert len(failure_seeds(spread)) == 4
    assert failure_seeds(spread) == failure_seeds(alone)


SHARDED = """
import json
import pathlib

import pytest
import flows

OUT = pathlib.Path(__file__).parent / "explored"


def explore(crash_harness, request, **options):
    report = crash_harness.explore(flows.RenderPages, {"pages": 2}, **options)
    OUT.mkdir(exist_ok=True)
    (OUT / f"{request.node.name}.json").write_text(json.dumps([o.id for o in report.scenarios]))
    report.assert_ok()


@pytest.mark.durableflow(shards=3)
def test_sharded(crash_harness, request):
    explore(crash_harness, request)


def test_whole(crash_harness, request):
    explore(crash_harness, request)


@pytest.mark.durableflow(shards=3, max_scenarios=7)
def test_sampled_sharded(crash_harness, request):
    explore(crash_harness, request)


@pytest.mark.durableflow(shards=3, depth=2)
def test_deep_sharded(crash_harness, request):
    explore(crash_harness, request)


@pytest.mark.durableflow(depth=2)
def test_deep_whole(crash_harness, request):
    explore(crash_harness, request)
"""


def explored_ids(project: pytest.Pytester) -> dict[str, list[str]]:
    folder = project.path / "explored"
    return {path.stem: json.loads(path.read_text()) for path in folder.iterdir()}


def test_shards_split_one_exploration_across_xdist_workers(project: pytest.Pytester) -> None:
    """``shards=3`` makes three items whose scenarios, run on xdist workers, are the whole exploration once each."""
    project.makepyfile(test_pages=SHARDED)
    result = project.runpytest("-n", "2", "-k", "test_sharded or test_whole")
    result.assert_outcomes(passed=4)

    ids = explored_ids(project)
    shards = [ids[f"test_sharded[shard{i}]"] for i in range(3)]
    assert all(shards)
    assert sorted(chain(*shards)) == sorted(ids["test_whole"])


def test_sampled_shards_share_one_sample(project: pytest.Pytester) -> None:
    """With sampling, the shards of one test split one sample of the space between them, overlapping nowhere."""
    project.makepyfile(test_pages=SHARDED)
    project.runpytest("-k", "test_sampled_sharded").assert_outcomes(passed=3)

    ids = explored_ids(project)
    shards = [ids[f"test_sampled_sharded[shard{i}]"] for i in range(3)]
    together = list(chain(*shards))
    assert len(set(together)) == len(together) == 7


def test_depth_2_shards_cover_the_whole_depth_2_exploration(project: pytest.Pytester) -> None:
    """At depth 2, the shards' scenarios together are the unsharded exploration's, each once."""
    project.makepyfile(test_pages=SHARDED)
    project.runpytest("-k", "deep").assert_outcomes(passed=4)

    ids = explored_ids(project)
    shards = [ids[f"test_deep_sharded[shard{i}]"] for i in range(3)]
    assert sorted(chain(*shards)) == sorted(ids["test_deep_whole"])


SHARDED_WRONG = """
import pytest
import flows


@pytest.mark.durableflow(shards=3)
def test_sharded_wrong(crash_harness):
    crash_harness.explore(flows.InstanceProgress, {"ids": [1, 2]}).assert_ok()
"""


def test_a_sharded_failure_replays_from_its_rerun_line(project: pytest.Pytester) -> None:
    """The re-run line of a failure in one shard names that shard's item and replays the scenario there."""
    project.makepyfile(test_sharded_wrong=SHARDED_WRONG)
    first = project.runpytest()
    first.assert_outcomes(failed=3)
    printed_lines = reruns(first)
    items = {f"test_sharded_wrong.py::test_sharded_wrong[shard{i}]" for i in range(3)}
    assert {args[0] for args, _ in printed_lines} == items

    for args, scenario in printed_lines:
        again = project.runpytest(*args)
        again.assert_outcomes(failed=1)
        assert failures(again) == [(scenario, "duplicated effect")]
