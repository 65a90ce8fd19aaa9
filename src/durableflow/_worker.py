"""``Worker``: recovers the interrupted runs of a store — those whose owner died — and drives them to their end.

Many workers on many machines may share one store: the store's lease gives each
run to exactly one of them. A worker polls ``runs(status="interrupted")``,
backing off while there is nothing to do, with jitter so a fleet does not poll
in lockstep, and shuts down gracefully: it stops taking runs, lets those it
drives finish within a grace period, then hands the rest back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, final

from . import _idle
from ._checkpointer import Checkpointer, RunInfo
from ._errors import (
    RunLeaseError,
    RunNotFoundError,
    SnapshotError,
    StoreAuthenticationError,
    StoreUnavailableError,
    WorkflowCancelledError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from ._handler import WorkflowHandler
from ._workflow import Workflow

log = logging.getLogger("durableflow.worker")

WorkflowSource = type[Workflow] | Callable[[], Workflow]


@dataclass
class WorkerStats:
    """What a worker has done since it started (``Worker.stats``)."""

    polls: int = 0
    recovered: int = 0
    """Runs this worker took over and started driving (``started`` among them)."""
    started: int = 0
    """Of those, runs submitted with ``wf.submit()`` that this worker started for the first time."""
    completed: int = 0
    failed: int = 0
    """Runs that ended failed or cancelled here (``RecoveryLimitError`` included)."""
    handed_back: int = 0
    """Runs released unfinished at shutdown, for another worker to continue."""
    waiting: int = 0
    """Runs released as they waited for input or an event, with no step in flight: they stay stored as
    ``waiting`` until whoever sends it resumes them (a worker holding them would keep that out)."""
    lost_races: int = 0
    """Interrupted runs another worker took first."""
    stopped: int = 0
    """Runs this worker stopped driving unfinished, without writing, as it could no longer be sure it held their
    lease (``LeaseExpiredError``: the store did not answer in time; or another worker had taken it over), or as
    their store failed a write (``StoreUnavailableError``)."""


@final
class Worker:
    """Drives the interrupted runs of ``workflows`` stored in ``checkpointer`` until stopped.

    ``workflows``: the ``Workflow`` classes (or zero-argument factories) this
    worker may run; a stored run is matched by its workflow's name, and runs of
    other workflows are left to workers that know them. ``concurrency`` bounds
    the runs driven at once. Polls come ``poll_interval`` seconds apart while
    there is work, doubling up to ``max_poll_interval`` while there is none.
    ``max_recoveries`` marks a run failed (``RecoveryLimitError``) once it was
    interrupted that many times in a row without completing a step. On
    ``stop()`` (or SIGTERM/SIGINT, under ``run()``) runs still going after
    ``grace_period`` seconds are handed back: their leases released at once.
    """

    def __init__(
        self,
        workflows: Iterable[WorkflowSource],
        checkpointer: Checkpointer,
        *,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        max_recoveries: int | None = 5,
        grace_period: float = 10.0,
        page_size: int = 100,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, not {concurrency}")
        if not 0 < poll_interval <= max_poll_interval:
            raise ValueError("poll intervals must satisfy 0 < poll_interval <= max_poll_interval")
        if max_recoveries is not None and max_recoveries < 0:
            raise ValueError(f"max_recoveries must be 0 or more (or None: no limit), not {max_recoveries}")
        self.checkpointer = checkpointer
        self.factories = _registry(workflows)
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.max_recoveries = max_recoveries
        self.grace_period = grace_period
        self.page_size = page_size
        self.stats = WorkerStats()
        self.active: dict[str, WorkflowHandler] = {}
        """The runs this worker drives now, by id."""
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._skipped: set[str] = set()  # runs this worker cannot load: logged once, left to a fix
        self._handed_back: set[str] = set()
        self._random = random.Random()
        self._watchers: set[asyncio.Future[None]] = set()

    # -- serving -----------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> None:
        """Recover runs until ``stop()`` (or, with ``handle_signals``, SIGTERM or SIGINT; a second one
        skips the grace period), then finish or hand back the runs still going."""
        loop = asyncio.get_running_loop()
        self._stopping, self._wake = asyncio.Event(), asyncio.Event()
        installed = self._install_signals(loop) if handle_signals else []
        interval = self.poll_interval
        try:
            while not self._stopping.is_set():
                try:
                    found = await self.recover_once()
                except StoreAuthenticationError as exc:  # it will not let this worker in however long it waits
                    log.error("store refused this worker, stopping: %s", exc)
                    raise
                except StoreUnavailableError as exc:
                    log.warning("store unavailable, polling again later: %s", exc)
                    found = 0
                interval = next_poll_interval(interval, found, self.poll_interval, self.max_poll_interval)
                await self._pause(interval)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            await self._shut_down()

    def stop(self) -> None:
        """Stop taking runs; ``run()`` returns once the runs going have finished or been handed back.
        Called a second time, hands them back at once."""
        if self._stopping is None:
            return
        if self._stopping.is_set():
            self._hand_back_all()
        self._stopping.set()

    async def recover_once(self) -> int:
        """One poll: take over interrupted runs while slots are free; the number of runs it found to take
        (including those another worker won), so that an idle store can be told from a busy one."""
        self.stats.polls += 1
        found = 0
        after: str | None = None
        while len(self.active) < self.concurrency:
            page = await self._call(self.checkpointer.runs, "interrupted", self.page_size, after)
            if not page:
                break
            candidates = [info for info in page if self._wanted(info)]
            self._random.shuffle(candidates)  # workers polling one page at once mostly try different runs
            for info in candidates:
                if len(self.active) >= self.concurrency or self._stopping_now():
                    return found
                found += 1
                await self._take(info)
            if len(page) < self.page_size:
                break
            after = page[-1].cursor
        return found

    # -- taking a run ----------------------------------------------------------------------

    def _wanted(self, info: RunInfo) -> bool:
        return info.run_id not in self.active and info.run_id not in self._skipped and info.workflow in self.factories

    async def _take(self, info: RunInfo) -> None:
        """Claim the run (off the event loop on a threaded store: only this poll waits) and drive it."""
        run_id = info.run_id
        workflow = self.factories[info.workflow]()
        workflow.checkpointer = self.checkpointer
        workflow.max_recoveries = self.max_recoveries
        handler: WorkflowHandler | None = None
        try:
            handler = workflow.resume(run_id)
            self.active[run_id] = handler  # its slot is taken while the claim is under way
            await handler.claimed()
        except (RunLeaseError, RunNotFoundError):  # another worker won it, or it was purged meanwhile
            self.stats.lost_races += 1
            return self._let_down(run_id, handler)
        except (SnapshotError, WorkflowValidationError) as exc:
            self._skipped.add(run_id)
            log.error("run %s cannot be resumed with this code, leaving it alone: %s", run_id, exc)
            return self._let_down(run_id, handler)
        except StoreUnavailableError as exc:
            log.warning("could not claim run %s, trying again later: %s", run_id, exc)
            return self._let_down(run_id, handler)
        self.stats.recovered += 1
        self.stats.started += handler._first_start
        log.info("%s run %s of %s", "starting" if handler._first_start else "recovering", run_id, info.workflow)
        self._track(self._watch(run_id, handler))

    def _let_down(self, run_id: str, handler: WorkflowHandler | None) -> None:
        """A claim that failed: its slot is free, and the run's own error was told already."""
        if handler is not None:
            self.active.pop(run_id, None)
            handler._future.add_done_callback(lambda done: done.cancelled() or done.exception())

    def _track(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, run_id: str, handler: WorkflowHandler) -> None:
        owner = handler._runner.owner if handler._runner is not None else None
        try:
            await _parked_or_ended(handler)
            if not handler.done():
                self._park(run_id, handler)
            await handler
            self.stats.completed += 1
            log.info("run %s completed", run_id)
        except RunLeaseError as exc:  # handed back, or the lease was lost or not renewed: another worker continues
            if run_id not in self._handed_back:
                self.stats.stopped += 1
                log.warning("stopped driving run %s: %s", run_id, exc)
        except Exception as exc:
            if isinstance(exc, StoreUnavailableError):  # nothing was written: the run is left for the next claim
                self.stats.stopped += 1
                log.warning("stopped driving run %s, its store failed: %s", run_id, exc)
            else:
                self.stats.failed += 1
                log.warning("run %s %s: %s: %s", run_id, _ending(exc), type(exc).__name__, exc)
            if owner is not None:
                self._track(self._let_go(run_id, owner))
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # a step's crash (SystemExit, say) abandoned the run, as if its process died
            log.error("run %s was abandoned: %s: %s", run_id, type(exc).__name__, exc)
        finally:
            del self.active[run_id]
            self._handed_back.discard(run_id)
            if self._wake is not None:
                self._wake.set()  # a slot is free: poll now rather than at the next interval

    def _park(self, run_id: str, handler: WorkflowHandler) -> None:
        """The run is idle: nothing to run until an event is sent to it. One parked as ``waiting`` (no step in
        flight) is released, so that whoever answers can resume it; one whose step waits in
        ``ctx.wait_for_event`` is kept (released, it would be listed interrupted and taken over again)."""
        runner = handler._runner
        assert runner is not None
        waits = ", ".join(f"{w.step} for {w.event_type.__name__}" for w in _idle.waits(runner))
        if runner.run.status != "waiting":
            log.info("run %s waits in ctx.wait_for_event (%s); this worker keeps driving it", run_id, waits)
            return
        asks = [runner.run.events[eid] for eid in runner.run.awaiting]
        what = f"for input ({', '.join(map(repr, asks))})" if asks else "for an event"
        self._handed_back.add(run_id)  # the RunLeaseError its handler now raises is this release, not a lost lease
        runner.hand_back()
        self.stats.waiting += 1
        log.info("run %s is waiting %s: released, stored as waiting until it is resumed to continue", run_id, what)

    async def _let_go(self, run_id: str, owner: str) -> None:
        """Release the lease of a run that failed or stopped here if it still holds it: the store was down as
        it let go, and other workers would otherwise wait out the lease to take the run over. Tried until the
        lease would have lapsed anyway."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.checkpointer.lease_ttl
        delay = 0.05
        while True:
            try:
                if (await self._call(self.checkpointer.info, run_id)).lease_owner == owner:
                    await self._call(self.checkpointer.release, run_id, owner)
                    log.info("released run %s, whose failure could not be stored", run_id)
                return
            except RunNotFoundError:
                return
            except StoreUnavailableError:
                if loop.time() + delay > give_up:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- pacing and shutdown ---------------------------------------------------------------

    async def _pause(self, interval: float) -> None:
        """Sleep ``interval`` with jitter (between half and all of it), less if a slot frees up or on stop()."""
        assert self._stopping is not None and self._wake is not None
        self._wake.clear()
        wake = asyncio.ensure_future(self._wake.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((wake, stop), timeout=self.jittered(interval))
        finally:
            wake.cancel()
            stop.cancel()

    def jittered(self, interval: float) -> float:
        """A pause of between half and all of ``interval``, drawn anew each time: workers started together
        (a deploy, a restart after an outage) drift apart instead of polling the store in lockstep."""
        return interval * self._random.uniform(0.5, 1.0)

    def _stopping_now(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def _shut_down(self) -> None:
        if self.active:
            log.info("stopping: waiting up to %ss for %d run(s)", self.grace_period, len(self.active))
            await asyncio.wait(
                [asyncio.ensure_future(_settled(h)) for h in self.active.values()], timeout=self.grace_period
            )
        self._hand_back_all()
        while self.active:  # their watchers run once more to note the end
            await asyncio.sleep(0)

    def _hand_back_all(self) -> None:
        for run_id, handler in list(self.active.items()):
            runner = handler._runner
            if runner is not None and not handler.done():
                runner.hand_back()
                self._handed_back.add(run_id)
                self.stats.handed_back += 1
                log.info("handed run %s back", run_id)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []
        installed: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # a loop or platform without them
                loop.add_signal_handler(signum, self.stop)
                installed.append(signum)
        return installed

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A store call off the event loop, so that a slow store delays this poll and no run."""
        if getattr(self.checkpointer, "inline", False):
            return fn(*args)
        return await asyncio.to_thread(fn, *args)


def next_poll_interval(previous: float, found: int, shortest: float, longest: float) -> float:
    """The pause before the next poll: the shortest after a poll that found runs, else twice the last, capped."""
    return shortest if found else min(previous * 2, longest)


async def _parked_or_ended(handler: WorkflowHandler) -> None:
    """Until the run ends or is idle (``_idle``)."""
    runner = handler._runner
    if runner is None:
        return
    await asyncio.wait((handler._future, _idle.watch(runner)), return_when=asyncio.FIRST_COMPLETED)


def _ending(exc: BaseException) -> str:
    if isinstance(exc, WorkflowTimeoutError):
        return "timed out"
    if isinstance(exc, WorkflowCancelledError):
        return "was cancelled"
    return "failed"


async def _settled(handler: WorkflowHandler) -> None:
    with contextlib.suppress(BaseException):
        await handler


def _registry(workflows: Iterable[WorkflowSource]) -> dict[str, Callable[[], Workflow]]:
    """Workflow name -> factory; a name given twice by different classes is refused."""
    factories: dict[str, Callable[[], Workflow]] = {}
    for source in workflows:
        workflow = source()
        if not isinstance(workflow, Workflow):
            raise TypeError(f"{source!r} is not a Workflow subclass or a factory of one")
        name = workflow.workflow_name  # what its runs are stored under
        known = factories.get(name)
        if known is not None and known is not source:
            raise ValueError(f"two workflows are named {name!r}; give one another name")
        factories[name] = source
    if not factories:
        raise ValueError("a Worker needs at least one workflow to run")
    return factories


__all__ = ["Worker", "WorkerStats"]
