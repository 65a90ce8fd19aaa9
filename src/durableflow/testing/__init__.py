"""durableflow.testing: the crash explorer, shared by the pytest plugin and ``durableflow crashtest``.

It also holds ``WorkflowTestRunner``, at the path llama-index-workflows users import it from.

``explore`` kills a run at every crash point, resumes it and judges each
scenario against an uninterrupted run; ``run_scenario`` replays one. Nothing
here imports pytest; fakeredis and freezegun load only when a run needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._test_runner import WorkflowTestResult, WorkflowTestRunner
    from ._clock import FrozenClock, ManualClock
    from ._explore import explore, run_scenario
    from ._html import crash_matrix, write_html
    from ._lives import Crash
    from ._report import KINDS, ExplorationSummary, Outcome, Report, summary_of
    from ._world import FakeWorld, Recorder

__all__ = [
    "KINDS",
    "Crash",
    "ExplorationSummary",
    "FakeWorld",
    "FrozenClock",
    "ManualClock",
    "Outcome",
    "Recorder",
    "Report",
    "WorkflowTestResult",
    "WorkflowTestRunner",
    "crash_matrix",
    "explore",
    "run_scenario",
    "summary_of",
    "write_html",
]

# The modules above, imported when a name of theirs is first asked for: the CLI's other commands import a
# module of this package (the crashtest's defaults) without paying for the exploration engine.
_HOMES = (".._test_runner", "._clock", "._explore", "._html", "._lives", "._report", "._world")


def __getattr__(name: str) -> Any:
    if name in __all__:
        for home in _HOMES:
            module = importlib.import_module(home, __name__)
            if name in vars(module):
                globals()[name] = value = vars(module)[name]
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
