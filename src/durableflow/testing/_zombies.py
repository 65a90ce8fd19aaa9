"""Two workers on one run: a paused worker that wakes after another took its run over, and a live one.

A *zombie* scenario pauses a life at a crash point past its lease, lets a
second worker resume the run and finish it, then wakes the first: its
writes must be fenced (the store refuses them) and its effects must not run
again. The *second-worker probe* lets a healthy life run past its lease's
time, its renewals firing, and checks that another worker is refused the run.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._judge import Final, count_effects
from ._lives import Errands, Life, unjudged
from ._report import Outcome, Report
from ._stores import stored

if TYPE_CHECKING:
    from durableflow import Checkpointer

    from ._exploration import Exploration

ZOMBIE = "zombie@"
"""Prefix of a zombie scenario's id: ``zombie@step.charge.start#1``."""

PROBE = "second-worker@"
"""Prefix of the id under which a failed second-worker probe is reported."""

NO_PAUSE = (
    "; nor can a paused worker outlast its lease, so no zombie@ or second-worker scenarios ran (on a clock "
    "that is not moved for them, a second worker would be refused the run, or a woken one not fenced)"
)
"""Said when the exploration has no clock of its own to move (a ``ManualClock`` in force, or no freezegun)."""


def check_pausable(scenario_id: str | None, why: str) -> None:
    """On a clock the exploration cannot move (``why``, ``NO_PAUSE``) it makes no zombie or second-worker
    scenarios: replaying one by its id is refused as an unknown id is, not lived where it would be misjudged
    (a zombie failing a correct workflow, a second worker passing unchecked)."""
    if scenario_id is None or not scenario_id.startswith((ZOMBIE, PROBE)):
        return
    raise ValueError(
        f"unknown scenario {scenario_id!r}: no {ZOMBIE} or {PROBE} scenarios exist in this exploration, as "
        f"{why}, nor can a paused worker outlast its lease; replay it where the exploration moves time itself "
        "(a frozen_clock, or no clock of the test's own, freezegun installed)"
    )


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
    point, and a second worker must be refused the run there (reported only when it was not, or when the
    check could not be made)."""
    point = probe_point(hits)
    if point is None or exploration.clock is None:
        return
    if exploration.twinned.get(PROBE) is not None and exploration.twinned[PROBE][0][0].hits[-1] == point:
        life = exploration.twinned.pop(PROBE)[0][0]  # lived already, by a twin of the reference life
    else:
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
    verdict = _probed(life, point)
    if verdict is not None:
        scenario_id = PROBE + point
        rerun = exploration.settings.rerun.replace("{id}", scenario_id)
        report.scenarios.append(Outcome(scenario_id, ok=False, kind=verdict[0], diff=verdict[1], rerun=rerun))


def _probed(life: Life, point: str) -> tuple[str, str] | None:
    """The probe's verdict from the life that made it: a kind and what it found, or ``None`` if it passed."""
    if life.probe is None:  # never reported: a life that did not reach the point says nothing of the lease
        if point not in life.hits and life.ending == "finished":
            return None
        ended = life.ending if life.error is None else f"{life.ending}: {life.error}"
        return "not judgeable", (
            f"the second-worker check at {point} did not come back: its life ended {ended}, so whether a live "
            "run keeps a second worker out is unknown"
        )
    if not life.probe:
        return None
    return ("not judgeable" if unjudged(life.probe) else "stolen lease"), life.probe


def zombie(exploration: Exploration, scenario_id: str) -> tuple[list[Life], Final]:
    """Live the run to the point, pause there past the lease while a second worker finishes the run, wake."""
    twinned = exploration.twinned.pop(scenario_id, None)
    if twinned is not None:  # lived already, by a twin of the reference life
        return twinned
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
        return _woken(exploration, store, first, takeover, at_pause, point, errands.pause_position)
    finally:
        exploration.stores.discard(store, exploration.run_id)


def _woken(
    exploration: Exploration,
    store: Checkpointer,
    first: Life,
    takeover: list[Life],
    at_pause: dict[str, Any],
    point: str,
    position: int | None,
) -> tuple[list[Life], Final]:
    """The zombie scenario's lives, its first worker's cut where it paused, and how the run ended."""
    index = _paused_after(first, point, position)
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
    failed = [life for life in takeover if life.ending in ("error", "hang", "input")]
    if failed:  # nobody took the run over, so the zombie's fencing went untested: judged by that failure, last
        life = failed[0]
        life.error = f"the second worker, taking the run over from a worker paused past its lease: {life.error}"
        return [before, after, life], final
    return [before, *takeover, after], final


def twins(exploration: Exploration) -> Callable[[Life, Checkpointer, int, int], None] | None:
    """Kill mode: what the reference life does at each capture, where a zombie's first worker would pause or
    the probe would probe: it forks a twin of itself there, which lives that scenario at once (``twin_here``).

    ``None`` where the zombies are sampled or sharded, or one scenario is replayed: those live theirs anew."""
    settings = exploration.settings
    if settings.mode != "kill" or not settings.zombies or settings.only or settings.shard or settings.max_scenarios:
        return None
    if exploration.clock is None:  # no zombie scenarios (``NO_PAUSE``)
        return None
    return lambda life, store, reports, go: twin_here(exploration, life, store, reports, go)


def twin_here(exploration: Exploration, life: Life, store: Checkpointer, reports: int, go: int) -> None:
    """At the reference life's last point: the probe and a zombie's first worker, if either starts there,
    each lived by a twin of the life; the world and the clock are then put back for the life to go on.

    A twin's lease is the reference life's, whose process is alive, paused, while the second worker takes
    over: as a zombie's first worker, only the run's start is not lived again."""
    from ._kill import _Child, _supervise

    hit, clock = life.hits[-1], exploration.clock
    started = clock.now() if clock is not None else None
    wanted = []
    if clock is not None and PROBE not in exploration.twinned and probe_point(life.hits) == hit:
        wanted.append(PROBE)
    if zombie_points([hit]):
        wanted.append(ZOMBIE + hit)
    for scenario_id in wanted:
        # a capture is restored once, as it is: the one taken here stays the crash scenario's
        world = exploration.world.capture() if scenario_id != PROBE else None
        copy = exploration.stores.copy(store, exploration.run_id)
        takeover: list[Life] = []
        at_pause: dict[str, Any] = {}
        errands = None
        if scenario_id.startswith(ZOMBIE):
            errands = Errands(pause_at=hit, pause_position=len(life.hits) - 1)
            errands.interlude = lambda paused_at: _take_over(exploration, copy, takeover, at_pause, paused_at)  # noqa: B023
        try:
            path = str(getattr(copy, "path", "")).encode()
            os.write(go, (b"p" if scenario_id == PROBE else b"t") + struct.pack("!H", len(path)) + path)
            twin = Life(hits=list(life.hits), ending="error", error="the process died before it finished")
            _supervise(twin, exploration, copy, _Child(None), reports, go, errands, twin=True)
            if twin.ending == "refused":  # none can be forked here (a thread of the life's, which may be
                world = None  # writing to the world right now): each scenario lives anew later
                return
            if scenario_id == PROBE:
                exploration.twinned[PROBE] = ([twin], Final("missing", None, None, {}, {}))
            elif takeover:
                exploration.twinned[scenario_id] = _woken(
                    exploration, copy, twin, takeover, at_pause, hit, len(life.hits) - 1
                )
        finally:
            exploration.stores.discard(copy, exploration.run_id)
            if world is not None:
                exploration.world.restore(world)
            if clock is not None and started is not None:
                clock.restart_at(started)


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
        exploration.lease_ttl = store.lease_ttl  # a paused worker's answers may come this much later too
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
    second = exploration.lives.second_worker()

    def takeover() -> None:
        try:
            lives.append(second.live_here(store, None, first=False))
        except BaseException as exc:  # said in the verdict, not as a thread's traceback on stderr
            lives.append(Life(ending="error", error=f"its life raised {type(exc).__name__}: {exc}"))

    thread = threading.Thread(target=takeover, name="durableflow-second-worker")
    thread.start()
    thread.join()
    return lives[0]
