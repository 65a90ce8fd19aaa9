"""``WorkflowHandler``: what ``wf.run()`` and ``wf.resume()`` return — await it for the result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any, final

from ._errors import WorkflowCancelledError, WorkflowRuntimeError
from ._events import Event, StopEvent

if TYPE_CHECKING:
    from ._context import Context
    from ._runner import Runner


@final
class WorkflowHandler:
    """A run in progress: awaitable for its result, with its id, context and event stream."""

    def __init__(
        self,
        run_id: str | None = None,
        future: asyncio.Future[Any] | None = None,
        ctx: Context[Any] | None = None,
    ) -> None:
        if future is None:
            future = asyncio.get_running_loop().create_future()
        if run_id is None:
            run_id = ctx.run_id if ctx is not None else ""
        self.run_id = run_id
        """The run's id: pass it to ``wf.resume`` after a restart."""
        self._future = future
        self._ctx = ctx
        self._runner: Runner | None = None
        self._waiting: asyncio.Task[None] | None = None  # resume(wait=...) polling for the lease
        self._all_events_consumed = False  # the stream was read to its end
        self._first_start = False  # a stored run that never started before (``wf.submit()``): started, not recovered
        # done once the run started here or never will; None when it started with the handler (most runs)
        self._started: asyncio.Future[None] | None = None if ctx is not None else future.get_loop().create_future()

    def _mark_started(self) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result(None)

    def _never_started(self, error: BaseException) -> None:
        """The run could not start here (its lease never came free, say): awaiting and streaming raise ``error``."""
        if not self._future.done():
            self._future.set_exception(error)
        self._mark_started()

    def _attach(self, runner: Runner) -> None:
        self._runner, self._ctx = runner, runner.ctx
        self._mark_started()

    @property
    def ctx(self) -> Context[Any]:
        """The run's context (``ctx.to_dict()`` snapshots it from here)."""
        if self._ctx is None:
            raise WorkflowRuntimeError(
                f"run {self.run_id!r} has not started: it is being claimed in its store (await handler.claimed())"
            )
        return self._ctx

    async def claimed(self) -> None:
        """Wait until the run is this process's to drive: stored under its lease (created, or leased and
        loaded) and its first checkpoint durable; at once without a checkpointer.

        Raises what kept it from that (``RunExistsError``, ``RunNotFoundError``, ``RunLeaseError``,
        ``SnapshotError``, ``StoreUnavailableError``): on a store called from a thread (Redis, PostgreSQL)
        ``run()`` and ``resume()`` return before their store calls are answered, and this is where a taken
        run id or a run another worker drives is told apart from a run that failed later.
        """
        if self._started is not None:
            await asyncio.shield(self._started)
        runner = self._runner
        if runner is None:  # it had completed, or never started here
            if self._future.done() and not self._future.cancelled() and self._future.exception() is not None:
                raise self._future.exception()  # type: ignore[misc]
            return
        try:
            await asyncio.shield(runner.claimed)
        except BaseException:
            # Told here: the run's own future holds the same error, which nobody need await again (asyncio would
            # log it as never retrieved when the loop closes).
            self._future.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise

    def __await__(self) -> Generator[Any, None, Any]:
        return self._future.__await__()

    def __str__(self) -> str:
        return str(self._future.result()) if self._future.done() and not self._future.cancelled() else repr(self)

    def done(self) -> bool:
        return self._future.done()

    def is_done(self) -> bool:
        return self._future.done()

    def set_result(self, result: Any) -> None:
        self._future.set_result(result)

    def set_exception(self, exception: BaseException) -> None:
        self._future.set_exception(exception)

    def cancelled(self) -> bool:
        return self._future.cancelled()

    async def cancel_run(self) -> None:
        """Cancel the run (as ``cancel()``); awaiting the handler then raises ``WorkflowCancelledError``."""
        self.cancel()

    def result(self) -> Any:
        """The result of a finished run (raises its error, or ``InvalidStateError`` if it is still going)."""
        return self._future.result()

    def exception(self) -> BaseException | None:
        return self._future.exception()

    async def stream_events(self, expose_internal: bool = False) -> AsyncIterator[Event]:
        """Events the steps write to the stream, input requests, and a ``StopEvent`` last.

        A run that did not complete ends its stream with a ``WorkflowFailedEvent``,
        ``WorkflowTimedOutEvent`` or ``WorkflowCancelledEvent`` (awaiting the handler
        raises the error). ``expose_internal=True`` adds a ``StepStateChanged`` as
        each step starts and finishes. The stream is read once: a second reader, or
        reading it again after its end, raises ``WorkflowRuntimeError``.
        """
        if self._all_events_consumed:
            raise WorkflowRuntimeError("All the streamed events have already been consumed.")
        if self._started is not None:
            await asyncio.shield(self._started)
        runner = self._runner
        if runner is None:  # a run that had completed already, or one that never started here
            if self._future.done() and not self._future.cancelled() and self._future.exception() is not None:
                raise self._future.exception()  # type: ignore[misc]
            self._all_events_consumed = True
            result = self.ctx._state.result
            if result is not None:
                yield result
            return
        if runner.stream_waiter is not None and not runner.stream_waiter.done():
            raise WorkflowRuntimeError("handler.stream_events() has one reader at a time; another is reading it")
        if expose_internal:
            runner.expose_internal = True
        while True:
            while runner.stream:
                event = runner.stream.popleft()
                if isinstance(event, StopEvent):
                    self._all_events_consumed = True
                yield event
                if isinstance(event, StopEvent):
                    return
            if runner.done:
                self._all_events_consumed = True
                if self._future.done() and not self._future.cancelled() and self._future.exception() is not None:
                    raise self._future.exception()  # type: ignore[misc]
                return
            runner.stream_waiter = runner.loop.create_future()
            await runner.stream_waiter

    def send_event(self, event: Event, step: str | None = None) -> asyncio.Future[None]:
        """Send an event into the run from outside (a ``HumanResponseEvent``, say); durable on return.

        Returns a finished future, so ``await handler.send_event(ev)`` works as well. While the run is
        still being claimed (``resume()`` on a store called from a thread), the event is sent once the
        claim succeeds, and the future returned is done then (or raises why the run did not start here).
        """
        if self._runner is None:
            if self._started is None or self._started.done():
                raise WorkflowRuntimeError(f"run {self.run_id!r} is not running here")
            sent: asyncio.Future[None] = self._future.get_loop().create_future()
            self._started.add_done_callback(lambda _: self._send_once_started(event, step, sent))
            return sent
        self._runner.send(event, step, None)
        done: asyncio.Future[None] = self._runner.loop.create_future()
        done.set_result(None)
        return done

    def _send_once_started(self, event: Event, step: str | None, sent: asyncio.Future[None]) -> None:
        if sent.cancelled():
            return
        try:
            if self._runner is None:
                raise WorkflowRuntimeError(f"run {self.run_id!r} did not start here; the event was not sent")
            self._runner.send(event, step, None)
        except Exception as exc:
            sent.set_exception(exc)
            sent.exception()  # retrieved: not awaiting it is fine, the handler tells why the run ended
            return
        sent.set_result(None)

    def cancel(self) -> None:
        """Cancel the run; its last checkpoint stays, and ``resume`` continues it later."""
        if self._runner is not None:
            self._runner.cancel()
        elif self._waiting is not None and not self._waiting.done():  # still waiting for the lease: stop waiting
            self._waiting.cancel()
            self._never_started(WorkflowCancelledError(f"run {self.run_id!r} was cancelled before it resumed"))
