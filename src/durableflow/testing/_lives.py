"""Lives: one process's share of a run, and how a life is lived in this process (the crash a ``Crash``).

A *life* starts the run (or resumes it) and either finishes or dies at its
target crash point. Kill mode lives its lives in forked children (``_kill``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from durableflow import Checkpointer, InputRequiredEvent, RunNotFoundError, WorkflowHandler, _crashpoints

from ._judge import shape
from ._world import UncopyableWorld

if TYPE_CHECKING:
    from ._exploration import Exploration


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

    def close(self) -> None:
        for loop in self.graveyard:
            loop.close()
        self.graveyard.clear()
        if self.spare_loop is not None:
            self.spare_loop.close()
            self.spare_loop = None

    def live_here(
        self,
        store: Checkpointer,
        target: str | None,
        first: bool,
        position: int | None = None,
        capture: AbstractSet[str] | None = frozenset(),
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
            if (capture is None or hit in capture) and not refused:
                try:
                    life.captures[hit] = exploration.capture(store, hits.list, None if clock is None else clock.now())
                except UncopyableWorld as exc:  # raised here it would only fail the run: said after the life
                    refused.append(exc)

        settings = self.exploration.settings
        loop, self.spare_loop = self.spare_loop or asyncio.new_event_loop(), None
        try:
            with _crashpoints.armed(listener), self.exploration.world.serving():
                loop.run_until_complete(asyncio.wait_for(self.drive(store, first), settings.hang_after))
        except Crash as crash:
            life.ending = "crashed"
            self._kill_engine(crash)
        except TimeoutError:
            life.ending, life.error = "hang", overstayed(settings.hang_after)
        except NeedsInput as exc:
            life.ending, life.error = "input", str(exc)
        except ResumeFailed as exc:
            life.ending, life.error = "error", str(exc)
        except BaseException:
            for taken in life.captures.values():  # nobody will resume from them
                taken.store.close()
            raise
        finally:
            self.bury(loop)
        if refused:
            for taken in life.captures.values():
                taken.store.close()
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
                except RunNotFoundError:  # it died before its first checkpoint: the caller starts it again
                    handler = workflow.run(run_id=exploration.run_id, start_event=exploration.start)
        except Exception as exc:
            raise ResumeFailed(
                f"{'starting' if first else 'resuming'} the run raised {type(exc).__name__}: {exc}"
            ) from exc
        self.handler = handler
        respond = exploration.settings.respond
        try:
            async for event in handler.stream_events():
                if isinstance(event, InputRequiredEvent):
                    if respond is None:
                        raise NeedsInput(f"the run asked for input ({event!r}); pass respond= to answer it")
                    reply = respond(event)
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
            self.spare_loop = loop
