"""Lives: one process's share of a run, and how a life is lived in this process (the crash a ``Crash``).

A *life* starts the run (or resumes it) and either finishes or dies at its
target crash point. Kill mode lives its lives in forked children (``_kill``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from durableflow import (
    Checkpointer,
    InputRequiredEvent,
    MemoryCheckpointer,
    RunLeaseError,
    RunNotFoundError,
    SQLiteCheckpointer,
    WorkflowHandler,
    _crashpoints,
)
from durableflow._framing import record_key
from durableflow._snapshot import replay

from ._clock import FrozenClock
from ._judge import _diff, shape
from ._stuck import Stuck, watch
from ._world import GRACE, UncopyableWorld

if TYPE_CHECKING:
    from ._exploration import Exploration


class Crash(BaseException):
    """Raised at the chosen crash point in in-process mode; ``except Exception`` cannot swallow it."""


class ResumeFailed(Exception):
    """Starting or resuming the run raised (a ``SnapshotError``, say): the harness reports it."""


class NeedsInput(Exception):
    """The run asked for human input and the exploration has no ``respond``."""


class ReferenceUnfinished(AssertionError):
    """The uninterrupted reference run did not finish: there is nothing to judge the scenarios by.
    ``what`` says so without advice, since the API and the CLI name their options differently."""

    ADVICE: ClassVar[dict[str, str]] = {
        "input": "pass respond= to answer it",
        "hang": "a step that waits with asyncio.sleep (or any real wait) should await ctx.sleep(...), which is "
        "durable and which the harness's frozen clock skips; or raise the bound: hang_after= (explore, "
        "crash_harness), --durableflow-hang-after or the ini option durableflow_hang_after",
    }

    def __init__(self, workflow: str, ending: str, error: str) -> None:
        self.ending = ending
        self.what = f"the uninterrupted reference run of {workflow} did not finish ({ending}): {error}"
        advice = self.ADVICE.get(ending)
        super().__init__(f"{self.what}; {advice}" if advice else self.what)


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
    return f"did not finish within {seconds:g} s, the bound on one life"


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
    """What a crash at each of its points would have left, by crash point."""
    round_trip: str | None = None
    """The first checkpoint whose stored run, read back, differed from the live run (see ``read_back``)."""
    probe: str | None = None
    """What the second worker's probe found (see ``probe_second_worker``): ``""`` nothing wrong, ``None``
    the life never finished the probe."""


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
    holders: list[int] = field(default_factory=lambda: [1])
    """How many captures hold ``store``, this one among them (one count, shared by all of them): scenarios
    whose first crashes left the same remains share their resume's captures (see ``_remains``)."""


@dataclass
class Errands:
    """What a life does besides living: pause at a point while ``interlude`` runs (another worker takes the
    run over; it returns the time the paused life wakes to), or probe the lease at a point."""

    pause_at: str | None = None
    pause_position: int | None = None
    """Where ``pause_at`` came in the life it was planned from: a point whose name varies is paused at there."""
    interlude: Callable[[float | None], float | None] | None = None
    probe_at: str | None = None
    read_back: bool = False
    """After each checkpoint, read the stored run back and compare it with the live run."""
    twins: Callable[[Life, Checkpointer, int, int], None] | None = None
    """Kill mode, at each capture of the life: scenarios lived by twins of it forked there (``_zombies``)."""


SECOND_WORKER = "crashtest:second-worker"


def read_back(store: Checkpointer, run_id: str, handler: WorkflowHandler | None, hit: str) -> str | None:
    """Right after checkpoint ``hit``: the stored run, read back, against the live run's state and effect
    records (what changed since that checkpoint aside). A difference is data the store or a record lost."""
    if handler is None or handler._ctx is None or not isinstance(store, MemoryCheckpointer | SQLiteCheckpointer):
        return None  # a store written from a thread may not hold the record yet
    ctx = handler._ctx
    try:
        doc = replay(store.load(run_id), run_id, record_key(store))  # sealed with the store's own key
    except Exception as exc:
        return f"after {hit} the stored run cannot be read back: {type(exc).__name__}: {exc}"
    try:
        live, run = ctx.store, ctx._state
        found = {
            "state": {k: v for k, v in doc["state"].items() if k not in live.dirty},
            "effects": {k: v for k, v in doc["effects"].items() if k not in run.new_effects},
        }
        expected = {
            "state": {k: json.loads(v) for k, v in live.values.items() if k not in live.dirty},
            "effects": {k: json.loads(v) for k, v in run.effects.items() if k not in run.new_effects},
        }
    except Exception as exc:  # raised here it would fail the run in the engine, and blame the workflow
        return f"after {hit} the stored run could not be compared with the live run: {raised(exc)}"
    if found == expected:
        return None
    labels = ("live run", "stored run")
    return f"after {hit} the stored run, read back, differs from the live run:\n" + _diff(
        expected, found, labels=labels
    )


CHECK_RAISED = "the check itself raised"
"""In a check's finding (read-back, second worker): the check could not be made, so nothing is known."""


def raised(exc: Exception) -> str:
    return f"{CHECK_RAISED} {type(exc).__name__}: {exc}"


def unjudged(finding: str) -> bool:
    """The finding is a check that could not be made (``raised``), not a fault it found."""
    return CHECK_RAISED in finding.partition("\n")[0]


def probe_second_worker(
    store: Checkpointer, run_id: str, clock: FrozenClock | None, handler: WorkflowHandler | None
) -> str | None:
    """At a point of a live run, let twice its lease's time pass (its renewals firing), then try to take
    the run over as a second worker would: refused is right; taken means the lease was not kept alive.

    Time stops short of the run's own deadline (``Workflow(timeout=)``), whose ending releases the lease
    rightly; a run that ends before its lease would lapse cannot have two workers, and is not probed."""
    if clock is None or not isinstance(store, MemoryCheckpointer | SQLiteCheckpointer):
        return None  # renewals of a store written from a thread cannot fire while this life holds its loop
    ttl = store.lease_ttl
    deadline = None if handler is None or handler._ctx is None else handler._ctx._state.deadline
    span = 2 * ttl if deadline is None else min(2 * ttl, deadline - clock.now() - ttl / 8)
    if span <= ttl:
        return None
    try:
        for _ in range(8):
            clock.advance_here(span / 8)
        store.acquire(run_id, SECOND_WORKER)
    except RunLeaseError:
        return None
    except Exception as exc:  # raised here it would fail the run in the engine, and the probe would pass
        refuse = "a checkpointer refuses a leased run with RunLeaseError"
        return f"the second worker could not be refused or let in: {raised(exc)}; {refuse}"
    return (
        f"a second worker took the run over {span:g} s into a live run whose lease lasts {ttl:g} s: "
        "the first worker's lease was not renewed, so two workers would drive the run"
    )


def _at(hit: str, index: int, planned: str | None, position: int | None) -> bool:
    """``hit`` (the ``index``-th of its life) is the planned point, or stands where it stood under another name."""
    return planned is not None and (hit == planned or (index == position and shape(hit) == shape(planned)))


@contextmanager
def compacting(on: bool) -> Iterator[None]:
    """While the block runs (and in the lives it forks), every checkpoint is a full snapshot."""
    if not on:
        yield
        return
    from durableflow._checkpointing import RunCheckpoints

    due = RunCheckpoints._compaction_due
    RunCheckpoints._compaction_due = lambda self: True  # type: ignore[method-assign]
    try:
        yield
    finally:
        RunCheckpoints._compaction_due = due  # type: ignore[method-assign]


class Lives:
    """Starts or resumes the run as its caller would, and lives lives in this process.

    Dead engines' loops are kept (never run, never closed) until the
    exploration ends, so that no ``finally`` of a crashed run ever runs.
    """

    def __init__(self, exploration: Exploration) -> None:
        self.exploration = exploration
        self.graveyard: list[asyncio.AbstractEventLoop] = []
        self.spare_loop: asyncio.AbstractEventLoop | None = None
        self.handler: WorkflowHandler | None = None
        self._second: Lives | None = None

    def close(self) -> None:
        for loop in self.graveyard:
            loop.close()
        self.graveyard.clear()
        if self.spare_loop is not None:
            self.spare_loop.close()
            self.spare_loop = None
        if self._second is not None:
            self._second.close()
            self._second = None

    def second_worker(self) -> Lives:
        """Where a second worker lives while a life of these is paused (in a thread of its own): one for the
        whole exploration, so that each takeover reuses the loop the last one left empty."""
        if self._second is None:
            self._second = Lives(self.exploration)
        return self._second

    def live_here(
        self,
        store: Checkpointer,
        target: str | None,
        first: bool,
        position: int | None = None,
        capture: AbstractSet[str] | None = frozenset(),
        errands: Errands | None = None,
    ) -> Life:
        """A life in this process: the crash is a ``Crash`` raised at the target point.

        At each point in ``capture`` (``None``: every point) what a crash there would leave is copied
        before the life goes on, as kill mode does: scenarios then resume from those copies.

        ``position`` is where the target came in the life it was planned from: a point whose name varies
        between runs (an effect keyed by the time) is crashed at there, as kill mode, which crashes the
        very life it planned from, would.
        """
        hits = Hits()
        life = Life(hits=hits.list)
        exploration = self.exploration
        clock = exploration.clock
        refused: list[UncopyableWorld] = []

        def listener(point: str) -> None:
            hit = hits.hit(point)
            if hit == target or (target is not None and len(hits.list) - 1 == position and shape(hit) == shape(target)):
                raise Crash(hit)
            if errands is not None:
                if errands.read_back and point == "checkpoint.write.after" and life.round_trip is None:
                    life.round_trip = read_back(store, exploration.run_id, self.handler, hit)
                if hit == errands.probe_at:  # "": checked, nothing wrong (``None`` is never checked)
                    life.probe = probe_second_worker(store, exploration.run_id, clock, self.handler) or ""
                    raise Crash(hit)  # the verdict is all this life is for: it stops here, as in kill mode
                if errands.interlude is not None and _at(
                    hit, len(hits.list) - 1, errands.pause_at, errands.pause_position
                ):
                    # a paused process's threads pause with it: held out of the world while another worker runs
                    paused = exploration.world.gate
                    if paused is not None and not paused.pause(GRACE):
                        exploration.world.torn += 1
                    try:
                        errands.interlude(None)  # the clock is this process's: it moves on here
                    finally:
                        if paused is not None:
                            paused.resume()
            if (capture is None or hit in capture) and not refused:
                try:
                    life.captures[hit] = exploration.capture(store, hits.list, None if clock is None else clock.now())
                except UncopyableWorld as exc:  # raised here it would only fail the run: said after the life
                    refused.append(exc)

        settings = self.exploration.settings
        world = self.exploration.world
        outer, gate = world.gate, world.open_gate()  # outer: a paused life this one took over from
        loop, self.spare_loop = self.spare_loop or asyncio.new_event_loop(), None
        overstaying: list[bool] = []

        def overstayed_bound() -> None:
            overstaying.append(True)
            task.cancel()

        try:
            with _crashpoints.armed(listener), world.serving():
                # the bound as a timer on the loop that cancels the life (``wait_for``'s, without the task
                # around the task and the round of the loop it takes to hand on the result)
                task = loop.create_task(self.drive(store, first))
                timer = loop.call_later(settings.hang_after, overstayed_bound)
                try:
                    loop.run_until_complete(task)
                finally:
                    timer.cancel()
        except Crash as crash:
            life.ending = "crashed"
            self._kill_engine(crash)
        except asyncio.CancelledError:
            if not overstaying:
                raise
            life.ending, life.error = "hang", overstayed(settings.hang_after)
        except NeedsInput as exc:
            life.ending, life.error = "input", str(exc)
        except Stuck as exc:  # a hang told at once: nothing could ever have ended it
            life.ending, life.error = "hang", str(exc)
        except ResumeFailed as exc:
            life.ending, life.error = "error", str(exc)
        except BaseException:
            for taken in life.captures.values():  # nobody will resume from them
                self.exploration.stores.discard(taken.store, self.exploration.run_id)
            # Ctrl-C, say: the loop is abandoned, and its tasks' unretrieved exceptions are only noise
            loop.set_exception_handler(lambda loop, context: None)
            raise
        finally:
            self.bury(loop)
            world.shut_gate(gate)  # what its threads do from now on cannot reach the world
            world.gate = outer
        if refused:
            for taken in life.captures.values():
                self.exploration.stores.discard(taken.store, self.exploration.run_id)
            raise refused[0]
        return life

    def _kill_engine(self, crash: Crash) -> None:
        """A crash raised outside the engine's tasks (in ``respond``, say) still kills the whole process."""
        runner = self.handler._runner if self.handler is not None else None
        if runner is not None and not runner.done:
            runner._abandon(crash)

    async def drive(self, store: Checkpointer, first: bool) -> None:
        """Start or resume the run as its caller would, answer input requests, and wait for the end."""
        exploration = self.exploration
        self.handler = None
        workflow = exploration.make()
        workflow.checkpointer = store
        try:
            if first:
                handler = workflow.run(run_id=exploration.run_id, start_event=exploration.start)
            else:
                try:
                    handler = workflow.resume(exploration.run_id)
                    await handler.claimed()  # on a threaded store (Redis) a missing run is told here
                except RunNotFoundError:  # it died before its first checkpoint: the caller starts it again
                    handler = workflow.run(run_id=exploration.run_id, start_event=exploration.start)
        except Exception as exc:
            raise ResumeFailed(
                f"{'starting' if first else 'resuming'} the run raised {type(exc).__name__}: {exc}"
            ) from exc
        self.handler = handler
        respond = exploration.settings.respond
        told: list[str] = []
        runner, life = handler._runner, asyncio.current_task()
        stuck = None if runner is None or life is None else asyncio.ensure_future(watch(runner, life, told))
        try:
            async for event in handler.stream_events():
                if isinstance(event, InputRequiredEvent):
                    if respond is None:
                        raise NeedsInput(f"the run asked for input ({event!r})")
                    try:
                        reply = respond(event)
                    except Exception as exc:  # the test's own code: not the run failing, which is read back
                        raise ResumeFailed(f"respond raised {type(exc).__name__}: {exc} (asked {event!r})") from exc
                    if reply is not None:
                        handler.send_event(reply)
            await handler
        except asyncio.CancelledError:
            if told:
                raise Stuck(told[0]) from None
            raise
        except (NeedsInput, ResumeFailed):
            raise
        except Exception:
            pass  # the run failed: how it ended is read back from its store
        finally:
            if stuck is not None:
                stuck.cancel()

    def bury(self, loop: asyncio.AbstractEventLoop) -> None:
        """Never run a loop with a dead engine's tasks again, and keep them alive so that no ``finally``
        of theirs runs; a loop the life left empty serves the next life."""
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task._log_destroy_pending = False  # type: ignore[attr-defined]
        if tasks:
            self.graveyard.append(loop)
        else:
            self.spare_loop = loop
