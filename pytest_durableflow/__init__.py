"""pytest_durableflow: fixtures and a crash harness that prove durableflow workflows survive crashes.

The crash explorer itself is ``durableflow.testing``; this package is its
pytest face. The names below load on first use, so that pytest loading this
plugin costs nothing for test runs that do not use it. ``CrashHarness`` and
``FakeResources`` are the types of the ``crash_harness`` and
``fake_resources`` fixtures, for annotating them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the redundant aliases mark re-exports, for type checkers and linters
    from durableflow.testing import KINDS as KINDS
    from durableflow.testing import Crash as Crash
    from durableflow.testing import FakeWorld as FakeWorld
    from durableflow.testing import FrozenClock as FrozenClock
    from durableflow.testing import ManualClock as ManualClock
    from durableflow.testing import Outcome as Outcome
    from durableflow.testing import Recorder as Recorder
    from durableflow.testing import Report as Report
    from durableflow.testing import explore as explore
    from durableflow.testing import run_scenario as run_scenario

    from ._fixtures import CrashHarness as CrashHarness
    from ._fixtures import FakeResources as FakeResources

_TESTING = ("Crash", "explore", "run_scenario", "KINDS", "Outcome", "Report", "FakeWorld", "Recorder")
_EXPORTS = {
    **dict.fromkeys((*_TESTING, "FrozenClock", "ManualClock"), "durableflow.testing"),
    "CrashHarness": "pytest_durableflow._fixtures",
    "FakeResources": "pytest_durableflow._fixtures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_durableflow' has no attribute {name!r}")
    return getattr(import_module(module), name)
