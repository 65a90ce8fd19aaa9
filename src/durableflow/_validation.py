"""The checks a workflow's steps must pass before it runs, with the error names and texts of llama-index-workflows.

Structural errors (no steps, no step taking a ``StartEvent``, none returning a
``StopEvent``) raise ``WorkflowConfigurationError``; events nobody consumes or
produces, and graph errors (unreachable steps, events left dangling, cycles
with no way out), raise ``WorkflowValidationError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, get_args

from ._errors import WorkflowConfigurationError, WorkflowValidationError
from ._events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StepFailedEvent, StopEvent
from ._step import StepConfig, WorkflowGraphCheck

GraphNode = Any  # a step's name or an event class


@dataclass
class GraphValidationError:
    """One failed graph check: which, what, a hint, and the steps concerned."""

    check: WorkflowGraphCheck
    message: str
    hint: str
    step_names: list[str] = field(default_factory=list)


@dataclass
class StepGraph:
    """Steps and events as an adjacency list, with what is reachable from the inputs and what reaches an output."""

    outgoing: dict[GraphNode, list[GraphNode]] = field(default_factory=dict)
    event_types: set[type] = field(default_factory=set)
    step_names: set[str] = field(default_factory=set)
    forward_reachable: set[GraphNode] = field(default_factory=set)
    reverse_reachable: set[GraphNode] = field(default_factory=set)


def _is(cls: Any, bases: type | tuple[type, ...]) -> bool:
    return isinstance(cls, type) and issubclass(cls, bases)


def _accepts(config: StepConfig, event_type: type) -> bool:
    if config.accept_event_subclasses:
        return any(_is(event_type, accepted) for accepted in config.accepted_events)
    return event_type in config.accepted_events


def build_step_graph(
    steps: dict[str, StepConfig], start_event_class: type, catch_error_steps: Iterable[str] = ()
) -> StepGraph:
    outgoing: dict[GraphNode, list[GraphNode]] = {}
    event_types: set[type] = {start_event_class} if steps else set()
    for name, config in steps.items():
        for returned in config.return_types:
            if returned is not type(None):
                event_types.add(returned)
                outgoing.setdefault(name, []).append(returned)
        event_types.update(config.accepted_events)
    for event_type in event_types:
        for name, config in steps.items():
            # a returned StopEvent ends the run: it never routes to a step accepting a base of it
            if event_type in config.accepted_events or (
                not _is(event_type, StopEvent) and _accepts(config, event_type)
            ):
                outgoing.setdefault(event_type, []).append(name)
    seeds: list[GraphNode] = [start_event_class, *(e for e in event_types if _is(e, HumanResponseEvent))]
    seeds += catch_error_steps
    incoming: dict[GraphNode, list[GraphNode]] = {}
    for source, targets in outgoing.items():
        for target in targets:
            incoming.setdefault(target, []).append(source)
    outputs = [e for e in event_types if _is(e, (StopEvent, InputRequiredEvent))]
    return StepGraph(outgoing, event_types, set(steps), _reach(seeds, outgoing), _reach(outputs, incoming))


def _reach(seeds: list[GraphNode], edges: dict[GraphNode, list[GraphNode]]) -> set[GraphNode]:
    seen: set[GraphNode] = set()
    stack = list(seeds)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return seen


def validate_graph(
    steps: dict[str, StepConfig],
    start_event_class: type,
    skip_checks: set[WorkflowGraphCheck] | None = None,
    catch_error_steps: Iterable[str] = (),
) -> list[GraphValidationError]:
    """Every graph error at once: unreachable steps, events left dangling, steps that cannot reach an end."""
    skip = skip_checks or set()
    graph = build_step_graph(steps, start_event_class, catch_error_steps)
    errors = []

    def skipped(check: str) -> set[str]:
        return {name for name, config in steps.items() if check in config.skip_graph_checks}

    if "reachability" not in skip:
        names = sorted(n for n in graph.step_names - skipped("reachability") if n not in graph.forward_reachable)
        if names:
            errors.append(
                GraphValidationError(
                    "reachability",
                    f"Unreachable steps: {', '.join(names)}",
                    "Steps must be reachable from StartEvent or HumanResponseEvent.",
                    names,
                )
            )
    if "terminal_event" not in skip:
        dangling = [
            e.__name__
            for e in graph.event_types
            if not any(t in graph.step_names for t in graph.outgoing.get(e, ()))
            and not _is(e, (StopEvent, InputRequiredEvent))
        ]
        if dangling:
            errors.append(
                GraphValidationError(
                    "terminal_event",
                    f"Events produced but never consumed: {', '.join(sorted(dangling))}",
                    "Only StopEvent and InputRequiredEvent may be terminal.",
                )
            )
    if "dead_end" not in skip:
        producing = {n for n in graph.step_names if graph.outgoing.get(n)}
        names = sorted(n for n in producing - skipped("dead_end") if n not in graph.reverse_reachable)
        if names:
            errors.append(
                GraphValidationError(
                    "dead_end",
                    f"Dead-end steps: {', '.join(names)}",
                    "Steps must have a path to StopEvent or InputRequiredEvent.",
                    names,
                )
            )
    return errors


def _only_one(found: set[Any], kind: str, workflow: str, verb: str) -> Any:
    if not found:
        raise WorkflowConfigurationError(
            f"At least one Event of type {kind} must be {verb} by any step. "
            f"(Workflow '{workflow}' has no @step that {'accepts' if verb == 'received' else 'returns'} {kind}.)"
        )
    if len(found) > 1:
        names = ", ".join(sorted(cls.__name__ for cls in found))
        raise WorkflowConfigurationError(
            f"Only one type of {kind} is allowed per workflow, found {len(found)}: {names} in workflow '{workflow}'."
        )
    return found.pop()


def start_event_class(steps: dict[str, StepConfig], workflow: str) -> type[StartEvent]:
    found = {e for c in steps.values() for e in c.accepted_events if _is(e, StartEvent)}
    start: type[StartEvent] = _only_one(found, "StartEvent", workflow, "received")
    return start


def stop_event_class(steps: dict[str, StepConfig], workflow: str) -> type[StopEvent]:
    found = {e for c in steps.values() for e in c.return_types if _is(e, StopEvent)}
    stop: type[StopEvent] = _only_one(found, "StopEvent", workflow, "returned")
    return stop


def validate_workflow(
    steps: dict[str, StepConfig], workflow: str, skip_checks: set[WorkflowGraphCheck] | None = None
) -> None:
    """Every check, the most actionable first; raises on the first kind of problem found."""
    if not steps:
        raise WorkflowConfigurationError(
            f"Workflow '{workflow}' has no configured steps. Did you forget to annotate methods with @step "
            "or to register free-function steps via @step(workflow=...)?"
        )
    start = start_event_class(steps, workflow)
    stop_event_class(steps, workflow)
    accepting_stop = [n for n, c in steps.items() if any(_is(e, StopEvent) for e in c.accepted_events)]
    if accepting_stop:
        plural, names = "" if len(accepting_stop) == 1 else "s", "', '".join(accepting_stop)
        raise WorkflowValidationError(
            f"Step{plural} '{names}' cannot accept StopEvent. "
            "StopEvent signals the end of the workflow. Use a different Event type instead."
        )
    produced = {start} | {e for c in steps.values() for e in c.return_types if e is not type(None)}
    boundary_in = (InputRequiredEvent, HumanResponseEvent, StopEvent, StepFailedEvent)
    never_produced = {
        e: n
        for n, c in steps.items()
        for e in c.accepted_events
        if not _is(e, boundary_in) and e is not Event and not any(_is(p, e) for p in produced)
    }
    if never_produced:
        names = ", ".join(sorted(e.__name__ for e in never_produced))
        who = "; ".join(f"step {n!r} accepts {e.__name__} but no step emits it" for e, n in never_produced.items())
        raise WorkflowValidationError(
            f"The following events are consumed but never produced: {names} "
            f"({who}; events sent from outside the run should subclass HumanResponseEvent)"
        )
    boundary_out = (InputRequiredEvent, HumanResponseEvent, StopEvent)
    unused = {p for p in produced if not _is(p, boundary_out) and not any(_accepts(c, p) for c in steps.values())}
    if unused:
        names = ", ".join(sorted(e.__name__ for e in unused))
        who = "; ".join(
            f"step {n!r} emits {e.__name__} but no step accepts it"
            for n, c in steps.items()
            for e in c.return_types
            if e in unused
        )
        raise WorkflowValidationError(f"The following events are produced but never consumed: {names} ({who})")
    handlers = [n for n, c in steps.items() if c.role == "catch_error"]
    errors = validate_graph(steps, start, skip_checks, handlers)
    if errors:
        detail = "\n".join(f"  - [{e.check}] {e.message}\n    {e.hint}" for e in errors)
        raise WorkflowValidationError(f"Graph validation failed:\n{detail}")


GRAPH_CHECKS: frozenset[str] = frozenset(get_args(WorkflowGraphCheck))
