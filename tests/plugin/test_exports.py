"""What ``import pytest_durableflow`` offers, and what importing it and its plugin costs a test run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import durableflow
import pytest_durableflow
from pytest_durableflow import CrashHarness, FakeResources

EXPORTS = [
    "KINDS",
    "Crash",
    "CrashHarness",
    "FakeResources",
    "FakeWorld",
    "FrozenClock",
    "ManualClock",
    "Outcome",
    "Recorder",
    "Report",
    "explore",
    "run_scenario",
]


def test_all_lists_exactly_the_public_names_and_each_resolves() -> None:
    """``__all__`` is the public API, every name in it loads, and no other public name does."""
    assert sorted(pytest_durableflow.__all__) == sorted(EXPORTS)
    for name in EXPORTS:
        assert getattr(pytest_durableflow, name) is not None


def test_the_fixture_types_are_exported_for_annotations(crash_harness, fake_resources) -> None:
    """``crash_harness: CrashHarness`` and ``fake_resources: FakeResources`` name what the fixtures hand out."""
    assert isinstance(crash_harness, CrashHarness)
    assert isinstance(fake_resources, FakeResources)


def test_importing_the_package_and_its_plugin_imports_neither_durableflow_nor_pydantic() -> None:
    """pytest loads the plugin in every test run: importing it must not pull in the library or pydantic."""
    code = (
        "import sys, pytest_durableflow, pytest_durableflow.plugin; "
        "print(sorted(name for name in ('durableflow', 'pydantic') if name in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert found.stdout.strip() == "[]", found.stdout + found.stderr


def test_the_library_never_imports_the_plugin_and_its_explorer_needs_no_pytest() -> None:
    """Arrows point one way: ``durableflow`` (the crash explorer included) imports nothing of
    ``pytest_durableflow``, and ``durableflow.testing`` explores a workflow with pytest unimportable."""
    source = Path(durableflow.__file__).parent
    imports = re.compile(r"^\s*(from|import)\s+pytest_durableflow", re.M)
    importers = [str(p.relative_to(source)) for p in source.rglob("*.py") if imports.search(p.read_text())]
    assert importers == []
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "from durableflow import StartEvent, StopEvent, Workflow, step\n"
        "from durableflow.testing import explore\n"
        "class Once(Workflow):\n"
        "    @step\n"
        "    async def only(self, ev: StartEvent) -> StopEvent:\n"
        "        return StopEvent(result=1)\n"
        "report = explore(Once, {})\n"
        "print(len(report.scenarios), report.ok, 'pytest_durableflow' in sys.modules)\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert found.stdout.split() == ["7", "True", "False"], found.stdout + found.stderr
