"""The run loop: events are accepted into per-step queues, workers run steps, completions are checkpointed.

Follow one event: ``accept`` gives it an id and a pending delivery for each
step that takes it; ``_spawn``/``_take`` hand deliveries to workers within each
step's ``num_workers``; ``_worker`` calls the step (with retries);
``_complete`` accepts the step's output, retires the delivery and writes a
checkpoint. A worker that finishes a step takes the next ready delivery
itself, so a linear run needs a single task.

How a run ends (completed, failed, cancelled, timed out, abandoned, handed back)
is in ``_run_ending``: ``Runner`` inherits it from ``RunEnding``.

Nothing here writes after a crash: a ``BaseException`` from a crash point (or
a cancellation from outside) abandons the run where it stands.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, final

from . import _crashpoints, _idle, _recovery, _step_calls, _waiters
from ._checkpointer import Checkpointer
from ._checkpointing import RunCheckpoints
from ._clock import get_clock
from ._errors import (
    RecoveryLimitError,
    WorkflowRuntimeError,
)
from ._events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepState,
    StopEvent,
)
from ._fanout import FanOut
from ._hooks import plugin_manager
from ._resource import ResourceCache, current_overrides
from ._run_ending import RunEnding
from ._runstate import Delivery, current_context, current_delivery
from ._step import EVENT, StepSpec

if TYPE_CHECKING:
    from ._context import Context
    from ._workflow import Workflow

T = TypeVar("T")


@final
class Runner(RunEnding):
    """Drives one run of one workflow instance on the running event loop."""

    # slots: more attributes than an instance's shared-key dict holds would give each run a dict of its own,
    # one more object for the garbage collector to walk while the run is in flight
    __slots__ = (
        "busy",
        "cancels",
        "checkpointer",
        "claim_future",
        "claim_outcome",
        "ctx",
        "ctx_ref",
        "done",
        "durable",
        "effects_running",
        "ending",
        "expose_internal",
        "fan",
        "future",
        "graph",
        "loop",
        "overrides",
        "owner",
        "ready",
        "ready_count",
        "released",
        "reshown",
        "resources",
        "run",
        "running",
        "spawn_scheduled",
        "stream",
        "stream_waiter",
        "submitted",
        "thread",
        "timeout",
        "unconfirmed_end",
        "waiters",
        "workers",
        "workflow",
    )

    def __init__(
        self,
        workflow: Workflow,
        ctx: Context[Any],
        checkpointer: Checkpointer | None,
        owner: str,
        stored: bool = False,
        future: asyncio.Future[Any] | None = None,
        rebase: bool = False,
        since_full: int = 0,
        submitted: bool = False,
    ) -> None:
        self.workflow = workflow
        self.submitted = submitted
        """``wf.submit()``: the run is stored, then left for a worker, not driven here."""
        self.released = False
        """The run was claimed after its last owner released it: the steps it left under way did not crash it."""
        self.ctx = ctx
        self.graph = ctx._graph
        self.run = ctx._state
        self.fan = FanOut(self, self.graph.fan_plan) if self.graph.fan_plan is not None else None
        self.checkpointer = checkpointer
        self.owner = owner
        self.loop = loop = asyncio.get_running_loop()  # (a system call each time it is asked: once per run)
        self.durable = (
            None if checkpointer is None else RunCheckpoints(ctx, checkpointer, owner, loop, stored, rebase, since_full)
        )
        self.thread = threading.get_ident()
        self.future: asyncio.Future[Any] = future if future is not None else self.loop.create_future()
        self.claim_future: asyncio.Future[None] | None = None  # ``claimed``, once asked for
        self.claim_outcome: BaseException | bool | None = False  # False: not settled yet; None: claimed
        self.overrides = current_overrides()  # captured as the run starts; its resources are built on first use
        self.resources: ResourceCache | None = None  # made when a step first needs one (_step_calls.arguments)
        self.ready: dict[str, Delivery | deque[Delivery]] = {}  # step -> what is queued for it, while anything is
        self.busy: dict[str, int] = dict.fromkeys(self.graph.steps, 0)
        self.ready_count = 0
        self.running = 0
        self.workers: asyncio.Task[None] | set[asyncio.Task[None]] | None = None  # a set once two run at once
        self.effects_running: dict[str, asyncio.Future[str]] = {}
        self.stream: deque[Event] | tuple[()] = ()  # a deque once something is written to it
        self.stream_waiter: asyncio.Future[None] | None = None
        self.done = False
        self.waiters: set[asyncio.Future[None]] | None = None  # steps in ctx.wait_for_event, once one is
        self.ctx_ref = weakref.ref(ctx)  # a weak one: the task's context must not keep the run alive in a cycle
        self.expose_internal = False  # StepStateChanged events for a stream reader that asked for them
        self.reshown: list[Event] | tuple[()] = ()  # input requests put back on the stream by a restore
        self.spawn_scheduled = False
        self.ending = False  # the record that ends the run is on its way: no step completes after it
        self.cancels: tuple[Callable[[], None], ...] = ()  # what to stop as the run ends (its lease, its deadline)
        self.timeout: float | None = None  # the limit that set the deadline, if this runner set it
        self.unconfirmed_end: StopEvent | None = None  # the end whose record failed unreachable, and may land

    # -- starting ------------------------------------------------------------------------

    def start(self, start_event: StartEvent | None) -> None:
        """Begin a new run with ``start_event``, or continue the run the context holds (``None``).

        Steps start once the first checkpoint is durable: at once on a store written
        inline, when the store's thread has written it otherwise.
        """
        run = self.run
        pending = crash_loop = None
        try:
            self.ctx._runner = self
            if start_event is not None:
                run.status = "running"
                if self.submitted:  # its first start is a worker's: not a recovery, and its deadline is set then
                    run.recoveries = -1
                else:
                    self._set_deadline()
                self.accept(start_event)
            else:
                if run.status in ("failed", "cancelled"):
                    # continuing after an ending is a new attempt; a crash is not an ending,
                    # so an interrupted run keeps its deadline and its time down counts
                    self._set_deadline()
                    run.recoveries = 0  # a deliberate resume, not a recovery: the count starts again
                elif run.status == "running" and run.recoveries < 0:  # submitted: this is its first start
                    run.recoveries = 0
                    self._set_deadline()
                elif run.status == "running":  # its owner died while steps ran: a recovery, counted durably
                    if not _recovery.slept_through(run):  # a deploy during ctx.sleep is no step's fault
                        run.recoveries += 1
                    crash_loop = _recovery.count_crashes(self, self.released)
                for delivery in sorted(run.deliveries.values(), key=lambda d: d.eid):
                    self._queue(delivery)
                if run.awaiting:
                    self.reshown = [run.events[eid] for eid in run.awaiting]
                    self.stream = deque(self.reshown)
                run.status = "running" if self.ready_count else "waiting"
                run.error = None
            limit = self.workflow.max_recoveries
            if start_event is None and limit is not None and run.recoveries > limit:
                self._fail(RecoveryLimitError(run.run_id, run.recoveries, limit))  # written as failed: lease released
                return
            if crash_loop is not None:
                self._fail(crash_loop)
                return
            if start_event is None and run.deadline is not None and get_clock().now() >= run.deadline:
                self._timed_out()  # down past its deadline: a step already due must not end the run first
                return
            if self.durable is not None:
                if not self.submitted:  # no step starts after this checkpoint: none is under way
                    _recovery.mark_starting(self, None)
                self.durable.attach()
                at = "resumed" if self.durable.stored else "submitted" if self.submitted else "start"
                pending = self.durable.write(at, batch=False)
                if not self.submitted:
                    self.cancels += (self.durable.keep_lease(self._guarded, self._lease_lost, self._lease_expired),)
            if run.deadline is not None:
                self.cancels += (get_clock().call_at(run.deadline, self._guarded(self._timed_out)),)
        except BaseException:
            self._abandon(None)
            raise
        if plugin_manager.active and not self.submitted:
            plugin_manager.hook.durableflow_run_started(
                run_id=run.run_id, workflow=self.workflow, resumed=start_event is None
            )
        self._after(pending, self._stored, self._not_stored)

    def _stored(self) -> None:
        self._claim_settled(None)
        if self.submitted:  # stored for a worker: stop here without writing (the caller releases the lease)
            self._abandon(None)
            return
        self._spawn()

    def _not_stored(self, exc: Exception) -> None:
        self._claim_settled(exc)
        self._fail(exc, partial=True)

    # -- accepting events ----------------------------------------------------------------

    def accept(self, event: Event, target: str | None = None) -> None:
        """Give ``event`` an id and a pending delivery for each step that takes it."""
        cls = type(event)
        if target is None:
            consumers = self.graph.consumers(cls)
        else:
            spec = self.graph.steps.get(target)
            if spec is None:
                raise WorkflowRuntimeError(f"Step {target} does not exist (steps: {', '.join(self.graph.steps)})")
            if not isinstance(event, spec.accepts):
                raise WorkflowRuntimeError(f"Step {target} does not accept event of type {cls!r}")
            consumers = (spec,)
        run = self.run
        if isinstance(event, InputRequiredEvent):
            run.await_input(run.add_event(event))
            self.write_stream(event)
            if not consumers:
                return
        elif not consumers:
            if target is None and self.fan is not None and self.fan.ignored(cls):  # only a fan-out feeds list[E]
                return
            if target is None and _waiters.park(self, event):  # for a step that waits for it
                return
            raise WorkflowRuntimeError(f"no step of {self.graph.workflow_path} accepts {cls.__name__}")
        if run.awaiting and isinstance(event, HumanResponseEvent):
            run.input_arrived()
            if self.reshown:  # re-shown after a restore and answered before anyone read them: not shown at all
                answered = {id(request) for request in self.reshown}
                self.stream = deque(ev for ev in self.stream if id(ev) not in answered)
                self.reshown = ()
        eid = run.add_event(event)
        for spec in consumers:
            self._queue(run.add_delivery(eid, spec.name))

    def send(self, event: Event, target: str | None, delivery: Delivery | None) -> None:
        """``ctx.send_event`` / ``handler.send_event``."""
        if self.done or self.ending:
            raise WorkflowRuntimeError(f"run {self.run.run_id!r} has ended; it takes no more events")
        if delivery is not None:  # sent by a step
            delivery.sends += 1
            if delivery.sends <= delivery.replay_sends:
                return  # accepted before a restart or a retry
            delivery.sent += 1
            self.run.touch(delivery)
            if isinstance(event, StopEvent):
                pending = self._record_end(event, delivery.step)
                self._after(pending, lambda: self._conclude(event), self._end_failed)
                return
            self.accept(event, target)
        else:  # sent from outside: durable before send_event returns, or the run stops without it
            self.accept(event, target)
            self.run.status = "running"
            if self.durable is not None:
                try:
                    self.durable.write(f"event {type(event).__name__}", wait=True)
                except Exception as exc:
                    self._fail(exc, partial=True)
                    raise
                except BaseException as exc:  # a crash in the caller's code path: the engine dies with it
                    self._abandon(exc)
                    raise
        self._spawn_soon()

    def _queue(self, delivery: Delivery) -> None:
        # a queue exists only while it holds two or more (a lone delivery is held as it is): an in-flight
        # run keeps no deque for the collector in the common case
        ready, step = self.ready, delivery.step
        queued = ready.get(step)
        if queued is None:
            ready[step] = delivery
        elif type(queued) is Delivery:
            ready[step] = deque((queued, delivery))
        else:
            queued.append(delivery)
        self.ready_count += 1

    # -- workers -------------------------------------------------------------------------

    def _spawn_soon(self) -> None:
        """Spawn workers on the loop's next turn: a worker that runs on without awaiting
        takes the ready deliveries itself meanwhile, so tasks are made only for real concurrency."""
        if self.ready_count and not self.spawn_scheduled:
            self.spawn_scheduled = True
            self.loop.call_soon(self._spawn)

    def _spawn(self) -> None:
        """Start a worker for each ready delivery whose step has a free worker."""
        self.spawn_scheduled = False
        if not self.ready_count or self.done:
            return
        ready = self.ready
        for name, spec in self.graph.steps.items():  # in the steps' order, whatever order they were queued in
            if name not in ready:
                continue
            limit = spec.num_workers
            while name in ready and self.busy[name] < limit:
                task = self.loop.create_task(self._worker(self._claim(name)))
                if task.done():  # an eager task factory ran it to its end already
                    continue
                workers = self.workers
                if workers is None:  # the common lone worker, held as it is: no set, no callback to leave one
                    self.workers = task
                elif isinstance(workers, set):
                    workers.add(task)
                else:
                    self.workers = {workers, task}

    def _take(self, finished: str) -> Delivery | None:
        """The next ready delivery whose step has a free worker, for a worker that just finished one of
        ``finished``: the other steps come first, so a step feeding itself cannot starve them."""
        if not self.ready_count:
            return None
        ready, busy, steps = self.ready, self.busy, self.graph.steps
        for name in self.graph.take_order[finished]:
            if name in ready and busy[name] < steps[name].num_workers:
                return self._claim(name)
        return None

    def _claim(self, name: str) -> Delivery:
        self.ready_count -= 1
        self.busy[name] += 1
        self.running += 1
        ready = self.ready
        queued = ready[name]
        if type(queued) is Delivery:
            del ready[name]
            return queued
        delivery = queued.popleft()
        if not queued:
            del ready[name]
        return delivery

    async def _worker(self, delivery: Delivery | None) -> None:
        """Execute deliveries until none is ready for this worker: each step's attempts, then its completion,
        in this one coroutine (a coroutine per step would be one more object each waiting run keeps)."""
        current_context.set(self.ctx_ref)  # once per worker task: Context.get_step_context()
        try:
            while delivery is not None:
                spec = self.graph.steps[delivery.step]
                event = self.run.events[delivery.eid]
                current_delivery.set(delivery)  # the worker task's own context: the next step sets it again
                while True:  # the step's attempts, until it returns or its retries are spent
                    _step_calls.begin(self, spec, delivery, event)
                    if self.durable is not None and self.durable.lease_in_doubt():
                        await self._confirm_lease()  # a worker paused past its lease must not run a step another ran
                    try:
                        if spec.simple and spec.is_async and spec.plan == _EVENT_ONLY:  # the common step
                            output = await spec.fn(self.workflow, event)
                        else:
                            output = await _step_calls.call(self, spec, event)
                        break
                    except Exception as exc:
                        output = _step_calls.failed(self, spec, delivery, event, exc)
                        if type(output) is not float:  # a hand-off to the step that catches it, or the run failed
                            break
                        clock = get_clock()
                        await clock.sleep_until(clock.now() + output)
                        if self.done:
                            output = _step_calls.FAILED
                            break
                if output is not _step_calls.FAILED and not (self.done or self.ending):
                    pending = None
                    try:
                        pending = self._complete(delivery, spec, event, output)
                        if pending is not None:  # the store writes it on a later turn: the step is not finished before
                            await pending
                    except Exception as exc:  # an output nobody accepts, data that cannot be stored, a failed store
                        if pending is not None and isinstance(output, StopEvent):
                            self._unend()  # the record that was to end the run failed
                        self._fail(exc, partial=True)
                    else:
                        self._completed(spec, event, output)
                self.busy[delivery.step] -= 1
                self.running -= 1
                if self.done:
                    return
                delivery = self._take(delivery.step)
                self._spawn_soon()
        except GeneratorExit:  # an abandoned engine's task is being garbage-collected
            raise
        except BaseException as exc:  # a crash point fired, or the loop is shutting down
            if not (self.done and isinstance(exc, asyncio.CancelledError)):
                self._abandon(exc)
        finally:  # out of the run's workers (the end of a run empties them: a task it cancelled never gets here)
            workers, me = self.workers, asyncio.current_task(self.loop)  # None once the loop is gone (GC)
            if isinstance(workers, set):
                workers.discard(me)
            elif workers is me:  # not another's: an eager task can finish before it is counted
                self.workers = None
            if _idle.watches:  # its last step may leave the run with nothing to do until an event comes
                _idle.check(self)

    def _complete(self, delivery: Delivery, spec: StepSpec, event: Event, output: Any) -> Awaitable[None] | None:
        """Record a step's completion: its output accepted, its input consumed, all in one checkpoint;
        the step counts as finished once that checkpoint is durable (what to await if it is on its way)."""
        listener = _crashpoints.listener
        if listener is not None:
            listener(f"step.{spec.name}.end")
        if self.expose_internal:
            self.write_stream(_step_calls.internal(spec.name, StepState.NOT_RUNNING, event, delivery, output))
        run = self.run
        stop = None
        if isinstance(output, StopEvent):
            stop = output
        elif self.fan is not None:  # inside the batch its input belongs to, if any
            self.fan.accept_output(delivery, spec, output)
        elif isinstance(output, Event):
            self.accept(output)
        elif isinstance(output, _recovery.Handoff):
            self.accept(output.event, output.handler)
        elif output is not None:
            raise WorkflowRuntimeError(
                f"Step function {spec.name} returned {type(output).__name__} instead of an Event instance. "
                "A step returns an Event or None."
            )
        if delivery.taken:
            _step_calls.commit_takes(run, delivery)
        run.finish_delivery(delivery)
        if self.fan is not None:
            self.fan.finished(delivery, event)
        run.recoveries = 0  # progress: a step that completes is not the one that keeps killing its process
        if stop is not None:
            return self._record_end(stop, spec.name)
        if not self.ready_count and self.running == 1:
            run.status = "waiting"  # nothing left to run until an event arrives from outside
        if self.durable is None:
            return None
        _recovery.mark_starting(self, spec.name)
        return self.durable.write(f"step {spec.name}")

    def _completed(self, spec: StepSpec, event: Event, output: Any) -> None:
        """The completion is durable: tell the hooks, and everyone waiting if the run ended."""
        if plugin_manager.active:
            plugin_manager.hook.durableflow_step_finished(
                run_id=self.run.run_id, step=spec.name, event=event, output=output, error=None
            )
        if isinstance(output, StopEvent):
            self._conclude(output)

    # -- checkpoints ---------------------------------------------------------------------

    async def checkpoint(self, at: str) -> None:
        """Write what changed since the last checkpoint, and wait until it is durable (``RunCheckpoints.write``)."""
        if self.durable is not None:
            pending = self.durable.write(at)
            if pending is not None:
                await pending

    # -- threads -------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the loop's thread: sync steps run in worker threads and call the context from there."""
        if threading.get_ident() == self.thread:
            return fn(*args)
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run_on_loop() -> None:
            try:
                result.set_result(fn(*args))
            except BaseException as exc:
                result.set_exception(exc)

        self.loop.call_soon_threadsafe(run_on_loop)
        return result.result()


_EVENT_ONLY = (EVENT,)
