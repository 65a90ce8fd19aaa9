"""Crash exploration: run once for reference, then kill the run at each crash point, resume it, compare.

A *life* is one process's share of a run: it starts the run (or resumes it)
and either finishes or dies at its target crash point. A *scenario* is the
lives of one run until it finishes, in a fresh world and a fresh store; its
id names the crash points (``step.convert.end#2``, or ``a>b`` at depth 2,
where ``b`` is counted from the start of the first resume). Both modes share
everything here but how a life is lived: in-process, by raising ``Crash``;
in kill mode (``_kill``), in a forked child that SIGKILLs itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

from durableflow import Checkpointer, StartEvent, Workflow, plugin_manager
from durableflow._graph import StepGraph, graph_of

from ._again import REJUDGED, answered_as, run_again
from ._clock import FrozenClock, real_monotonic
from ._judge import Final, count_effects, judge, restated
from ._lives import Capture, Errands, Life, Lives, ReferenceUnfinished, unjudged
from ._plan import budget as share
from ._plan import check_known, sample, shard
from ._redisworld import may_be_redis
from ._remains import Resumed, own_store, release, remains, resumed_again, share_captures
from ._report import Outcome, Report
from ._settings import Settings, told
from ._stores import Stores, stored
from ._world import FakeWorld, UncopyableWorld
from ._zombies import PROBE, ZOMBIE, probe, twins, zombie, zombie_points

if TYPE_CHECKING:
    from ._zygote import Zygote

T = TypeVar("T")

READ_BACK = "read-back@"
"""Prefix of the id under which a stored run that read back differently from the live one is reported."""

_keys = itertools.count(1)
"""Names each exploration in the zygote, which serves every exploration of this process."""

_VARYING = "crash points vary between two uninterrupted runs"


__tracebackhide__ = told


@final
class Exploration:
    """Everything one exploration shares: the workflow, the world, the stores, the reference run."""

    def __init__(
        self,
        workflow: type[Workflow] | Callable[[], Workflow],
        start: StartEvent | Mapping[str, Any],
        settings: Settings,
        clock: FrozenClock | None = None,
    ) -> None:
        if settings.mode not in ("inprocess", "kill"):
            raise ValueError(f"mode must be 'inprocess' or 'kill', not {settings.mode!r}")
        if settings.only is not None:  # a replayed id says how deep it goes, whatever depth its re-run line kept
            settings = dataclasses.replace(settings, depth=settings.only.count(">") + 1)
        if settings.depth not in (1, 2):
            raise ValueError(f"depth must be 1 or 2, not {settings.depth!r}")
        if isinstance(workflow, Workflow):  # every life needs an instance of its own, as a restart makes
            name = type(workflow).__name__
            raise TypeError(
                f"explore() takes a Workflow class or a zero-argument factory, not an instance: pass {name} "
                f"or, to give it options, lambda: {name}(timeout=...)"
            )
        self.make: Callable[[], Workflow] = workflow
        self.settings = settings
        sample = workflow() if not isinstance(workflow, type) else None
        self.cls = workflow if isinstance(workflow, type) else type(sample)
        self.graph: StepGraph = graph_of(self.cls)
        self.start = start if isinstance(start, StartEvent) else self.graph.start_type(**start)
        self.run_id = f"crashtest-{self.cls.__name__}"
        self.seed = settings.seed if settings.seed is not None else random.randrange(2**32)
        uses_redis = any(
            may_be_redis(*source)
            for spec in self.graph.steps.values()
            for source in spec.plan
            if isinstance(source, tuple)
        )
        self.stores = Stores(settings.store, kill=settings.mode == "kill")
        self.lives = Lives(self)
        self.captures: dict[str, Capture] = {}
        self.resumed: dict[bytes, Resumed] = {}
        """Each resume by the remains it resumed from (see ``_remains``): scenarios that left the same share it."""
        self.clock = clock
        self._frozen_at = self.clock_start = clock.now() if clock is not None else None
        self.replays: dict[str, Final | None] = {}
        self.lease_ttl = 0.0  # the store's, once a zombie scenario paused a worker past it
        """The reference lived again with a crashed run's effect answers, by the answers (see ``_again``)."""
        self.zygotes: list[Zygote] | Literal[False] | None = None
        """Kill mode: the two interpreters that fork resumed lives in turn (``False``: they cannot, see ``notes``)."""
        self.zygote_key = next(_keys)
        self.zygote_payload: bytes | None = None
        """The exploration pickled for the zygotes: made once, loaded by each on its first life of it."""
        self.rerun = False
        """In-process, when the world cannot be copied (a fake deepcopy refuses): every scenario lives
        the run again from its start and raises ``Crash`` at its points, instead of resuming a copy."""
        self.twinned: dict[str, tuple[list[Life], Final]] = {}
        """Kill mode: the zombie scenarios (and the probe) that twins of the reference life lived (``twins``)."""
        self.positions: dict[str, int] = {}
        """Where each planned crash point came in the life it was planned from (see ``live_here``)."""
        self.notes: list[str] = []
        """What this exploration could not vary as a restart would: said in the report."""
        # In kill mode the world starts its servers now: from here on, a failure must close them.
        self.world = FakeWorld(settings.fakes, settings.record, shared=settings.mode == "kill", redis=uses_redis)
        try:
            if uses_redis:
                self.world.redis_server  # noqa: B018 - without fakeredis, fail now naming the extra, not inside a step
                if settings.mode == "kill":  # before any life is forked from here
                    self.world.learn_redis_options(self.cls)
                    self.world.warm_redis()
            plugin_manager.load_entry_points()  # once here, not in every forked life
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Exploration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for capture in self.captures.values():  # sampled out, or unused after a failure
            release(capture, self.stores, self.run_id)
        self.lives.close()
        if self.zygotes:
            from ._zygote import forget

            forget(self)
        self.world.close()
        self.stores.close()

    # -- the exploration ---------------------------------------------------------------

    def explore(self) -> Report:
        began = real_monotonic()
        report = Report(
            self.cls.__name__, self.settings.mode, self.settings.depth, self.seed,
            shard=self.settings.shard, notes=self.notes,
        )  # fmt: skip
        try:
            self._explore(report)
        except KeyboardInterrupt:  # at any moment: the reference run, a second interpreter's start, a scenario
            if not self.settings.keep_partial:
                raise
            report.interrupted = True
        report.seconds = real_monotonic() - began
        return report

    def _explore(self, report: Report) -> None:
        reference_lives, reference = self.reference_run()
        if reference_lives[-1].ending != "finished":
            life = reference_lives[-1]
            raise ReferenceUnfinished(self.cls.__name__, life.ending, life.error or "")
        if reference.status != "completed":  # a scenario that failed the same way would match it and pass
            raise AssertionError(
                f"the uninterrupted reference run of {self.cls.__name__} ended {reference.status}, "
                f"not completed: {reference.error or ''}; crash exploration needs a run that completes "
                "to judge the others by (check the start input)"
            )
        report.reference = reference.result
        differs = reference_lives[0].round_trip
        read_back = "not judgeable" if differs is not None and unjudged(differs) else "divergent state"
        if differs is not None and self.settings.only is None:
            scenario_id = READ_BACK + differs.split()[1]
            rerun = self.settings.rerun.replace("{id}", scenario_id)
            report.scenarios.append(Outcome(scenario_id, ok=False, kind=read_back, diff=differs, rerun=rerun))
        first: list[str] = []
        if self.settings.only is not None and self.settings.only.startswith(READ_BACK):
            report.space = 1
            if differs is not None:
                report.scenarios.append(Outcome(self.settings.only, ok=False, kind=read_back, diff=differs))
            else:
                report.scenarios.append(Outcome(self.settings.only, ok=True))
        elif self.settings.only is not None and self.settings.only.startswith(PROBE):
            probe(self, report, reference_lives[0].hits)
            if not report.scenarios:
                report.scenarios.append(Outcome(self.settings.only, ok=True))
            report.space = 1
        elif self.settings.only is not None:
            check_known(self.settings.only, reference_lives[0].hits, self.cls.__name__)
            first = [self.settings.only]
            report.space = 1
        else:
            # A shard owns its share of the first crash points and every second crash of their resumes,
            # so the shards of one exploration partition it.
            first = self._shard(self._sample(reference_lives[0].hits))
            report.space = len(self._shard(reference_lives[0].hits))
        resume_hits: dict[str, list[str]] = {}
        self.positions.update((hit, index) for index, hit in enumerate(reference_lives[0].hits))
        for scenario_id in first:
            outcome, lives = self.scenario(scenario_id, reference)
            self._add(report, outcome, len(first))
            if len(lives) > 1:
                resume_hits[scenario_id] = lives[1].hits
                self.positions.update((f"{scenario_id}>{hit}", i) for i, hit in enumerate(lives[1].hits))
        planned = len(first)
        if self.settings.depth == 2 and self.settings.only is None:
            second = [f"{a}>{b}" for a in first for b in resume_hits.get(a, [])]
            report.space += len(second)
            budget = share(self.settings)
            deeper = self._sample(second, None if budget is None else max(0, budget - len(first)))
            planned += len(deeper)
            for scenario_id in deeper:
                self._add(report, self.scenario(scenario_id, reference)[0], planned)
        if self.settings.only is None and self.settings.zombies and self.clock is not None:
            probe(self, report, reference_lives[0].hits)
            zombies = self._shard(zombie_points(reference_lives[0].hits))
            report.space += len(zombies)
            budget = share(self.settings)
            zombies = self._sample(zombies, None if budget is None else max(0, budget - planned))
            planned += len(zombies)
            for scenario_id in zombies:
                self._add(report, self.scenario(scenario_id, reference)[0], planned)
        if not report.ok:  # before blaming the crashes, make sure an uninterrupted run ends the same every time
            run_again(self, reference, report)

    def _add(self, report: Report, outcome: Outcome, planned: int) -> None:
        report.scenarios.append(outcome)
        if self.settings.on_scenario is not None:
            self.settings.on_scenario(outcome, planned)

    def _sample(self, space: list[str], budget: int | None = None) -> list[str]:
        return sample(space, self.settings, self.seed, budget)

    def _shard(self, plan: list[str]) -> list[str]:
        return shard(plan, self.settings)

    def reference_run(self) -> tuple[list[Life], Final]:
        # The reference life waits at each crash point to be captured: the first crashes of a replay, or all.
        wanted = {self.settings.only.split(">")[0]} if self.settings.only else None
        try:
            lives, final = self.uninterrupted(capture=wanted, errands=Errands(read_back=True, twins=twins(self)))
        except UncopyableWorld as exc:
            if self.settings.mode == "kill":
                raise TypeError(str(exc)) from None
            self.rerun = True
            self.notes.append(f"{exc}; so every scenario runs again from the start")
            lives, final = self.uninterrupted(capture=wanted)
        self.captures = lives[0].captures
        return lives, final

    def uninterrupted(self, capture: set[str] | None, errands: Errands | None = None) -> tuple[list[Life], Final]:
        """A run from its start to its end, captured at ``capture`` (``None``: every crash point)."""
        if self.rerun:
            return self.scenario_lives([])
        store = self.stores.new()
        self.world.reset()
        self._restart_clock(self._frozen_at)
        try:
            life = self.live(store, first=True, capture=capture, errands=errands)
            return [life], self.final(store, [life])
        finally:
            self.stores.discard(store, self.run_id)

    def live(
        self, store: Checkpointer, first: bool, capture: set[str] | None, nth: int = 0, errands: Errands | None = None
    ) -> Life:
        """Life ``nth`` of the run (0 starts it), waiting at each crash point in ``capture`` while what a
        crash there would leave is copied (``None``: every point): in a forked child in kill mode, else here.

        Kill mode forks the run's first life from this process and every life that resumes it from a
        zygote, the two zygotes in turn, so that a resumed life never has the hash seed of the life before.
        """
        if self.settings.mode == "kill":
            from ._kill import live_in_child
            from ._zygote import for_life

            zygote = for_life(self, store, nth)
            return live_in_child(self, store, first=first, capture=capture, zygote=zygote, errands=errands)
        return self.lives.live_here(store, None, first=first, capture=capture, errands=errands)

    def scenario(self, scenario_id: str, reference: Final) -> tuple[Outcome, list[Life]]:
        began = real_monotonic()
        disturbance = self.world.disturbance()
        if scenario_id.startswith(ZOMBIE):
            lives, final = zombie(self, scenario_id)
            crashes = [scenario_id.removeprefix(ZOMBIE)]
        elif self.rerun:
            lives, final = self.scenario_lives(scenario_id.split(">"))
            crashes = scenario_id.split(">")
        else:
            lives, final = self.resume_captured(scenario_id)
            crashes = scenario_id.split(">")
        disturbed = final.torn or bool(disturbance[0]) or self.world.disturbance() != disturbance
        kind, diff = restated(*judge(reference, final, lives, crashes), final, disturbed)
        later = self.settings.downtime * len(crashes) + (self.lease_ttl if scenario_id.startswith(ZOMBIE) else 0)
        again = answered_as(self, reference, final, later) if kind in REJUDGED else None
        if again is not None and judge(again, final, lives, crashes)[0] is None:  # as the reference would, so answered
            kind, diff = None, ""
        reached = [life.hits[-1] for life in lives if life.ending == "crashed" and life.hits]
        for planned, found in zip(crashes, reached, strict=False):
            if planned != found and not any(note.startswith(_VARYING) for note in self.notes):
                self.notes.append(
                    f"{_VARYING} (planned {planned}, reached {found}): each scenario crashes at the same place "
                    "under its own name; a key that varies is usually a bug (see the effects' keys)"
                )
        outcome = Outcome(
            id=scenario_id,
            ok=kind is None,
            kind=kind,
            diff=diff,
            result=final.result,
            error=final.error,
            seconds=real_monotonic() - began,
            rerun=self.settings.rerun.replace("{id}", scenario_id) if kind else "",
        )
        return outcome, lives

    def resume_captured(self, scenario_id: str) -> tuple[list[Life], Final]:
        """A fresh process resumes from what the crash left (captured), and runs to the end.

        Resuming a first crash at depth 2 captures its own crash points in turn.
        """
        capture = self.captures.pop(scenario_id, None)
        first, _, second = scenario_id.partition(">")
        if capture is None and second and first in self.captures:  # a replayed a>b: resume a to capture b
            self.resume_captured(first)
            capture = self.captures.pop(scenario_id, None)
        if capture is None:  # a replayed id whose point the run no longer reaches: judged "unreached"
            return [Life(ending="finished")], Final("missing", None, None, {}, {})
        deeper = self.settings.depth == 2 and ">" not in scenario_id
        # a resume that captures is shared where it captured every point: in an exploration, not a replay
        key = None if deeper and self.settings.only is not None else remains(capture)
        shared = None if key is None else self.resumed.get(key)
        if shared is not None and (not deeper or share_captures(shared, capture, scenario_id, self.captures)):
            release(capture, self.stores, self.run_id)
            return resumed_again(shared, capture)
        store = own_store(capture, self.stores, self.run_id)
        self.world.restore(capture.world)
        if capture.at_first_crash is None:
            capture.at_first_crash = self.world.snapshot()
        at_last_crash = capture.at_first_crash if len(capture.lives) == 1 else self.world.snapshot()
        self._restart_clock(None if capture.clock is None else capture.clock + self.settings.downtime)
        # a replayed a>b (depth 2 comes from its id) captures b alone; an exploration, every point
        wanted = {self.settings.only.partition(">")[2]} if self.settings.only else None
        try:
            nth, disturbance = len(capture.lives), self.world.disturbance()
            life = self.live(store, first=False, capture=wanted if deeper else set(), nth=nth)
            lives = [*capture.lives, life]
            for point, deeper_capture in life.captures.items():
                deeper_capture.lives = [*capture.lives, *deeper_capture.lives]
                deeper_capture.at_first_crash = capture.at_first_crash
                if not capture.world.get("whole", True):  # resumed from a torn copy: torn too
                    deeper_capture.world["whole"] = False
                self.captures[f"{scenario_id}>{point}"] = deeper_capture
            final = self.final(store, lives, capture.at_first_crash, at_last_crash)
            final.torn = not capture.world.get("whole", True)
            if key is not None and not disturbance[0] and self.world.disturbance() == disturbance:
                self.resumed[key] = Resumed(life, final, dict(life.captures) if deeper else {})  # (no thread of
                # an ended life reached into its world)
            return lives, final
        finally:
            release(capture, self.stores, self.run_id, store)

    def capture(self, store: Checkpointer, hits: list[str], clock: float | None) -> Capture:
        """Copy what a crash here would leave: the run's records, into a fresh store, and the world."""
        world = self.world.capture()
        return Capture([Life(hits=list(hits), ending="crashed")], self.stores.copy(store, self.run_id), world, clock)

    def restart_clock_at_start(self) -> None:
        """Every run of the exploration starts at the same instant, so the timestamps it stores compare equal."""
        self._restart_clock(self._frozen_at)

    def _restart_clock(self, instant: float | None) -> None:
        if instant is not None and self.clock is not None:
            self.clock.restart_at(instant)

    def _down(self) -> None:
        """The time a crashed process stays down passes (the dead life's timers with it)."""
        if self.clock is not None:
            self.clock.restart_at(self.clock.now() + self.settings.downtime)

    def scenario_lives(self, crashes: list[str]) -> tuple[list[Life], Final]:
        """Live the run until it finishes, dying at each of ``crashes`` in turn; read back how it ended."""
        store = self.stores.new()
        self.world.reset()
        self._restart_clock(self._frozen_at)
        lives: list[Life] = []
        at_first_crash: dict[str, Any] = {}
        at_last_crash: dict[str, Any] | None = None
        try:
            for index in range(len(crashes) + 1):
                target = crashes[index] if index < len(crashes) else None
                position = self.positions.get(">".join(crashes[: index + 1]))
                life = self.lives.live_here(store, target, first=index == 0, position=position)
                lives.append(life)
                if life.ending != "crashed":
                    break
                self._down()
                at_last_crash = self.world.snapshot()
                if index == 0:
                    at_first_crash = at_last_crash
            return lives, self.final(store, lives, at_first_crash, at_last_crash)
        finally:
            self.stores.discard(store, self.run_id)

    def final(
        self,
        store: Checkpointer,
        lives: list[Life],
        at_first_crash: dict[str, Any] | None = None,
        at_last_crash: dict[str, Any] | None = None,
    ) -> Final:
        ended = lives[-1].stored or stored(store, self.run_id)
        effects, windows = count_effects(lives)
        return Final(
            **ended, world=self.world.snapshot(), effects=effects, windows=windows,
            at_first_crash=at_first_crash or {}, at_last_crash=at_last_crash,
        )  # fmt: skip
