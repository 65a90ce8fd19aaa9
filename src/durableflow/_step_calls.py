"""What a running step asks of its run: its arguments, ``collect_events``, ``ctx.effect`` and ``ctx.sleep``.

Each is durable in its own way: collected events stay buffered until the step
that took them completes, an effect's result is checkpointed before the step
goes on, and a sleep's deadline is stored so a restart sleeps only the rest.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _crashpoints, _recovery
from ._clock import get_clock
from ._events import Event, StepState, StepStateChanged
from ._hooks import plugin_manager
from ._resource import Builds, ResourceCache
from ._step import COLLECTED, CONTEXT, EVENT, StepSpec

if TYPE_CHECKING:
    from ._runner import Runner
    from ._runstate import Delivery, RunState


FAILED: Any = object()
"""What an attempt that failed the run leaves the run loop to do: nothing more."""


def begin(runner: Runner, spec: StepSpec, delivery: Delivery, event: Event) -> None:
    """An attempt of the step begins: counted, shown to a stream reader that asked, told to the hooks."""
    delivery.begin_attempt()
    if runner.durable is not None and not delivery.running:  # written with the next checkpoint: a crash now counts
        delivery.running = True  # (if it was already, the record that says so is written or on its way)
        runner.run.touch(delivery)
    if runner.expose_internal:
        runner.write_stream(internal(spec.name, StepState.RUNNING, event, delivery))
    if plugin_manager.active:
        plugin_manager.hook.durableflow_step_started(
            run_id=runner.run.run_id, step=spec.name, event=event, attempt=delivery.attempt
        )
    listener = _crashpoints.listener
    if listener is not None:
        listener(f"step.{spec.name}.start")


async def call(runner: Runner, spec: StepSpec, event: Event) -> Any:
    """Call the step with the arguments its plan names; a sync step runs in a worker thread."""
    if spec.simple:
        args: list[Any] = [event if source == EVENT else runner.ctx for source in spec.plan]
        kwargs: dict[str, Any] = {}
    else:
        args, kwargs = await arguments(runner, spec, event)
    if spec.is_async:
        return await spec.fn(runner.workflow, *args, **kwargs)
    return await asyncio.to_thread(spec.fn, runner.workflow, *args, **kwargs)


def failed(runner: Runner, spec: StepSpec, delivery: Delivery, event: Event, exc: Exception) -> Any:
    """The attempt raised ``exc``: the seconds to wait before the next attempt (a float), as the step's retry
    policy says; else what the step ends with, a hand-off to the step that catches it or ``FAILED``."""
    run = runner.run
    undo_takes(run, delivery)
    if plugin_manager.active:
        plugin_manager.hook.durableflow_step_finished(
            run_id=run.run_id, step=spec.name, event=event, output=None, error=exc
        )
    retry = spec.retry
    delay = _recovery.retry_delay(retry, run.run_id, spec.name, delivery, exc) if retry else None
    if delay is None or runner.done:
        handoff = None if runner.done else _recovery.handoff(runner, spec, delivery, event, exc)
        if handoff is not None:
            return handoff
        runner._fail(exc, step=spec.name, delivery=delivery)
        return FAILED
    _recovery.failed(run, delivery, exc)
    return float(delay)


def internal(step: str, state: StepState, event: Event, delivery: Delivery, output: Any = None) -> StepStateChanged:
    """What a stream reader that asked for internal events is shown as a step starts or finishes."""
    return StepStateChanged(
        name=step,
        step_state=state,
        worker_id=f"{step}:{delivery.eid}",  # one delivery is one worker's job
        input_event_name=type(event).__name__,
        output_event_name=None if output is None else type(output).__name__,
    )


async def arguments(runner: Runner, spec: StepSpec, event: Event) -> tuple[list[Any], dict[str, Any]]:
    """A step's positional and keyword arguments, as its plan names them: the event, the context, a fan-in's
    members, resources (the run's resource cache is made when a step first needs one)."""
    values: list[Any] = []
    scope: Builds = {}  # one step's parameters share even the resources built afresh for each step
    for source in spec.plan:
        if source == EVENT:
            values.append(event)
        elif source == CONTEXT:
            values.append(runner.ctx)
        elif source == COLLECTED:
            assert runner.fan is not None  # a workflow with a list[E] parameter has one
            values.append(runner.fan.members(event, spec.name))
        else:
            cache = runner.resources
            if cache is None:
                cache = runner.resources = ResourceCache(runner.overrides, runner.workflow._resource_manager)
            resource, annotation = source
            values.append(await cache.get(resource, annotation, scope=scope))
    split = len(values) - len(spec.keywords)
    return values[:split], dict(zip(spec.keywords, values[split:], strict=True))


def collect(
    run: RunState, delivery: Delivery, ev: Event, expected: list[type[Event]], buffer_id: str
) -> list[Event] | None:
    """``ctx.collect_events``: buffer ``ev``; once the buffer holds one of each expected type, take them."""
    eid = delivery.eid if run.events.get(delivery.eid) is ev else run.add_event(ev)
    buffer = run.buffers.get(buffer_id)
    # An event delivered again after a restart is already in. Only one that something besides its delivery
    # holds (refs) can be: the others skip the scan, which for each of N arrivals was O(N²) for a fan-in.
    held = run.refs[eid] > (eid == delivery.eid)
    if buffer is None or not held or eid not in buffer:
        run.buffer_append(buffer_id, eid)  # written as an addition: the buffer is not rewritten for it
        run.refs[eid] += 1
        buffer = run.buffers[buffer_id]
    if len(buffer) < len(expected):
        return None
    picked = choose(run, buffer, expected)
    if picked is None:
        return None
    buffer = run.buffer(buffer_id)  # taking reorders it as a restart must find it: rewritten whole
    if len(picked) == len(buffer):  # the usual fan-in: it held just what was expected
        buffer.clear()
    else:  # the first occurrence of each, in one pass: a remove() each was O(N²) for N taken
        left = Counter(picked)
        kept: list[int] = []
        for eid in buffer:
            if left[eid]:
                left[eid] -= 1
            else:
                kept.append(eid)
        buffer[:] = kept
    for eid in picked:
        delivery.take(buffer_id, eid)
    return [run.events[e] for e in picked]


def choose(run: RunState, eids: list[int], expected: list[type[Event]]) -> list[int] | None:
    """One event of each ``expected`` type from ``eids`` (the earliest that fits), in that order; None if not all."""
    # expected type -> its open positions, in order; taken from the front (a list's pop(0): O(N²) for N of a type)
    slots: dict[type[Event], deque[int]] = {}
    for position, cls in enumerate(expected):
        slots.setdefault(cls, deque()).append(position)
    chosen: list[int | None] = [None] * len(expected)
    for eid in eids:
        event = run.events[eid]
        open_positions = slots.get(type(event)) or next(
            (p for cls, p in slots.items() if p and isinstance(event, cls)), None
        )
        if open_positions:
            chosen[open_positions.popleft()] = eid
    if None in chosen:
        return None
    return [eid for eid in chosen if eid is not None]


def commit_takes(run: RunState, delivery: Delivery) -> None:
    """The step completed: what it collected leaves the buffers for good."""
    for buffer_id, eid in delivery.taken:
        run.unref(eid)
        run.rewrite(buffer_id)  # checkpoints recorded it as still buffered
    delivery.taken = ()


def undo_takes(run: RunState, delivery: Delivery) -> None:
    """The attempt failed: what it collected goes back, in order, for the next attempt. Each buffer gets its
    events back in one insertion: one at a time at its front would move the whole buffer for each, O(N²)."""
    taken = delivery.taken
    if not taken:
        return
    by_buffer: dict[str, list[int]] = {}
    for buffer_id, eid in taken:
        by_buffer.setdefault(buffer_id, []).append(eid)
    for buffer_id, eids in by_buffer.items():
        run.buffer(buffer_id)[:0] = eids
    delivery.taken = ()


async def effect(runner: Runner, key: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``ctx.effect``: run ``fn`` once per run and key; its recorded result is returned ever after."""
    text = runner.run.effects.get(key)
    if text is None:
        running = runner.effects_running.get(key)
        if running is not None:  # the same key in a concurrent step: share its result
            text = await asyncio.shield(running)
        else:
            pending: asyncio.Future[str] = runner.loop.create_future()
            runner.effects_running[key] = pending
            try:
                text = await _run_effect(runner, key, fn, args)
                pending.set_result(text)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: waiters get it, nobody else must
                raise
            finally:
                del runner.effects_running[key]
    return runner.graph.codec.load(text)


async def _run_effect(runner: Runner, key: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    listener = _crashpoints.listener
    if listener is not None:
        listener(f"effect.{key}.before")
    if runner.durable is not None and runner.durable.lease_in_doubt():
        await runner._confirm_lease()  # nor an effect: the worker that took the run over may have run it
    kwargs = {"idempotency_key": f"{runner.run.run_id}:{key}"} if _takes_idempotency_key(fn) else {}
    value = fn(*args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    text = runner.graph.codec.dump(value, f"the result of effect {key!r} (a {type(value).__name__})")
    runner.run.record_effect(key, text)
    await runner.checkpoint(f"effect {key}")
    listener = _crashpoints.listener
    if listener is not None:
        listener(f"effect.{key}.after")
    return text


def _takes_idempotency_key(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "idempotency_key" in parameters


async def sleep(runner: Runner, delivery: Delivery, seconds: float) -> None:
    """``ctx.sleep``: the deadline is checkpointed first, so a restart sleeps only what is left."""
    clock = get_clock()
    call = delivery.sleep_calls
    delivery.sleep_calls += 1
    if call < len(delivery.sleeps):
        deadline = delivery.sleeps[call]  # begun before a restart: sleep only the rest
        pause = deadline > clock.now()  # the resume marked the step under way again: mark it asleep once more
    else:
        deadline = clock.now() + seconds
        delivery.slept(deadline)
        pause = True
    if pause:
        delivery.running = False  # a crash during a durable sleep is no fault of the step's
        runner.run.touch(delivery)
        await runner.checkpoint(f"sleep in {delivery.step}")
    try:
        await clock.sleep_until(deadline)
    finally:
        delivery.running = True
        runner.run.touch(delivery)
