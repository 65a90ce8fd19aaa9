"""What an exploration can be told: its ``Settings``, with their defaults."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from durableflow import Event, InputRequiredEvent

if TYPE_CHECKING:  # annotations only: the CLI reads this module's defaults without loading the harness
    from ._report import Outcome
    from ._stores import StoreKind
    from ._world import Fake

Mode = Literal["inprocess", "kill"]
Respond = Callable[[InputRequiredEvent], Event | None]

DOWNTIME = 300.0
"""A restart five minutes after the crash: a minute-keyed decision always sees another minute."""


def fixed_hash_seed() -> str:
    """This process's hash seed where the environment fixed it (``""``: a random one). Kill mode forks the
    lives that die from this process, so a re-run line reproduces a set-order failure only under this seed."""
    seed = os.environ.get("PYTHONHASHSEED", "")
    return seed if seed.isdigit() else ""


@dataclass
class Settings:
    mode: Mode = "inprocess"
    depth: int = 1
    seed: int | None = None
    max_scenarios: int | None = None
    store: StoreKind | None = None
    """``memory``, ``sqlite``, ``fakeredis``, a ``redis://`` URL, or a factory of empty checkpointers."""
    respond: Respond | None = None
    fakes: Mapping[object, Fake] = field(default_factory=dict)
    record: frozenset[object] = frozenset()
    hang_after: float = 5.0
    only: str | None = None
    """Run just this scenario id (the re-run line passes it)."""
    shard: tuple[int, int] | None = None
    """``(index, count)``: run every count-th scenario from index (pytest-xdist splits explorations so)."""
    rerun: str = ""
    """A template with ``{id}`` for each failure's re-run line."""
    on_scenario: Callable[[Outcome, int], None] | None = None
    """Called after each scenario with its outcome and the number of scenarios planned so far."""
    zombies: bool = True
    """Also pause lives past their lease while another worker takes the run over (``zombie@...`` scenarios),
    and check that a live run's lease keeps a second worker out."""
    compact: bool = False
    """Write every checkpoint as a full snapshot: each read-back then checks what compaction keeps."""
    keep_partial: bool = False
    """On Ctrl-C, return the scenarios judged so far (``Report.interrupted``) instead of raising."""
    hash_seed: int = 1
    """Kill mode: the lives that resume a crashed run run under a hash seed derived from it, not the test
    process's (see ``_zygote``)."""
    downtime: float = DOWNTIME
    """Seconds the clock jumps across each crash: a resumed run starts that much later than its crash."""


def told(excinfo: Any) -> bool:
    """Whether pytest hides the frames of a module that sets ``__tracebackhide__ = told``: under the kinds
    of error the harness raises for the user to act on (an unknown scenario id, a reference run that never
    finishes, an option refused), so that the test's line and the message are what shows; under any other (a
    bug's) they show, as with ``--full-trace``."""
    return excinfo is not None and bool(excinfo.errisinstance((AssertionError, ValueError, TypeError)))
