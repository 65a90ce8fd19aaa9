"""pytest_durableflow: fixtures and a crash harness that prove durableflow workflows survive crashes.

The names below load on first use, so that pytest loading this plugin costs
nothing for test runs that do not use it. ``CrashHarness`` and
``FakeResources`` are the types of the ``crash_harness`` and
``fake_resources`` fixtures, for annotating them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the redundant aliases mark re-exports, for type checkers and linters
    from ._clock import FrozenClock as FrozenClock
    from ._clock import ManualClock as ManualClock
    from ._fixtures import CrashHarness as CrashHarness
    from ._fixtures import FakeResources as FakeResources
    from ._harness import Crash as Crash
    from ._harness import explore as explore
    from ._harness import run_scenario as run_scenario
    from ._report import KINDS as KINDS
    from ._report import Outcome as Outcome
    from ._report import Report as Report
    from ._world import FakeWorld as FakeWorld
    from ._world import Recorder as Recorder

_EXPORTS = {
    "Crash": "._harness",
    "explore": "._harness",
    "run_scenario": "._harness",
    "KINDS": "._report",
    "Outcome": "._report",
    "Report": "._report",
    "FakeWorld": "._world",
    "Recorder": "._world",
    "FrozenClock": "._clock",
    "ManualClock": "._clock",
    "CrashHarness": "._fixtures",
    "FakeResources": "._fixtures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_durableflow' has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)
