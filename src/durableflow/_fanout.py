"""Typed fan-out/fan-in as a run carries it out: a step returning ``list[E]`` opens a batch; a step taking
``list[E]`` fires once with what the batch produced, when every piece of work started inside it is done.
(And joins: a step with several event parameters runs once one event of each has arrived.)

A batch ("stream") is kept in the run's collect buffers, written with each step's completion: the
events inside it that steps still owe work on (``fan-out:`` + its id), and, per collecting step,
what it gathered (``fan-in:`` + its id + ``>`` + the step). A crash loses or doubles nothing: a
step's output joins a batch in the same checkpoint that retires the step's input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from ._errors import WorkflowRuntimeError
from ._events import CollectionReleaseEvent, Event, HumanResponseEvent, InputRequiredEvent, StopEvent
from ._recovery import Handoff

if TYPE_CHECKING:
    from ._fanplan import FanPlan
    from ._runner import Runner
    from ._runstate import Delivery
    from ._step import StepConfig, StepSpec

log = logging.getLogger("durableflow.fanout")

OPEN = "fan-out:"
BATCH = "fan-in:"
RELEASED = "fan-in-released:"
JOIN = "join:"


def _source(stream: str) -> str:
    """The step whose returned list opened ``stream`` (ids read ``<parent>/<step>@<eid>``)."""
    return stream.rpartition("/")[2].partition("@")[0]


def _parent(stream: str) -> str | None:
    return stream.rpartition("/")[0] or None


@final
class FanOut:
    """The run loop's side of fan-out/fan-in, for a workflow that has a list-returning or list-taking step."""

    def __init__(self, runner: Runner, plan: FanPlan) -> None:
        self.runner = runner
        self.run = runner.run
        self.plan = plan
        self.opened: list[str] = []  # batches opened by the completion being recorded
        self.scope: dict[int, str] = {}  # event id -> the batch it is open work of
        self.inner: dict[str, int] = {}  # batch -> how many batches opened within it are still open
        for buffer_id, eids in self.run.buffers.items():
            if buffer_id.startswith(OPEN):
                stream = buffer_id[len(OPEN) :]
                self._count_inner(stream, +1)
                for eid in eids:
                    self.scope[eid] = stream

    # -- a step's output --------------------------------------------------------------------

    def accept_output(self, delivery: Delivery, spec: StepSpec, output: Any) -> None:
        """Accept what a step returned (not a ``StopEvent``) inside the batch its input belongs to."""
        stream = self.scope.get(delivery.eid)
        if isinstance(output, list):
            if not spec.config.fan_out_types:
                raise WorkflowRuntimeError(
                    f"Step function {spec.name} returned a list, but its return annotation has no list[...]: "
                    "annotate it -> list[YourEvent] to fan out"
                )
            for item in output:
                if not isinstance(item, Event) or isinstance(item, StopEvent):
                    raise WorkflowRuntimeError(
                        f"Step function {spec.name} returned a list holding {type(item).__name__}: a fan-out "
                        "list holds events for other steps (not a StopEvent)"
                    )
            child = f"{stream or ''}/{spec.name}@{delivery.eid}"
            self.opened.append(child)
            for item in output:
                self._emit(item, child, spec.name, None)
        elif isinstance(output, Event):
            if type(output) in spec.config.list_only_types:
                raise WorkflowRuntimeError(
                    f"Step function {spec.name} returned a single {type(output).__name__}, which its annotation "
                    f"names only inside list[...]: return [event] to fan out, or add | {type(output).__name__}"
                )
            self._emit(output, stream, spec.name, self.run.events.get(delivery.eid))
        elif isinstance(output, Handoff):  # a failed step's input, handed to @catch_error: still this batch's work
            before = self.run.next_eid
            self.runner.accept(output.event, output.handler)
            self._adopt(before, stream)
        elif output is not None:
            raise WorkflowRuntimeError(
                f"Step function {spec.name} returned {type(output).__name__} instead of an Event instance. "
                "A step returns an Event, a list of events (-> list[...]) or None."
            )

    def _emit(self, event: Event, stream: str | None, step: str, source: Event | None) -> None:
        """Accept ``event``, which ``step`` returned (given ``source``), inside ``stream``."""
        cls = type(event)
        runner, run = self.runner, self.run
        collectors = self._bound(cls, stream)
        if stream is None or isinstance(event, InputRequiredEvent | HumanResponseEvent) or not collectors:
            if stream is None and self.plan.collectors_for(cls) and not runner.graph.consumers(cls):
                raise _outside_a_batch(step, cls, self.plan.collectors_for(cls), source)
            before = run.next_eid
            runner.accept(event)
            self._adopt(before, stream)
            return
        eid = run.add_event(event)
        for spec in runner.graph.consumers(cls):
            runner._queue(run.add_delivery(eid, spec.name))
        self._adopt(eid, stream)
        for batch, step in collectors:
            self._gather(batch, step, eid)

    def _bound(self, cls: type[Event], stream: str | None) -> list[tuple[str, str]]:
        """(batch, step) for each collecting step taking ``cls``: the innermost enclosing batch it is bound to."""
        found = []
        for step in self.plan.collectors_for(cls) if stream is not None else ():
            batch: str | None = stream
            while batch is not None and step not in self.plan.bindings.get(_source(batch), ()):
                batch = _parent(batch)
            if batch is not None:
                found.append((batch, step))
        return found

    def _gather(self, batch: str, step: str, eid: int) -> None:
        run = self.run
        key = f"{batch}>{step}"
        if RELEASED + key in run.buffers:  # Take(n) already fired: later arrivals never reach the step
            return
        gathered = run.buffers.get(BATCH + key)
        if not gathered or gathered[-1] != eid:  # ids only grow: a repeat could only be the last (O(1), not a scan)
            run.buffer_append(BATCH + key, eid)  # written as an addition: the batch is not rewritten per member
            run.refs[eid] += 1
            gathered = run.buffers[BATCH + key]
        n = self.plan.take(step)
        if n is not None and len(gathered) >= n:
            release = self._release(batch, step)
            run.buffer_append(RELEASED + key, release)
            run.refs[release] += 1

    def _adopt(self, first_eid: int, stream: str | None) -> None:
        """Events from ``first_eid`` on that steps owe work on are open work of ``stream``."""
        if stream is None:
            return
        run = self.run
        for eid in range(first_eid, run.next_eid):
            if eid in run.events and self._owed(eid):
                self._open(stream, eid)

    def _open(self, stream: str, eid: int) -> None:
        """Event ``eid`` is open work of ``stream`` (whose buffer is counted in its enclosing batches when made)."""
        run = self.run
        if OPEN + stream not in run.buffers:
            self._count_inner(stream, +1)
        run.buffer_append(OPEN + stream, eid)  # an addition; a member's work done rewrites it (see finished)
        run.refs[eid] += 1
        self.scope[eid] = stream

    def _count_inner(self, stream: str, change: int) -> None:
        """Count ``stream`` in every batch it is inside (a batch waits for all batches opened within it)."""
        parent = _parent(stream)
        while parent is not None:
            self.inner[parent] = self.inner.get(parent, 0) + change
            parent = _parent(parent)

    def batch_of(self, eid: int) -> str:
        """The batch event ``eid`` is open work of ("" if none): a join's buffer is per batch."""
        return self.scope.get(eid, "")

    def ignored(self, cls: type[Event]) -> bool:
        """An event sent by hand that only ``list[E]`` parameters take joins no batch: dropped, loudly."""
        steps = self.plan.collectors_for(cls)
        if steps:
            log.warning(
                "%s was sent outside any collection stream: %s collect only what a step returning list[...] "
                "started, so it is ignored (gather events sent by hand with ctx.collect_events)",
                cls.__name__,
                ", ".join(repr(step) for step in steps),
            )
        return bool(steps)

    def _owed(self, eid: int) -> bool:
        deliveries = self.run.deliveries
        return any((eid, name) in deliveries for name in self.runner.graph.steps)

    # -- a step's input retired ---------------------------------------------------------------

    def finished(self, delivery: Delivery, event: Event) -> None:
        """After ``delivery`` is retired: batches it opened that are already done close, and its own may."""
        run = self.run
        if isinstance(event, CollectionReleaseEvent):  # the batch reached its step: let it go
            key = f"{event.stream_id}>{delivery.step}"
            for eid in run.buffers.pop(BATCH + key, ()):
                run.unref(eid)
            run.rewrite(BATCH + key)
        opened, self.opened = self.opened, []
        for child in opened:
            self._close_if_done(child)
        stream = self.scope.get(delivery.eid)
        if stream is not None and not self._owed(delivery.eid):
            del self.scope[delivery.eid]
            run.buffer(OPEN + stream).remove(delivery.eid)
            run.unref(delivery.eid)
            self._close_if_done(stream)

    def _close_if_done(self, stream: str) -> None:
        run = self.run
        if run.buffers.get(OPEN + stream):
            return
        if self.inner.get(stream):  # a batch opened inside is still open
            return
        if run.buffers.pop(OPEN + stream, None) is not None:
            self._count_inner(stream, -1)
        run.rewrite(OPEN + stream)
        for step in self.plan.bindings.get(_source(stream), ()):
            released = run.buffers.pop(f"{RELEASED}{stream}>{step}", None)
            if released is not None:  # Take(n) fired before the batch closed
                run.rewrite(f"{RELEASED}{stream}>{step}")
                for eid in released:
                    run.unref(eid)
                continue
            self._release(stream, step)
        # No more arrivals in this batch: what is unpaired never will be. (A batch's id starts with "/": the
        # step's own ``join:<step>``, where a run stored before held what its joins had pending, is not dropped.)
        for step in self.plan.joins:
            leftover = run.buffers.pop(f"{JOIN}{step}{stream}", None)
            if leftover:
                log.warning(
                    "join %r was left with %d unpaired event(s) when the batch %s closed; they are dropped "
                    "(a join pairs the events of one batch: make one of each type per pair)",
                    step,
                    len(leftover),
                    stream,
                )
                run.rewrite(f"{JOIN}{step}{stream}")
                for eid in leftover:
                    run.unref(eid)
        parent = _parent(stream)
        if parent is not None:
            self._close_if_done(parent)

    def _release(self, stream: str, step: str) -> int:
        """Owe ``step`` the batch ``stream`` gathered for it; the event's id."""
        run = self.run
        event = CollectionReleaseEvent(stream_id=stream, binding_id=f"{_source(stream)}->{step}")
        eid = run.add_event(event)
        self.runner._queue(run.add_delivery(eid, step))
        parent = _parent(stream)
        if parent is not None:  # the collecting step's work is its enclosing batch's
            self._open(parent, eid)
        return eid

    def members(self, event: Event, step: str) -> list[Event]:
        """The batch a ``CollectionReleaseEvent`` hands ``step`` (also set as its ``events``)."""
        if not isinstance(event, CollectionReleaseEvent):
            raise WorkflowRuntimeError(f"step {step!r} takes a list[...] batch, not a {type(event).__name__}")
        eids = self.run.buffers.get(f"{BATCH}{event.stream_id}>{step}", [])
        n = self.plan.take(step)
        event.events = [self.run.events[eid] for eid in (eids if n is None else eids[:n])]
        return list(event.events)


def _outside_a_batch(
    step: str, cls: type[Event], collectors: tuple[str, ...], source: Event | None
) -> WorkflowRuntimeError:
    # A member asked a human and left the answer to another step, or (most often) forwarded its work with
    # ctx.send_event: an event sent from outside or by hand joins no batch.
    name = cls.__name__
    if isinstance(source, HumanResponseEvent):
        why = (
            f"it took {type(source).__name__}, an answer from outside the run, and an answer joins no batch. Have "
            f"the member that asks wait for the answer itself (`answer = await ctx.wait_for_event("
            f"{type(source).__name__}, waiter_event=YourQuestion(...))`) and return the {name}"
        )
    else:
        why = (
            "an event sent with ctx.send_event joins no batch, so work a member forwards that way leaves it. Have "
            "the member return the event instead (annotate it -> YourEvent) to keep the work in the batch, or "
            "gather events sent by hand with ctx.collect_events"
        )
    return WorkflowRuntimeError(
        f"step {step!r} returned {name} outside any fan-out batch, and only list[{name}] parameters "
        f"({', '.join(repr(c) for c in collectors)}) take it: they gather what a step returning list[...] "
        f"started, inside that batch. {step!r} was not started inside one: {why}"
    )


def _join(
    runner: Runner, delivery: Delivery, event: Event, expected: list[type[Event]], step: str
) -> list[Event] | None:
    """An arrival at the join ``step``: into its batch's buffer; one event of each type, once there are.

    A run stored before a join's buffer was one per batch keeps the events its joins held inside batches in
    the step's one buffer, ``join:<step>``. Nothing ties them to a batch any more, so an arrival that finds no
    partner in its own batch takes one from there, as the join paired them then (the earliest that fits), until
    none is left; a batch closing never drops them. A join fed inside batches writes nothing else there:
    validation refuses a join fed both inside and outside any batch."""
    from ._step_calls import choose, collect  # the steps import this module: late, to avoid a cycle

    run = runner.run
    batch = runner.fan.batch_of(delivery.eid) if runner.fan is not None else ""
    own = JOIN + step + batch
    joined = collect(run, delivery, event, expected, own)
    earlier = run.buffers.get(JOIN + step) if batch else None
    if joined is not None or not earlier:
        return joined
    picked = choose(run, [*earlier, *run.buffers[own]], expected)
    if picked is None:
        return None
    stored_before = set(earlier)
    for eid in picked:
        buffer_id = JOIN + step if eid in stored_before else own
        run.buffer(buffer_id).remove(eid)
        delivery.take(buffer_id, eid)
    return [run.events[eid] for eid in picked]


def join_call(name: str, fn: Callable[..., Any], config: StepConfig, is_async: bool) -> Callable[..., Any]:
    """A step with several event parameters runs once one event of each has arrived: each arrival goes
    into a buffer of the step's own, one per batch (``ctx.collect_events``, checkpointed like any), so events
    of two batches never pair; the step is called
    with the set, bound by type (one type twice: in arrival order). Until then an arrival completes quietly."""
    expected = [event_type for _, event_type in config.collect_params or ()]
    positions, keywords = config.join_positions, config.keywords

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]] | None:
        from ._context import Context  # the context imports the steps: late, to avoid a cycle

        values, named = list(args), dict(kwargs)
        split = len(values)
        trigger = values[positions[0]] if positions[0] < split else named[keywords[positions[0] - split]]
        ctx = Context.get_step_context()
        delivery, runner = ctx._delivery("a join"), ctx._live("a join")
        joined = runner.call(_join, runner, delivery, trigger, expected, name)
        if joined is None:
            return None
        for position, event in zip(positions, joined, strict=True):
            if position < split:
                values[position] = event
            else:
                named[keywords[position - split]] = event
        return values, named

    if is_async:

        async def join(workflow: Any, *args: Any, **kwargs: Any) -> Any:
            bound = bind(args, kwargs)
            return None if bound is None else await fn(workflow, *bound[0], **bound[1])

        return join

    def join_in_thread(workflow: Any, *args: Any, **kwargs: Any) -> Any:
        bound = bind(args, kwargs)
        return None if bound is None else fn(workflow, *bound[0], **bound[1])

    return join_in_thread
