"""Without the ``pytest`` extra's fakeredis or freezegun, the plugin still loads and names the extra to install."""

from __future__ import annotations

import pytest

BLOCK = """
import sys

# As if the extra were not installed: importing these now raises ImportError.
for name in ("fakeredis", "freezegun"):
    sys.modules[name] = None
"""

USES = """
import flows


def test_nothing_durableflow():
    pass


def test_frozen_clock(frozen_clock):
    pass


def test_fake_redis(fake_redis):
    pass


def test_fakeredis_store(checkpointer):
    pass


def test_exploring_a_redis_workflow(crash_harness):
    crash_harness.explore(flows.AddThenRecord, {"ids": [1]})
"""


def test_the_plugin_loads_and_each_fixture_names_the_missing_extra(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session without fakeredis and freezegun starts, runs plain tests, and each fixture needing them says
    the ``durableflow[pytest]`` extra."""
    project.makepyfile(blockextras=BLOCK, test_uses=USES)
    monkeypatch.setenv("COLUMNS", "400")  # the short summary keeps each error's message whole
    # -p loads the blocker before pytest loads entry-point plugins, so the plugin itself is imported without them
    result = project.runpytest_subprocess("-p", "blockextras", "--durableflow-store=fakeredis", "-rA")

    result.stdout.fnmatch_lines(["durableflow: seed=* mode=inprocess *"])
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1, result.stdout.str()
    for test in ("test_frozen_clock", "test_fake_redis", "test_fakeredis_store", "test_exploring_a_redis_workflow"):
        result.stdout.re_match_lines([rf"(ERROR|FAILED) test_uses\.py::{test} .*durableflow\[pytest\]"])
