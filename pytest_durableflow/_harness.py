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

import asyncio
import dataclasses
import json
import random
import re
import shutil
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, final

from durableflow import (
    Checkpointer,
    Event,
    InputRequiredEvent,
    MemoryCheckpointer,
    RedisCheckpointer,
    RunNotFoundError,
    SQLiteCheckpointer,
    StartEvent,
    Workflow,
    WorkflowHandler,
    _crashpoints,
    get_clock,
    plugin_manager,
)
from durableflow._graph import StepGraph, graph_of
from durableflow._snapshot import outcome, replay

from ._clock import FrozenClock, real_monotonic
from ._report import Outcome, Report
from ._world import Fake, FakeWorld

Mode = Literal["inprocess", "kill"]
Respond = Callable[[InputRequiredEvent], Event | None]
T = TypeVar("T")


class Crash(BaseException):
    """Raised at the chosen crash point in in-process mode; ``except Exception`` cannot swallow it."""


class ResumeFailed(Exception):
    """Starting or resuming the run raised (a ``SnapshotError``, say): the harness reports it."""


class NeedsInput(Exception):
    """The run asked for human input and the exploration has no ``respond``."""


class Hits:
    """The crash points a life passes, each named with its hit count so far: ``step.convert.end#2``."""

    __slots__ = ("_counts", "list")

    def __init__(self) -> None:
        self.list: list[str] = []
        self._counts: dict[str, int] = {}

    def hit(self, point: str) -> str:
        """Count one more hit of ``point`` and return its name."""
        count = self._counts[point] = self._counts.get(point, 0) + 1
        hit = f"{point}#{count}"
        self.list.append(hit)
        return hit


def overstayed(seconds: float) -> str:
    """A hung life's error: it outlived the bound."""
    return f"did not finish within {seconds:g} s (the hang_after bound)"


@dataclass
class Life:
    """One process's share of a run."""

    hits: list[str] = field(default_factory=list)
    ending: str = "finished"  # finished | crashed | hang | error | input
    error: str | None = None
    clock: float | None = None
    stored: dict[str, Any] | None = None
    """How the run stands in its store, read by the life that finished it (see ``Exploration.stored``)."""
    captures: dict[str, Capture] = field(default_factory=dict)
    """Kill mode: what a crash at each of its points would have left, by crash point."""


@dataclass
class Capture:
    """What a SIGKILL at one crash point leaves behind, taken while the life waits there.

    The run's records are copied into a store of their own, so the life goes
    on untouched and any number of scenarios can start from where it stood.
    """

    lives: list[Life]
    """The lives up to this crash, the last one ending at it."""
    store: Checkpointer
    world: dict[str, Any]
    clock: float | None
    at_first_crash: dict[str, Any] | None = None
    """The world as the first crash of the scenario left it (see ``Final.at_first_crash``)."""


@dataclass
class Final:
    """How a run ended, read back from its store and its world: what scenarios are judged on."""

    status: str
    result: Any
    error: str | None
    state: dict[str, Any]
    world: dict[str, Any]
    answers: dict[str, Any] = field(default_factory=dict)
    """What each effect returned, by key: the outside world's answers to the run."""
    effects: Counter[str] = field(default_factory=Counter)
    """How often each effect's function ran, over all the lives (see ``count_effects``)."""
    windows: Counter[str] = field(default_factory=Counter)
    """How many crashes fell while each effect's result was not yet durable."""
    at_first_crash: dict[str, Any] = field(default_factory=dict)
    """The world when the run first died: up to there it went as the reference did, so what the
    reference did from there on says whether a different end is work lost or done twice."""


@dataclass
class Settings:
    mode: Mode = "inprocess"
    depth: int = 1
    seed: int | None = None
    max_scenarios: int | None = None
    store: str | Callable[[], Checkpointer] | None = None
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
    with Exploration(workflow, start, settings) as exploration:
        return exploration.explore()


@final
class Exploration:
    """Everything one exploration shares: the workflow, the world, the stores, the reference run."""

    def __init__(
        self,
        workflow: type[Workflow] | Callable[[], Workflow],
        start: StartEvent | Mapping[str, Any],
        settings: Settings,
    ) -> None:
        if settings.mode not in ("inprocess", "kill"):
            raise ValueError(f"mode must be 'inprocess' or 'kill', not {settings.mode!r}")
        if settings.only is not None:  # a replayed id says how deep it goes, whatever depth its re-run line kept
            settings = dataclasses.replace(settings, depth=settings.only.count(">") + 1)
        if settings.depth not in (1, 2):
            raise ValueError(f"depth must be 1 or 2, not {settings.depth!r}")
        self.make: Callable[[], Workflow] = workflow
        self.settings = settings
        sample = workflow() if not isinstance(workflow, type) else None
        self.cls = workflow if isinstance(workflow, type) else type(sample)
        self.graph: StepGraph = graph_of(self.cls)
        self.start = start if isinstance(start, StartEvent) else self.graph.start_type(**start)
        self.run_id = f"crashtest-{self.cls.__name__}"
        self.seed = settings.seed if settings.seed is not None else random.randrange(2**32)
        uses_redis = any(
            _is_redis(source[1])
            for spec in self.graph.steps.values()
            for source in spec.plan
            if isinstance(source, tuple)
        )
        self._dir: Path | None = None
        self._store_world: FakeWorld | None = None
        self._store_client: Any = None
        """The one client of the ``fakeredis`` stores' server, shared by every store of the exploration."""
        self._stores = 0
        self.graveyard: list[asyncio.AbstractEventLoop] = []
        self._spare_loop: asyncio.AbstractEventLoop | None = None
        self._handler: WorkflowHandler | None = None
        self.captures: dict[str, Capture] = {}
        clock = get_clock()
        self._frozen_at = clock.now() if isinstance(clock, FrozenClock) else None
        # In kill mode the world starts its servers now: from here on, a failure must close them.
        self.world = FakeWorld(settings.fakes, settings.record, shared=settings.mode == "kill", redis=uses_redis)
        try:
            if uses_redis:
                self.world.redis_server  # noqa: B018 - without fakeredis, fail now naming the extra, not inside a step
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
            capture.store.close()
        for loop in self.graveyard:
            loop.close()
        self.graveyard.clear()
        if self._spare_loop is not None:
            self._spare_loop.close()
        self.world.close()
        if self._store_client is not None:
            self._store_client.close()
        if self._store_world is not None:
            self._store_world.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # -- the exploration ---------------------------------------------------------------

    def explore(self) -> Report:
        began = real_monotonic()
        reference_lives, reference = self.reference_run()
        if reference_lives[-1].ending != "finished":
            life = reference_lives[-1]
            raise AssertionError(
                f"the uninterrupted reference run of {self.cls.__name__} did not finish "
                f"({life.ending}): {life.error or ''}"
            )
        if reference.status != "completed":  # a scenario that failed the same way would match it and pass
            raise AssertionError(
                f"the uninterrupted reference run of {self.cls.__name__} ended {reference.status}, "
                f"not completed: {reference.error or ''}; crash exploration needs a run that completes "
                "to judge the others by (check the start input)"
            )
        report = Report(
            self.cls.__name__, self.settings.mode, self.settings.depth, self.seed,
            reference=reference.result, shard=self.settings.shard,
        )  # fmt: skip
        if self.settings.only is not None:
            first = [self.settings.only]
            report.space = 1
        else:
            # A shard owns its share of the first crash points and every second crash of their resumes,
            # so the shards of one exploration partition it.
            first = self._shard(self._sample(reference_lives[0].hits))
            report.space = len(self._shard(reference_lives[0].hits))
        resume_hits: dict[str, list[str]] = {}
        for scenario_id in first:
            outcome, lives = self.scenario(scenario_id, reference)
            self._add(report, outcome, len(first))
            if len(lives) > 1:
                resume_hits[scenario_id] = lives[1].hits
        if self.settings.depth == 2 and self.settings.only is None:
            second = [f"{a}>{b}" for a in first for b in resume_hits.get(a, [])]
            report.space += len(second)
            budget = self._budget()
            deeper = self._sample(second, None if budget is None else max(0, budget - len(first)))
            for scenario_id in deeper:
                self._add(report, self.scenario(scenario_id, reference)[0], len(first) + len(deeper))
        if not report.ok:  # before blaming the crashes, make sure an uninterrupted run ends the same every time
            self.run_again(reference)
        report.seconds = real_monotonic() - began
        return report

    def _budget(self) -> int | None:
        """This shard's share of ``max_scenarios``."""
        total, shard = self.settings.max_scenarios, self.settings.shard
        if total is None or shard is None:
            return total
        index, count = shard
        return total // count + (1 if index < total % count else 0)

    def _add(self, report: Report, outcome: Outcome, planned: int) -> None:
        report.scenarios.append(outcome)
        if self.settings.on_scenario is not None:
            self.settings.on_scenario(outcome, planned)

    def _sample(self, space: list[str], budget: int | None = None) -> list[str]:
        budget = self.settings.max_scenarios if budget is None else budget
        if budget is None or len(space) <= budget:
            return space
        chosen = set(random.Random(f"{self.seed}:{len(space)}").sample(range(len(space)), budget))
        return [s for i, s in enumerate(space) if i in chosen]

    def _shard(self, plan: list[str]) -> list[str]:
        if self.settings.shard is None:
            return plan
        index, count = self.settings.shard
        return plan[index::count]

    def reference_run(self) -> tuple[list[Life], Final]:
        # In kill mode the reference life waits at each crash point to be captured: the first crashes of a
        # replay, or all.
        wanted = {self.settings.only.split(">")[0]} if self.settings.only else None
        lives, final = self.uninterrupted(capture=wanted)
        self.captures = lives[0].captures
        return lives, final

    def uninterrupted(self, capture: set[str] | None) -> tuple[list[Life], Final]:
        """A run from its start to its end; in kill mode, a forked child captured at ``capture`` (``None``: all)."""
        if self.settings.mode != "kill":
            return self.scenario_lives([])
        from ._kill import live_in_child

        store = self.new_store()
        self.world.reset()
        self._restart_clock(self._frozen_at)
        try:
            life = live_in_child(self, store, first=True, capture=capture)
            return [life], self.final(store, [life])
        finally:
            store.close()

    def run_again(self, reference: Final) -> None:
        """Run it uninterrupted once more: a run that ends differently every time cannot be judged by one.

        Only after a failure: where every scenario matched the reference, nothing needs explaining.
        """
        again = self.uninterrupted(capture=set())[1]
        if (again.status, again.error) != (reference.status, reference.error) or not _ends_alike(reference, again):
            first, second = (
                {"status": r.status, "result": r.result, "state": r.state, "world": _world_entries(r.world)}
                for r in (reference, again)
            )
            raise AssertionError(
                f"two uninterrupted runs of {self.cls.__name__} ended differently, so a crashed run cannot be "
                "judged against one: make what varies (a random id, the time) the answer of a ctx.effect, "
                f"which a resumed run replays\n{_diff(first, second, labels=('first run', 'second run'))}"
            )

    def scenario(self, scenario_id: str, reference: Final) -> tuple[Outcome, list[Life]]:
        began = real_monotonic()
        if self.settings.mode == "kill":
            lives, final = self.resume_captured(scenario_id)
        else:
            lives, final = self.scenario_lives(scenario_id.split(">"))
        kind, diff = judge(reference, final, lives, scenario_id.split(">"))
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
        """Kill mode: a fresh process resumes from what the crash left (captured), and runs to the end.

        Resuming a first crash at depth 2 captures its own crash points in turn.
        """
        from ._kill import live_in_child

        capture = self.captures.pop(scenario_id, None)
        first, _, second = scenario_id.partition(">")
        if capture is None and second and first in self.captures:  # a replayed a>b: resume a to capture b
            self.resume_captured(first)
            capture = self.captures.pop(scenario_id, None)
        if capture is None:  # a replayed id whose point the run no longer reaches: judged "unreached"
            return [Life(ending="finished")], Final("missing", None, None, {}, {})
        self.world.restore(capture.world)
        if capture.at_first_crash is None:
            capture.at_first_crash = self.world.snapshot()
        self._restart_clock(capture.clock)
        deeper = self.settings.depth == 2 and ">" not in scenario_id
        # a replayed a>b (depth 2 comes from its id) captures b alone; an exploration, every point
        wanted = {self.settings.only.partition(">")[2]} if self.settings.only else None
        try:
            life = live_in_child(self, capture.store, first=False, capture=wanted if deeper else set())
            lives = [*capture.lives, life]
            for point, deeper_capture in life.captures.items():
                deeper_capture.lives = [*capture.lives, *deeper_capture.lives]
                deeper_capture.at_first_crash = capture.at_first_crash
                self.captures[f"{scenario_id}>{point}"] = deeper_capture
            return lives, self.final(capture.store, lives, capture.at_first_crash)
        finally:
            capture.store.close()

    def capture(self, store: Checkpointer, hits: list[str], clock: float | None) -> Capture:
        """Copy what a crash here would leave: the run's records, into a fresh store, and the world."""
        if isinstance(store, SQLiteCheckpointer):  # its files are what a killed process leaves: copy them
            copy: Checkpointer = self._sqlite_copy(store)
        elif isinstance(store, RedisCheckpointer):  # its keys are: copy them on the server
            copy = self._redis_copy(store)
        else:
            copy = self.new_store()
            copy_run(store, copy, self.run_id)
        return Capture([Life(hits=list(hits), ending="crashed")], copy, self.world.capture(), clock)

    def _redis_copy(self, store: RedisCheckpointer) -> RedisCheckpointer:
        """The run's keys, copied byte for byte by the server under a new prefix, on the store's own client:
        one round trip, and no new connection."""
        copy = RedisCheckpointer(
            store.client, prefix=f"durableflow-crashtest:{uuid.uuid4().hex[:12]}", lease_ttl=store.lease_ttl
        )
        keys = [*_redis_keys(store.prefix, self.run_id), *_redis_keys(copy.prefix, self.run_id)]
        store.client.register_script(_COPY_RUN)(keys=keys, args=[self.run_id])
        return copy

    def _sqlite_copy(self, store: SQLiteCheckpointer) -> SQLiteCheckpointer:
        self._stores += 1
        path = store.path.with_name(f"capture-{self._stores}.db")
        shutil.copyfile(store.path, path)
        wal = store.path.with_name(store.path.name + "-wal")
        if wal.exists():
            shutil.copyfile(wal, path.with_name(path.name + "-wal"))
        return SQLiteCheckpointer(path, store.durability)

    def _restart_clock(self, instant: float | None) -> None:
        if instant is not None and self._frozen_at is not None:
            cast(FrozenClock, get_clock()).restart_at(instant)

    def scenario_lives(self, crashes: list[str]) -> tuple[list[Life], Final]:
        """Live the run until it finishes, dying at each of ``crashes`` in turn; read back how it ended."""
        store = self.new_store()
        self.world.reset()
        self._restart_clock(self._frozen_at)
        lives: list[Life] = []
        at_first_crash: dict[str, Any] = {}
        try:
            for index in range(len(crashes) + 1):
                target = crashes[index] if index < len(crashes) else None
                life = self.live_here(store, target, first=index == 0)
                lives.append(life)
                if life.ending != "crashed":
                    break
                if index == 0:
                    at_first_crash = self.world.snapshot()
            return lives, self.final(store, lives, at_first_crash)
        finally:
            store.close()

    def live_here(self, store: Checkpointer, target: str | None, first: bool) -> Life:
        """A life in this process: the crash is a ``Crash`` raised at the target point."""
        hits = Hits()
        life = Life(hits=hits.list)

        def listener(point: str) -> None:
            hit = hits.hit(point)
            if hit == target:
                raise Crash(hit)

        loop, self._spare_loop = self._spare_loop or asyncio.new_event_loop(), None
        try:
            with _crashpoints.armed(listener), self.world.serving():
                loop.run_until_complete(asyncio.wait_for(self.drive(store, first), self.settings.hang_after))
        except Crash as crash:
            life.ending = "crashed"
            self._kill_engine(crash)
        except TimeoutError:
            life.ending, life.error = "hang", overstayed(self.settings.hang_after)
        except NeedsInput as exc:
            life.ending, life.error = "input", str(exc)
        except ResumeFailed as exc:
            life.ending, life.error = "error", str(exc)
        finally:
            self.bury(loop)
        return life

    def _kill_engine(self, crash: Crash) -> None:
        """A crash raised outside the engine's tasks (in ``respond``, say) still kills the whole process."""
        runner = self._handler._runner if self._handler is not None else None
        if runner is not None and not runner.done:
            runner._abandon(crash)

    async def drive(self, store: Checkpointer, first: bool) -> None:
        """Start or resume the run as its caller would, answer input requests, and wait for the end."""
        self._handler = None
        workflow = self.make()
        workflow.checkpointer = store
        try:
            if first:
                handler = workflow.run(run_id=self.run_id, start_event=self.start)
            else:
                try:
                    handler = workflow.resume(self.run_id)
                except RunNotFoundError:  # it died before its first checkpoint: the caller starts it again
                    handler = workflow.run(run_id=self.run_id, start_event=self.start)
        except Exception as exc:
            raise ResumeFailed(
                f"{'starting' if first else 'resuming'} the run raised {type(exc).__name__}: {exc}"
            ) from exc
        self._handler = handler
        try:
            async for event in handler.stream_events():
                if isinstance(event, InputRequiredEvent):
                    if self.settings.respond is None:
                        raise NeedsInput(f"the run asked for input ({event!r}); pass respond= to answer it")
                    reply = self.settings.respond(event)
                    if reply is not None:
                        handler.send_event(reply)
            await handler
        except (NeedsInput, asyncio.CancelledError):
            raise
        except Exception:
            pass  # the run failed: how it ended is read back from its store

    def bury(self, loop: asyncio.AbstractEventLoop) -> None:
        """Never run a loop with a dead engine's tasks again, and keep them alive so that no ``finally``
        of theirs runs; a loop the life left empty serves the next life."""
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task._log_destroy_pending = False  # type: ignore[attr-defined]
        if tasks:
            self.graveyard.append(loop)
        else:
            self._spare_loop = loop

    # -- stores and outcomes -------------------------------------------------------------

    def new_store(self) -> Checkpointer:
        """An empty store for one scenario, so that every scenario uses the same run id."""
        store = self.settings.store or ("sqlite" if self.settings.mode == "kill" else "memory")
        self._stores += 1
        if callable(store):
            return store()
        if store == "memory":
            if self.settings.mode == "kill":
                raise ValueError(
                    "kill mode needs a store that outlives a process: 'sqlite', 'fakeredis' or a redis:// URL"
                )
            return MemoryCheckpointer()
        if store == "sqlite":
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="durableflow-crashtest-"))
                template = SQLiteCheckpointer(self._dir / "empty.db")
                template.runs()  # creates the schema once; every scenario starts from a copy of it
                template.close()
            path = self._dir / f"scenario-{self._stores}.db"
            shutil.copyfile(self._dir / "empty.db", path)
            return SQLiteCheckpointer(path)
        if store == "fakeredis":
            if self._store_client is None:
                self._store_world = FakeWorld(shared=self.settings.mode == "kill")
                self._store_client = self._store_world.redis_client()
            return RedisCheckpointer(self._store_client, prefix=f"durableflow-crashtest:{self._stores}")
        if store.startswith(("redis://", "rediss://", "unix://")):
            return RedisCheckpointer(store, prefix=f"durableflow-crashtest:{uuid.uuid4().hex[:12]}")
        raise ValueError(f"unknown store {store!r}: use memory, sqlite, fakeredis, a redis:// URL or a factory")

    def final(self, store: Checkpointer, lives: list[Life], at_first_crash: dict[str, Any] | None = None) -> Final:
        stored = lives[-1].stored or self.stored(store)
        effects, windows = count_effects(lives)
        return Final(
            **stored, world=self.world.snapshot(), effects=effects, windows=windows, at_first_crash=at_first_crash or {}
        )

    def stored(self, store: Checkpointer) -> dict[str, Any]:
        """The run's status, result, error and state as its records hold them (plain JSON data)."""
        try:
            doc = replay(store.load(self.run_id), self.run_id)
        except RunNotFoundError:
            return {"status": "missing", "result": None, "error": None, "state": {}}
        status, result, error = outcome(doc)
        return {"status": status, "result": result, "error": error, "state": doc["state"], "answers": doc["effects"]}


def copy_run(source: Checkpointer, target: Checkpointer, run_id: str) -> None:
    """Copy a run's records, lease holder included, into an empty store through the protocol alone."""
    try:
        records = source.load(run_id)
        info = source.info(run_id)
    except RunNotFoundError:
        return  # the crash came before its first checkpoint: nothing is stored
    holder = info.lease_owner or "nobody"
    target.create(run_id, info.workflow, records[0], holder)
    for record in records[1:]:
        target.append(run_id, record, holder)
    if info.lease_owner is None:
        target.release(run_id, holder)


def _redis_keys(prefix: str, run_id: str) -> list[str]:
    """A run's keys in a ``RedisCheckpointer`` (see ``durableflow._redis``): its metadata, its records, the index."""
    return [f"{prefix}:run:{{{run_id}}}", f"{prefix}:records:{{{run_id}}}", f"{prefix}:runs"]


_COPY_RUN = """
local run = redis.call('DUMP', KEYS[1])
if not run then return 0 end
redis.call('RESTORE', KEYS[4], 0, run)
local records = redis.call('DUMP', KEYS[2])
if records then redis.call('RESTORE', KEYS[5], 0, records) end
local created = redis.call('ZSCORE', KEYS[3], ARGV[1])
if created then redis.call('ZADD', KEYS[6], created, ARGV[1]) end
return 1
"""
"""Copy run ARGV[1]'s keys (KEYS 1-3) to another prefix's (KEYS 4-6), atomically; nothing if it is not stored."""


def _is_redis(annotation: object) -> bool:
    module = getattr(annotation, "__module__", "") or ""
    return isinstance(annotation, type) and module.split(".")[0] == "redis"


def count_effects(lives: list[Life]) -> tuple[Counter[str], Counter[str]]:
    """How often each effect's function ran, and how many crashes fell in its window.

    Effect ``K`` is open from ``effect.K.before`` until ``effect.K.after``,
    which comes once its record is durable; a crash while it is open may run
    its function once more, which its idempotency key exists to absorb.
    Effects under other keys may open and close in between (concurrent steps).
    """
    runs: Counter[str] = Counter()
    windows: Counter[str] = Counter()
    for life in lives:
        crashed = life.ending == "crashed"
        open_effects: set[str] = set()
        for hit in life.hits[:-1] if crashed else life.hits:
            key, phase = _effect_of(hit)
            if phase == "before":
                runs[key] += 1
                open_effects.add(key)
            elif phase == "after":
                open_effects.discard(key)
        if crashed:
            key, phase = _effect_of(life.hits[-1]) if life.hits else ("", "")
            if phase == "after":
                open_effects.discard(key)  # its record was durable: the crash came just after
            windows.update(open_effects)
    return runs, windows


def _effect_of(hit: str) -> tuple[str, str]:
    """``("charge", "before")`` for ``effect.charge.before#1``; ``("", "")`` for any other crash point."""
    point = hit.rpartition("#")[0]
    if not point.startswith("effect."):
        return "", ""
    key, _, phase = point.removeprefix("effect.").rpartition(".")
    return key, phase


def judge(reference: Final, final: Final, lives: list[Life], crashes: list[str]) -> tuple[str | None, str]:
    """The failure kind and a diff, or ``(None, "")`` when the scenario ended like the reference."""
    last = lives[-1]
    if last.ending == "hang":
        return "hang", f"a life of the run did not finish within the bound (died at {' then '.join(crashes)})"
    if last.ending in ("error", "input"):
        return "error during resume", last.error or ""
    reached = [life.hits[-1] for life in lives if life.ending == "crashed"]
    if reached != crashes:
        missing = crashes[len(reached)]
        return "unreached", f"the run never reached {missing}: it does not hit the same crash points on every run"
    if (final.status, final.error) != (reference.status, reference.error):
        return "error during resume", _diff(
            {"status": reference.status, "error": reference.error}, {"status": final.status, "error": final.error}
        )
    allowed = reference.effects
    for key, count in final.effects.items():
        if count > allowed[key] + final.windows[key]:
            return "duplicated effect", f"effect {key!r} ran {count} times; the reference run ran it {allowed[key]}"
    if _ends_alike(reference, final):
        return None, ""
    if reference.world != final.world:
        return _world_kind(reference.world, final.world, final.at_first_crash), _diff(
            _world_entries(reference.world), _world_entries(final.world)
        )
    if final.result != reference.result:
        return "divergent result", _diff(reference.result, final.result, "result")
    return "divergent state", _diff(reference.state, final.state, "state key")


def _ends_alike(reference: Final, final: Final) -> bool:
    """The same result, state and world — as they are, or once ``final``'s effects are answered as the
    reference's were (a relabelling can also unsort what was sorted, so both are tried)."""

    def end(run: Final) -> tuple[Any, ...]:
        return run.world, run.result, run.state

    return end(final) == end(reference) or end(_with_the_references_answers(final, reference)) == end(reference)


def _with_the_references_answers(final: Final, reference: Final) -> Final:
    """``final`` as if its effects had been answered as the reference's were.

    An effect whose answer varies (a fresh id, a provider's receipt) may be
    answered differently in a run that crashed before recording it: both runs
    are right. Each text the two answers differ by is swapped for the
    reference's wherever it appears, so the rest of the comparison is fair.
    """
    swaps: dict[str, str] = {}
    for key, answer in final.answers.items():
        if key in reference.answers and answer != reference.answers[key]:
            _pair_texts(answer, reference.answers[key], swaps)
    if not swaps:
        return final
    # all at once: answers that traded places (two receipts) must not be swapped back
    texts = re.compile("|".join(map(re.escape, sorted(swaps, key=len, reverse=True))))

    def swapped(value: Any) -> Any:
        if isinstance(value, str):
            return texts.sub(lambda match: swaps[match.group()], value)
        if isinstance(value, dict):
            return {swapped(k): swapped(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swapped(item) for item in value]
        return value

    return dataclasses.replace(
        final, result=swapped(final.result), state=swapped(final.state), world=swapped(final.world)
    )


def _pair_texts(found: Any, expected: Any, swaps: dict[str, str]) -> None:
    """Pair the differing texts at the same places in two answers; short ones are too common to swap."""
    if isinstance(found, str) and isinstance(expected, str):
        if found != expected and len(found) >= _MIN_SWAP:
            swaps[found] = expected
    elif isinstance(found, dict) and isinstance(expected, dict):
        for key in found.keys() & expected.keys():
            _pair_texts(found[key], expected[key], swaps)
    elif isinstance(found, list) and isinstance(expected, list):
        for pair in zip(found, expected, strict=False):
            _pair_texts(*pair, swaps)


_MIN_SWAP = 6


def _world_kind(expected: dict[str, Any], found: dict[str, Any], at_crash: dict[str, Any]) -> str:
    """Past the reference's end, in the direction the reference moved from where the run crashed, is a
    duplicated effect (a counter decremented twice goes down); short of it is lost work. A change the
    reference did not need after the crash is work done again."""
    more = less = False
    for section in ("redis", "calls"):
        old, new, then = expected.get(section, {}), found.get(section, {}), at_crash.get(section, {})
        for key in old.keys() | new.keys():
            end, got = _size(old.get(key)), _size(new.get(key))
            if got == end:
                continue
            remaining = end - _size(then.get(key))
            if remaining == 0 or (got - end) * remaining > 0:
                more = True
            else:
                less = True
    if more and not less:
        return "duplicated effect"
    if less and not more:
        return "lost work"
    return "divergent state"


def _size(value: Any) -> float:
    """How much of something a world entry holds: a count, a length, or a number stored as text."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    content = value.get("value") if isinstance(value, dict) else value
    if isinstance(content, str):
        try:
            return float(content)
        except ValueError:
            return 1
    if isinstance(content, list | dict):
        return len(content)
    return 1


_ABSENT = object()


def _diff(expected: Any, found: Any, name: str = "", labels: tuple[str, str] = ("reference run", "resumed run")) -> str:
    """Each place where the two differ, named, with the reference's value and the resumed run's."""
    lines: list[str] = []
    width = max(map(len, labels)) + 2
    first, second = (f"{label}:".ljust(width) for label in labels)

    def walk(a: Any, b: Any, path: str) -> None:
        if a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(a.keys() | b.keys(), key=str):
                walk(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{path} {key}".strip())
            return
        lines.extend([f"{path or 'value'}:", f"  {first}{_show(a)}", f"  {second}{_show(b)}"])

    walk(expected, found, name)
    return "\n".join(lines[:45] + (["..."] if len(lines) > 45 else []))


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= 300 else text[:297] + "..."


def _world_entries(world: dict[str, Any]) -> dict[str, Any]:
    """The world flattened to readable names: redis key 'converted', call charge(...)."""
    entries: dict[str, Any] = {}
    for key, entry in world.get("redis", {}).items():
        db, _, name = key.partition(":")
        entries[f"redis key {name!r}" + ("" if db == "0" else f" (db {db})")] = entry["value"]
    for call, count in world.get("calls", {}).items():
        entries[f"calls of {call}"] = count
    return entries


def _beside_any_loop(fn: Callable[[], T]) -> T:
    """Call ``fn``, in a thread of its own if this one runs an event loop (an async test):
    explorations run event loops of their own, which cannot nest."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
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
