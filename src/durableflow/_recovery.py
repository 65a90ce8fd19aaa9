"""What happens when a step fails: a retry, a ``@catch_error`` handler, or the end of the run.

A step's attempt number is durable. An attempt under way is marked on its
delivery and written with whatever checkpoint comes next (no checkpoint of its
own); the checkpoint written just before workers take queued deliveries marks
those too. So a resume after a crash knows which steps were running: each counts
the crash as an attempt, and one whose process died ``Workflow.step_crash_limit``
times fails the run with ``StepCrashLoopError`` instead of killing it again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ._clock import get_clock
from ._errors import StepCrashLoopError
from ._events import Event, StepFailedEvent, WorkflowFailedEvent
from ._retry import RetryInfo, RetryPolicy
from ._runstate import Delivery

if TYPE_CHECKING:
    from ._runner import Runner
    from ._runstate import RunState
    from ._step import StepSpec

_RECOVERIES = "\0catch_error:"  # a handler's recoveries in this run, kept beside the effect records


@dataclass(frozen=True)
class Handoff:
    """A failed step's input handed to a ``@catch_error`` handler as a ``StepFailedEvent``."""

    event: StepFailedEvent
    handler: str


def begin(run: RunState, delivery: Delivery) -> None:
    """An attempt starts: the next checkpoint, whatever causes it, records it as under way."""
    delivery.running = True
    run.touch(delivery)


def mark_starting(runner: Runner, finishing: str | None) -> None:
    """Before a checkpoint: the queued deliveries that workers will take as soon as it is written are
    recorded as under way, so a process that dies in the step it starts next has that attempt counted
    (``finishing``: the step whose worker is about to take one of them)."""
    count = runner.ready_count
    if not count:
        return
    ready, busy, run = runner.ready, runner.busy, runner.run
    if count == 1:  # the common case, a linear run: one delivery queued (held as it is, or what a queue kept)
        for name, queued in ready.items():
            delivery = queued if type(queued) is Delivery else queued[0]
            if (
                not delivery.running  # already marked: the record that says so is written or on its way
                and busy[name] - (name == finishing) < runner.graph.steps[name].num_workers
            ):
                delivery.running = True
                run.touch_key(delivery.key)
        return
    steps = runner.graph.steps
    for name, queued in ready.items():
        queue = (queued,) if isinstance(queued, Delivery) else queued
        free = steps[name].num_workers - busy[name] + (name == finishing)
        for delivery in itertools.islice(queue, max(free, 0)):
            if not delivery.running:
                delivery.running = True
                run.touch(delivery)


def failed(run: RunState, delivery: Delivery, exc: Exception) -> None:
    """An attempt failed and will be retried: the next checkpoint records the attempt number it reached."""
    now = get_clock().now()
    first = delivery.failures[0][0] if delivery.failures else now
    delivery.failures = ((first, exc, now),)
    delivery.attempt += 1
    # The retry is a new execution: it sends its events again, as llama-index-workflows' retries do.
    # What the failed attempt sent stays accepted; only a re-execution after a crash skips sends.
    delivery.sent = 0
    delivery.running = False
    run.touch(delivery)


def retry_delay(policy: RetryPolicy, run_id: str, step: str, delivery: Delivery, exc: Exception) -> float | None:
    """Ask the step's policy for the wait before the next attempt, or ``None`` to give up.

    Random waits are seeded from the run, the step and the attempt, as llama-index-workflows
    does, so a retry replayed after a crash waits as long as it was going to; a policy whose
    ``next`` takes no ``seed`` is asked without one.
    """
    if "seed" not in _next_parameters(type(policy)):
        return policy.next(elapsed(delivery), delivery.attempt, exc)
    digest = hashlib.sha256(f"{run_id}:{step}:{delivery.attempt}".encode()).hexdigest()
    return policy.next(elapsed(delivery), delivery.attempt, exc, seed=int(digest, 16) & 0xFFFF_FFFF)  # type: ignore[call-arg]


@functools.cache
def _next_parameters(kind: type[RetryPolicy]) -> frozenset[str]:
    return frozenset(inspect.signature(kind.next).parameters)


def elapsed(delivery: Delivery) -> float:
    return get_clock().now() - delivery.failures[0][0] if delivery.failures else 0.0


def retry_info(delivery: Delivery) -> RetryInfo:
    last = delivery.failures[-1] if delivery.failures else None
    return RetryInfo(
        retry_number=delivery.attempt - 1,
        elapsed_seconds=elapsed(delivery),
        last_exception=last[1] if last else None,
        last_failed_at=datetime.fromtimestamp(last[2], UTC) if last else None,
    )


def slept_through(run: RunState) -> bool:
    """The owner died while no step worked and one slept durably (``ctx.sleep``): a restart then, a deploy say,
    is no sign of a step that kills its process, and counts toward neither ``max_recoveries`` nor a crash."""
    deliveries = run.deliveries.values()
    return not any(d.running for d in deliveries) and any(d.sleeps for d in deliveries)


def count_crashes(runner: Runner, released: bool = False) -> StepCrashLoopError | None:
    """On resuming a run whose owner died: every attempt that was under way counts, durably, as a failed one.
    Not if its owner had ``released`` it (handed back, or let go when its store failed): it was alive then."""
    run, limit = runner.run, runner.workflow.step_crash_limit
    for delivery in run.deliveries.values():
        if delivery.running:
            delivery.running = False
            run.touch(delivery)
            if released:
                continue
            delivery.crashes += 1
            delivery.attempt += 1
            if limit is not None and delivery.crashes >= limit:
                return StepCrashLoopError(
                    f"step {delivery.step!r} of run {run.run_id!r} was under way each of the {delivery.crashes} "
                    f"times its process died (Workflow.step_crash_limit = {limit}), so the run failed instead of "
                    "trying it again; fix what kills the process, then resume the run to try the step once more"
                )
    return None


def handoff(runner: Runner, spec: StepSpec, delivery: Delivery, event: Event, exc: Exception) -> Handoff | None:
    """The ``@catch_error`` handler that takes this failure, if one covers the step and has budget left."""
    if spec.config.role == "catch_error":
        return None  # a handler that fails ends the run
    catchers = runner.graph.catchers.values()
    handler = next((c for c in catchers if spec.name in (c.config.catch_error_for_steps or ())), None)
    handler = handler or next((c for c in catchers if c.config.catch_error_for_steps is None), None)
    if handler is None:
        return None
    run = runner.run
    key = _RECOVERIES + handler.name
    used = int(run.effects.get(key, "0"))
    if used >= handler.config.catch_error_max_recoveries:
        return None
    run.record_effect(key, str(used + 1))
    return Handoff(
        StepFailedEvent(
            step_name=spec.name,
            input_event=event,
            exception=exc,
            attempts=delivery.attempt,
            elapsed_seconds=elapsed(delivery),
            failed_at=datetime.now(UTC),
        ),
        handler.name,
    )


def failed_event(step: str, delivery: Delivery | None, exc: BaseException) -> WorkflowFailedEvent:
    """What the stream shows as its last event when a step fails for good."""
    return WorkflowFailedEvent(
        step_name=step,
        exception=exc,
        attempts=delivery.attempt if delivery is not None else None,
        elapsed_seconds=elapsed(delivery) if delivery is not None else None,
    )
