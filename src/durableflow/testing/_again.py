"""The uninterrupted run lived again: to check that it ends alike every time, and answered as a crashed run was.

A run that crashed before an effect was recorded runs it again after the
restart and may get another answer: a later time, a fresh id. Both runs are
right, but what the run derives from the answer (an effect key from the minute,
a Redis field from an id) then differs from the reference's. Swapping texts
(``_judge``) cannot follow a value through arithmetic, so such a scenario is
judged again against the reference lived once more with the crashed run's
answers: the run it would have been had the world answered it so.

Only answers a restart explains are given: a time may come later than the
reference's by no more than the downtime of the scenario's crashes, where a
step that restarted a wait of its own (a deadline computed anew) reads one
later still.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from durableflow import _step_calls

from ._judge import Final, _diff, _ends_alike, _world_entries
from ._report import INPROCESS_KEPT, Report

if TYPE_CHECKING:
    from ._exploration import Exploration

REJUDGED = frozenset({"divergent state", "divergent write", "divergent result", "duplicated effect", "lost work"})
"""Verdicts an effect's other answer can explain; a hang, an error or an unreached point it cannot."""

_YEARS = 50 * 365 * 86400.0
"""A number this close to the exploration's clock is read as a time (seconds since the epoch)."""


def run_again(exploration: Exploration, reference: Final, report: Report) -> None:
    """Run it uninterrupted once more: a run that ends differently every time cannot be judged by one.

    Only after a failure: where every scenario matched the reference, nothing needs explaining. The
    error still names the first failed scenario, whose bug may be real (a key minted per attempt).
    """
    lives, again = exploration.uninterrupted(capture=set())
    if (again.status, again.error) != (reference.status, reference.error) or not _ends_alike(reference, again):
        first, second = (
            {"status": r.status, "result": r.result, "state": r.state, "world": _world_entries(r.world)}
            for r in (reference, again)
        )
        if lives[-1].ending != "finished":  # a life that hung or died says more than the status it left
            second["life"] = f"{lives[-1].ending}: {lives[-1].error}"
        kept = "" if exploration.settings.mode != "inprocess" else INPROCESS_KEPT
        raise AssertionError(
            f"two uninterrupted runs of {exploration.cls.__name__} ended differently, so a crashed run cannot be "
            "judged against one: make what varies (a random id, the time) the answer of a ctx.effect, "
            f"which a resumed run replays{kept}\n{_diff(first, second, labels=('first run', 'second run'))}"
            "\n\njudged against the first run all the same, since a crashed run can be wrong as well "
            f"(a key minted anew by each attempt):\n{report.failure_text(shown=1)}"
        )


def answered_as(exploration: Exploration, reference: Final, final: Final, later: float) -> Final | None:
    """The reference lived again with ``final``'s effect answers, when they differ from the reference's in
    a way a restart explains (a time at most ``later`` seconds later); ``None`` otherwise. Lived once per
    set of answers."""
    answers = _explained(reference, final, later, exploration.clock_start)
    if answers is None:
        return None
    key = json.dumps(answers, sort_keys=True, default=repr)
    if key not in exploration.replays:
        with answering(answers):
            lives, again = exploration.uninterrupted(capture=set())
        finished = lives[-1].ending == "finished" and again.status == reference.status
        exploration.replays[key] = again if finished else None
    return exploration.replays[key]


def _explained(reference: Final, final: Final, later: float, now: float | None) -> dict[str, Any] | None:
    """``final``'s answers if some differ from the reference's and every time among them is explained."""
    found, expected = final.answers, reference.answers
    # (answer, the reference's) under each key both runs used, then those under keys only one did (the
    # minute, a fresh id), paired in the order they ran
    pairs = [(answer, expected[key]) for key, answer in found.items() if key in expected]
    found_only = [answer for key, answer in found.items() if key not in expected]
    expected_only = [answer for key, answer in expected.items() if key not in found]
    pairs += zip(found_only, expected_only, strict=False)
    if not found_only and all(answer == reference_answer for answer, reference_answer in pairs):
        return None  # answered as the reference was: nothing for another answer to explain
    for answer, reference_answer in pairs:
        if _is_time(answer, now) and _is_time(reference_answer, now) and not 0 <= answer - reference_answer <= later:
            return None  # later than its restarts make it: the step restarted a wait of its own
    return dict(found)


def _is_time(value: Any, now: float | None) -> bool:
    real = isinstance(value, int | float) and not isinstance(value, bool)
    return real and now is not None and abs(value - now) < _YEARS


@contextmanager
def answering(answers: dict[str, Any]) -> Iterator[None]:
    """Every effect under a key of ``answers`` runs as usual (its side effects happen) but returns that answer."""
    original = _step_calls._run_effect

    async def run_effect(runner: Any, key: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
        if key in answers:
            fn = _answered(fn, answers[key])
        return await original(runner, key, fn, args)

    _step_calls._run_effect = run_effect
    try:
        yield
    finally:
        _step_calls._run_effect = original


def _answered(fn: Callable[..., Any], answer: Any) -> Callable[..., Any]:
    @functools.wraps(fn)  # the same signature: an idempotency_key parameter still gets its key
    def call(*args: Any, **kwargs: Any) -> Any:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):

            async def later() -> Any:
                await value
                return answer

            return later()
        return answer

    return call
