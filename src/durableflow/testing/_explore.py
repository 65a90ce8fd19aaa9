"""The exploration API: ``explore`` and ``run_scenario``, which check their options, freeze the clock and
run an ``Exploration``, in a thread of its own when called from a running event loop (an async test)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from durableflow import StartEvent, Workflow

from ._clock import exploration_clock
from ._exploration import Exploration
from ._lives import compacting
from ._report import Outcome, Report
from ._settings import Mode, Settings, told
from ._zombies import NO_PAUSE, check_pausable

T = TypeVar("T")

__tracebackhide__ = told


def explore(
    workflow: type[Workflow] | Callable[[], Workflow],
    start: StartEvent | Mapping[str, Any],
    depth: int = 1,
    mode: Mode = "inprocess",
    seed: int | None = None,
    max_scenarios: int | None = None,
    **options: Any,
) -> Report:
    """Kill a run of ``workflow`` at every crash point, resume it, and judge each against an uninterrupted run.

    ``workflow`` is a Workflow subclass or a zero-argument factory (a new
    instance is made for every start and every restart); ``start`` is the
    StartEvent or a dict of its fields. Options: ``store``, ``respond`` (answers
    InputRequiredEvents), ``fakes`` ({factory or type: fake factory}),
    ``record`` (keys of ``fakes`` whose calls are compared), ``hang_after``
    (seconds a life may take), ``only``, ``shard``, ``rerun``.
    """
    settings = Settings(mode=mode, depth=depth, seed=seed, max_scenarios=max_scenarios, **options)
    return _beside_any_loop(lambda: _explore(workflow, start, settings))


def run_scenario(
    workflow: type[Workflow] | Callable[[], Workflow],
    start: StartEvent | Mapping[str, Any],
    crash_at: str,
    mode: Mode = "inprocess",
    **options: Any,
) -> Outcome:
    """Run one scenario (``crash_at="step.convert.end#2"``, or ``"a>b"``) and return its outcome."""
    settings = Settings(mode=mode, only=crash_at, **options)
    return _beside_any_loop(lambda: _explore(workflow, start, settings)).scenarios[0]


def _explore(
    workflow: type[Workflow] | Callable[[], Workflow], start: StartEvent | Mapping[str, Any], settings: Settings
) -> Report:
    if settings.downtime < 0:
        raise ValueError(f"downtime must be 0 or more seconds, not {settings.downtime!r}")
    with (
        exploration_clock() as (clock, why),
        compacting(settings.compact),
        Exploration(workflow, start, settings, clock) as exploration,
    ):
        if why is not None:
            check_pausable(settings.only, why)
            exploration.notes.append(why + NO_PAUSE)
        return exploration.explore()


def _beside_any_loop(fn: Callable[[], T]) -> T:
    """Call ``fn``, in a thread of its own if this one runs an event loop (an async test):
    explorations run event loops of their own, which cannot nest."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        alone = True
    else:
        alone = False
    if alone:  # called outside the except: an error of fn's is not shown as raised while handling this one
        return fn()
    values: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            values.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="durableflow-explore")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return values[0]
