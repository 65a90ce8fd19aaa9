"""How a run stops: completed, failed, cancelled, timed out, abandoned as if its process had died, or
handed back; and the stream and the write callbacks that every stop goes through.

``RunEnding`` is the base of ``Runner`` (``_runner``), which sets the state declared
here. Nothing here writes after a crash: a ``BaseException`` from a crash point (or a
cancellation from outside) abandons the run where it stands (``_abandon``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import _recovery
from ._checkpointer import retire_owner
from ._checkpointing import EndLanded, RunCheckpoints
from ._clock import get_clock
from ._errors import (
    DurableflowError,
    LeaseExpiredError,
    RunConflictError,
    RunLeaseError,
    StoreUnavailableError,
    WorkflowCancelledError,
    WorkflowTimeoutError,
)
from ._events import (
    Event,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowTimedOutEvent,
    run_result,
)
from ._hooks import plugin_manager
from ._runstate import Delivery

if TYPE_CHECKING:
    from ._context import Context
    from ._runstate import RunState
    from ._workflow import Workflow


class RunEnding:
    """The ends of one run, and what leads to them (a lost lease, a deadline); ``Runner`` inherits them."""

    workflow: Workflow
    ctx: Context[Any]
    run: RunState
    owner: str
    durable: RunCheckpoints | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    claim_future: asyncio.Future[None] | None
    claim_outcome: BaseException | bool | None
    busy: dict[str, int]
    workers: asyncio.Task[None] | set[asyncio.Task[None]] | None
    stream: deque[Event] | tuple[()]
    stream_waiter: asyncio.Future[None] | None
    done: bool
    ending: bool
    cancels: tuple[Callable[[], None], ...]
    timeout: float | None
    unconfirmed_end: StopEvent | None

    # -- stream --------------------------------------------------------------------------

    def write_stream(self, event: Event) -> None:
        stream = self.stream
        if isinstance(stream, tuple):  # made on first use: a run in flight keeps no empty one
            self.stream = stream = deque()
        stream.append(event)
        self._wake_stream()

    def _wake_stream(self) -> None:
        waiter = self.stream_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- waiting for writes --------------------------------------------------------------

    def _after(
        self,
        pending: Awaitable[None] | None,
        then: Callable[[], None],
        failed: Callable[[Exception], None] | None = None,
    ) -> None:
        """Call ``then()`` once ``pending`` (a write on its way) is done, or at once without one;
        ``failed(exc)`` instead if the write failed (``then()`` if there is no ``failed``)."""
        if pending is None:
            then()
            return
        task = asyncio.ensure_future(pending)

        def done(task: asyncio.Future[None]) -> None:
            exc = asyncio.CancelledError() if task.cancelled() else task.exception()
            if exc is None or (failed is None and isinstance(exc, Exception)):
                self._guarded(then)()
            elif isinstance(exc, Exception):
                assert failed is not None
                self._guarded(lambda: failed(exc))()
            else:  # a crash point fired as the write landed: the engine dies there
                self._abandon(exc)
                if not self.future.done():  # the run had ended: the write was cut off (its loop closed)
                    if isinstance(exc, asyncio.CancelledError):
                        self.future.cancel()  # as _abandon does: set as an exception, asyncio logs it unretrieved
                    else:
                        self.future.set_exception(exc)

        task.add_done_callback(done)

    def _guarded(self, callback: Callable[[], None]) -> Callable[[], None]:
        """A timer callback whose crash abandons the run instead of vanishing into the loop's log."""

        def guarded() -> None:
            try:
                callback()
            except BaseException as exc:
                self._abandon(exc)

        return guarded

    # -- ending --------------------------------------------------------------------------

    def _record_end(self, stop: StopEvent, at: str) -> Awaitable[None] | None:
        """Checkpoint the run as completed with ``stop``'s result; what to await if the write is on its way."""
        run = self.run
        run.result, run.status = stop, "completed"
        if self.durable is None:
            return None
        self.ending = True
        try:
            return self.durable.write(f"stop after {at}")
        except Exception:
            self._unend()
            raise

    def _unend(self) -> None:
        """The record that ended the run failed: the run did not durably end (unless that record lands later:
        ``_settle_end``)."""
        if isinstance(self.run.result, StopEvent):
            self.unconfirmed_end = self.run.result
        self.run.result, self.run.status, self.ending = None, "running", False

    def _end_failed(self, exc: Exception) -> None:
        self._unend()
        self._fail(exc, partial=True)

    def _conclude(self, stop: StopEvent) -> None:
        """Tell everyone waiting that the run completed."""
        self._end()
        self.write_stream(stop)
        self._report("completed", run_result(stop), None)
        if not self.future.done():
            self.future.set_result(run_result(stop))

    def _fail(
        self,
        exc: BaseException,
        write: bool = True,
        partial: bool = False,
        step: str = "",
        delivery: Delivery | None = None,
    ) -> None:
        """End the run as failed; its last checkpoint stays, and ``resume`` continues from it.

        ``partial``: the failure interrupted a completion whose changes are only in memory
        (its input consumed, its outputs accepted), so only the status is written.

        A store that failed (``StoreUnavailableError``) is not the run's failure: nothing is written, so
        the stored run stays running, its lease released (or lapsing), for a worker or a resume to continue
        from its last checkpoint. Writing "failed" would land whenever the store is back a moment later,
        and workers leave failed runs alone: one store hiccup would end the run for good.
        """
        if self.done:
            return
        if write and partial and self.durable is not None and self.durable.end_in_doubt():
            self._settle_end(exc)
            return
        run = self.run
        run.status, run.error = "failed", run.error_of(exc)
        pending = None
        # a lost lease, a store that moved on without this worker, or one that failed: it stops without writing
        if write and self.durable is not None and not isinstance(exc, _NOT_THE_RUNS_FAILURE):
            pending = self._write_failed(partial)
        if not isinstance(exc, WorkflowTimeoutError):  # a timeout shows its own event
            self.write_stream(_recovery.failed_event(step, delivery, exc))
        self._end()
        if isinstance(exc, RunLeaseError) and plugin_manager.active:
            plugin_manager.hook.durableflow_lease_ended(run_id=run.run_id, reason="lost")

        def report() -> None:
            self._report("failed", None, exc)
            if not self.future.done():
                self.future.set_exception(exc)

        self._after(pending, report)

    def _settle_end(self, exc: BaseException) -> None:
        """The record that ended the run timed out: it may have landed, or land yet. Write the failure after
        it (a record that keeps the run running, if the store is what failed); the store takes that only if
        it did not land, and refuses it if it did (for its number, or for the lease the end released): then
        the run completed after all, and is reported so."""
        assert self.durable is not None and self.unconfirmed_end is not None
        stop, durable, run = self.unconfirmed_end, self.durable, self.run
        self.ending = True  # no other step completes while the store is asked
        if not isinstance(exc, StoreUnavailableError):  # if so, the record that asks stays "running" (see _fail)
            run.status, run.error = "failed", run.error_of(exc)

        def settled(outcome: BaseException | None) -> None:
            if isinstance(outcome, EndLanded):
                run.status, run.error = "completed", None
                self._conclude(stop)
            else:  # the failure is written; or the store is still away, or holds another record: it says so
                self._fail(exc, write=False)

        try:
            pending = durable.write("failed", status_only=True)
        except Exception as error:
            settled(error)
            return
        if pending is None:
            settled(None)
            return
        task = asyncio.ensure_future(pending)
        task.add_done_callback(
            lambda t: self._guarded(lambda: settled(asyncio.CancelledError() if t.cancelled() else t.exception()))()
        )

    def _write_failed(self, partial: bool) -> Awaitable[None] | None:
        """Record the failure; if the store or the data is what failed, record at least the status."""
        assert self.durable is not None
        durable = self.durable
        try:
            pending = durable.write("failed", status_only=partial)
        except DurableflowError:
            with contextlib.suppress(DurableflowError):
                return durable.write("failed", status_only=True)
            return None
        if pending is None:
            return None

        async def or_status_only() -> None:
            try:
                await pending
            except DurableflowError:
                with contextlib.suppress(DurableflowError):
                    again = durable.write("failed", status_only=True)
                    if again is not None:
                        await again

        return or_status_only()

    def cancel(self) -> None:
        if self.done or self.ending:  # the record that ends the run is on its way: it decides
            return
        self.run.status = "cancelled"
        pending = None
        if self.durable is not None:
            with contextlib.suppress(DurableflowError):
                pending = self.durable.write("cancelled")
        self.write_stream(WorkflowCancelledEvent())
        self._end()

        def report() -> None:
            self._report("cancelled", None, None)
            if not self.future.done():
                self.future.set_exception(WorkflowCancelledError(f"run {self.run.run_id!r} was cancelled"))

        self._after(pending, report)

    def hand_back(self) -> None:
        """Stop driving the run here without writing, and release its lease at once, so that another worker
        continues it from its last checkpoint without waiting for the lease to expire (a worker shutting down)."""
        if self.done:
            return
        self._abandon(
            RunLeaseError(
                self.run.run_id, None, None,
                f"this worker handed run {self.run.run_id!r} back as it shut down; another worker continues it "
                "from its last checkpoint",
            )
        )  # fmt: skip
        if self.durable is not None:
            self.durable.release()
        if plugin_manager.active:
            plugin_manager.hook.durableflow_lease_ended(run_id=self.run.run_id, reason="handed_back")

    def _set_deadline(self) -> None:
        timeout = self.timeout = self.workflow.timeout
        self.run.deadline = None if timeout is None else get_clock().now() + timeout

    def _timed_out(self) -> None:
        # a recovered run keeps the deadline its start set: the limit is named only when this runner set it
        after, limit = ("", "") if self.timeout is None else (f" after {self.timeout} seconds", f" of {self.timeout}s")
        active = sorted(name for name, busy in self.busy.items() if busy)
        self.write_stream(WorkflowTimedOutEvent(timeout=self.timeout or 0.0, active_steps=active))
        self._fail(
            WorkflowTimeoutError(
                f"Operation timed out{after}: run {self.run.run_id!r} passed its deadline{limit}, time spent "
                "crashed included; wf.resume(run_id) continues it with a new deadline from the workflow's timeout"
            )
        )

    @property
    def claimed(self) -> asyncio.Future[None]:
        """Done once the run is this process's in its store (its first checkpoint durable), or failed to be.

        Made when first asked for (``handler.claimed()``): most runs are never asked, and skip the future."""
        claimed = self.claim_future
        if claimed is None:
            claimed = self.claim_future = self.loop.create_future()
            if self.claim_outcome is not False:
                _settle_claim(claimed, self.claim_outcome)  # type: ignore[arg-type]
        return claimed

    def _claim_settled(self, exc: BaseException | None) -> None:
        """Tell ``handler.claimed()`` whether the run became this process's (``exc``: why not)."""
        if self.claim_outcome is not False:  # settled already: the first word stands
            return
        self.claim_outcome = exc
        if self.claim_future is not None:
            _settle_claim(self.claim_future, exc)

    def _end(self) -> None:
        self.done = True
        self._claim_settled(None)  # it ended here, so it was this process's (failed or cancelled before it spawned)
        for cancel in self.cancels:
            cancel()
        self.cancels = ()  # a timer's stop refers back to this runner: no cycle left for the collector
        self._stop_workers()
        if self.durable is not None:
            self.durable.release()
        self._detach()

    def _stop_workers(self) -> None:
        workers, current = self.workers, asyncio.current_task(self.loop)
        for task in workers if isinstance(workers, set) else () if workers is None else (workers,):
            if task is not current:
                task.cancel()
        self.workers = None  # a task cancelled before it started never takes itself out

    def _abandon(self, exc: BaseException | None) -> None:
        """Stop without writing anything, as if the process had died here."""
        if self.done:
            return
        self.done = True
        self._claim_settled(exc if exc is not None else asyncio.CancelledError())
        if self.durable is not None:
            self.durable.detach()
        self.stream = ()  # a dead process shows its readers nothing more, not even what it had queued
        for cancel in self.cancels:
            cancel()
        self.cancels = ()  # a timer's stop refers back to this runner: no cycle left for the collector
        self._stop_workers()  # a dead process runs no more steps: stop the other workers where they wait
        self._detach()
        if exc is not None and not self.future.done():
            if isinstance(exc, asyncio.CancelledError):
                self.future.cancel()
            else:
                self.future.set_exception(exc)
                self.future.exception()  # a dead process's result has no reader to owe it to: never log it

    def _detach(self) -> None:
        retire_owner(self.owner)
        if self.ctx._runner is self:
            self.ctx._runner = None
        self._wake_stream()

    def _report(self, status: str, result: Any, error: BaseException | None) -> None:
        if plugin_manager.active:
            plugin_manager.hook.durableflow_run_finished(
                run_id=self.run.run_id, workflow=self.workflow, status=status, result=result, error=error
            )

    # -- the lease -----------------------------------------------------------------------

    def _lease_lost(self) -> None:
        self._fail(RunLeaseError.lost(self.run.run_id, None, None), write=False)

    def _lease_expired(self) -> None:
        assert self.durable is not None
        self._stop_driving(LeaseExpiredError(self.run.run_id, self.durable.lease_until, self.durable.unrenewed()))

    async def _confirm_lease(self) -> None:
        assert self.durable is not None
        try:
            await self.durable.confirm_lease()
        except RunLeaseError as exc:
            self._stop_driving(exc)
            raise

    def _stop_driving(self, exc: RunLeaseError) -> None:
        """This worker may no longer hold the lease: stop at once and write nothing, as if the process had died,
        so that the worker that takes the run over is the only one driving it."""
        if self.done:
            return
        self._abandon(exc)
        if plugin_manager.active:
            reason = "expired" if isinstance(exc, LeaseExpiredError) else "lost"
            plugin_manager.hook.durableflow_lease_ended(run_id=self.run.run_id, reason=reason)


_NOT_THE_RUNS_FAILURE = (RunLeaseError, RunConflictError, StoreUnavailableError)
"""Why a worker stops driving a run without writing its failure: the run itself did not fail."""


def _settle_claim(claimed: asyncio.Future[None], exc: BaseException | None) -> None:
    if exc is None:
        claimed.set_result(None)
    elif isinstance(exc, asyncio.CancelledError):
        claimed.cancel()
    else:
        claimed.set_exception(exc)
        claimed.exception()  # retrieved: whoever awaits the run gets it from the run's own future
