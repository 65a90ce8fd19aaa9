"""Two workers on one run: a paused worker that wakes after another took its run over, and a live one.

A *zombie* scenario pauses a life at a crash point past its lease, lets a
second worker resume the run and finish it, then wakes the first: its
writes must be fenced (the store refuses them) and its effects must not run
again. The *second-worker probe* lets a healthy life run past its lease's
time, its renewals firing, and checks that another worker is refused the run.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ._judge import Final, count_effects
from ._lives import Errands, Life, Lives
from ._report import Outcome, Report
from ._stores import stored

if TYPE_CHECKING:
    from durableflow import Checkpointer

    from ._exploration import Exploration

ZOMBIE = "zombie@"
"""Prefix of a zombie scenario's id: ``zombie@step.charge.start#1``."""

PROBE = "second-worker@"
"""Prefix of the id under which a failed second-worker probe is reported."""


def zombie_points(hits: list[str]) -> list[str]:
    """Where a paused worker may wake to do harm: before a step or an effect, or at a point of the user's.
    The first hit of each, so the scenarios stay few."""
    points = []
    for hit in hits:
        point, _, count = hit.rpartition("#")
        kind, _, rest = point.partition(".")
        wakes_to_act = kind == "user" or rest.endswith(".start" if kind == "step" else ".before")
        if count == "1" and kind in ("step", "effect", "user") and wakes_to_act:
            points.append(ZOMBIE + hit)
    return points


def probe_point(hits: list[str]) -> str | None:
    """The first step start after the run was first stored: the run is live and leased there."""
    stored_yet = False
    for hit in hits:
        if hit.startswith("checkpoint.write.after"):
            stored_yet = True
        elif stored_yet and hit.startswith("step.") and ".start#" in hit:
            return hit
    return None


def probe(exploration: Exploration, report: Report, hits: list[str]) -> None:
    """A live run keeps its lease: one more uninterrupted life lets twice the lease's time pass at a
    point, and a second worker must be refused the run there (reported only when it was not)."""
    point = probe_point(hits)
    if point is None or exploration.clock is None:
        return
    store = exploration.stores.new()
    exploration.world.reset()
    exploration.restart_clock_at_start()
    try:
        if exploration.settings.mode == "kill":
            from ._kill import live_in_child

            # forked from the test's process, as every first life: its monkeypatches reach the lease's renewal
            life = live_in_child(exploration, store, True, capture=set(), errands=Errands(probe_at=point))
        else:
            life = exploration.lives.live_here(store, None, first=True, errands=Errands(probe_at=point))
    finally:
        exploration.stores.discard(store, exploration.run_id)
    if life.probe is not None:
        scenario_id = PROBE + point
        rerun = exploration.settings.rerun.replace("{id}", scenario_id)
        report.scenarios.append(Outcome(scenario_id, ok=False, kind="stolen lease", diff=life.probe, rerun=rerun))


def zombie(exploration: Exploration, scenario_id: str) -> tuple[list[Life], Final]:
    """Live the run to the point, pause there past the lease while a second worker finishes the run, wake."""
    point = scenario_id.removeprefix(ZOMBIE)
    store = exploration.stores.new()
    exploration.world.reset()
    exploration.restart_clock_at_start()
    takeover: list[Life] = []
    at_pause: dict[str, Any] = {}
    errands = Errands(pause_at=point, pause_position=exploration.positions.get(point))
    errands.interlude = lambda paused_at: _take_over(exploration, store, takeover, at_pause, paused_at)
    try:
        first = _live(exploration, store, errands, first=True, parity=0)
        if not takeover:  # the point was never reached: judged unreached
            return [first], exploration.final(store, [first])
        index = _paused_after(first, point, errands.pause_position)
        before = Life(hits=first.hits[:index], ending="crashed")
        after = Life(hits=first.hits[index:], ending=first.ending, error=first.error)
        if after.ending == "error" and "lost its lease" in (after.error or ""):
            after.ending, after.error = "finished", None  # a fenced zombie stops so: as it should
        lives = [before, after, *takeover]
        effects, windows = count_effects(lives)
        ended = first.stored or stored(store, exploration.run_id)  # the zombie ends last: it read the run
        final = Final(
            **ended, world=exploration.world.snapshot(), effects=effects, windows=windows, at_first_crash=at_pause
        )
        return [before, *takeover, after], final
    finally:
        exploration.stores.discard(store, exploration.run_id)


def _paused_after(life: Life, point: str, position: int | None) -> int:
    """How many of the life's hits came before it woke up."""
    if point in life.hits:
        return life.hits.index(point) + 1
    return position + 1 if position is not None else len(life.hits)


def _take_over(
    exploration: Exploration,
    store: Checkpointer,
    takeover: list[Life],
    at_pause: dict[str, Any],
    paused_at: float | None,
) -> float:
    """While the first worker is paused: its lease lapses, and a second worker resumes the run to its end."""
    at_pause.update(exploration.world.snapshot())
    clock = exploration.clock
    if clock is not None:  # the pause outlasts the lease (and the renewals it could not make)
        now = clock.now() if paused_at is None else max(clock.now(), paused_at)
        clock.restart_at(now + store.lease_ttl + exploration.settings.downtime)
    takeover.append(_live(exploration, store, None, first=False, parity=1))
    return clock.now() if clock is not None else float("nan")


def _live(exploration: Exploration, store: Checkpointer, errands: Errands | None, first: bool, parity: int) -> Life:
    if exploration.settings.mode == "kill":
        from ._kill import live_in_child
        from ._zygote import for_life

        zygote = for_life(exploration, store, parity)
        return live_in_child(exploration, store, first, capture=set(), zygote=zygote, errands=errands)
    if first:
        return exploration.lives.live_here(store, None, first=True, errands=errands)
    # The paused life holds this thread (it waits inside its crash point): the second worker gets its own.
    lives: list[Life] = []
    second = Lives(exploration)
    thread = threading.Thread(
        target=lambda: lives.append(second.live_here(store, None, first=False)), name="durableflow-second-worker"
    )
    thread.start()
    thread.join()
    second.close()
    return lives[0] if lives else Life(ending="error", error="the second worker's life raised")
