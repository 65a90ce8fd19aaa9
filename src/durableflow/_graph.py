"""A workflow class's steps as a graph: routing, validation and the fingerprint snapshots carry."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, final

from pydantic import BaseModel

from ._errors import WorkflowValidationError
from ._events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent, type_key
from ._serialization import ValueCodec
from ._step import StepSpec, parse_step, step_options

if TYPE_CHECKING:
    from ._workflow import Workflow


@final
class StepGraph:
    """The validated steps of one workflow class, built once on first use."""

    def __init__(self, workflow_cls: type[Workflow]) -> None:
        self.workflow_path = f"{workflow_cls.__module__}:{workflow_cls.__qualname__}"
        self._routes: dict[type[Event], tuple[StepSpec, ...]] = {}
        self.steps: dict[str, StepSpec] = {}
        for name in sorted(dir(workflow_cls)):
            options = step_options(getattr(workflow_cls, name, None))
            if options is not None:
                self.steps[name] = parse_step(name, getattr(workflow_cls, name), options)
        self.state_type = self._state_type()
        self._validate(workflow_cls.__name__)
        self.start_type = self._start_type(workflow_cls.__name__)
        self.types: dict[str, type[Event]] = {}
        for builtin in (StartEvent, StopEvent, InputRequiredEvent, HumanResponseEvent):
            self.types[type_key(builtin)] = builtin
        for spec in self.steps.values():
            for cls in spec.accepts + spec.emits:
                self.types[type_key(cls)] = cls
        self.codec = ValueCodec(self.types)
        self.description = self._describe()
        canonical = json.dumps(self.description, sort_keys=True, separators=(",", ":"))
        self.description_json = canonical
        self.fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def consumers(self, event_type: type[Event]) -> tuple[StepSpec, ...]:
        """The steps an event of this type is delivered to: those accepting it or a base of it."""
        route = self._routes.get(event_type)
        if route is None:
            route = tuple(spec for spec in self.steps.values() if any(issubclass(event_type, a) for a in spec.accepts))
            self._routes[event_type] = route
        return route

    def _state_type(self) -> type[BaseModel] | None:
        declared = {spec.state_type for spec in self.steps.values() if spec.state_type is not None}
        if len(declared) > 1:
            names = ", ".join(sorted(cls.__name__ for cls in declared))
            raise WorkflowValidationError(f"steps declare different state types: {names}; use one Context[State]")
        return declared.pop() if declared else None

    def _start_type(self, name: str) -> type[StartEvent]:
        starts = {cls for spec in self.steps.values() for cls in spec.accepts if issubclass(cls, StartEvent)}
        if len(starts) > 1:
            names = ", ".join(sorted(cls.__name__ for cls in starts))
            raise WorkflowValidationError(f"workflow {name}: steps accept different start events ({names}); use one")
        return starts.pop()

    def _validate(self, name: str) -> None:
        if not self.steps:
            raise WorkflowValidationError(f"workflow {name} has no @step methods")
        accepted = [cls for spec in self.steps.values() for cls in spec.accepts]
        emitted = [(spec.name, cls) for spec in self.steps.values() for cls in spec.emits]
        if not any(issubclass(cls, StartEvent) for cls in accepted):
            raise WorkflowValidationError(f"workflow {name}: no step accepts StartEvent, so no run can begin")
        if not any(issubclass(cls, StopEvent) for _, cls in emitted):
            raise WorkflowValidationError(f"workflow {name}: no step returns StopEvent, so no run can end")
        for producer, cls in emitted:
            if issubclass(cls, (StopEvent, InputRequiredEvent)):
                continue
            if not self.consumers(cls):
                raise WorkflowValidationError(f"step {producer!r} emits {cls.__name__} but no step accepts it")
        produced = {cls for _, cls in emitted}
        for spec in self.steps.values():
            for cls in spec.accepts:
                if issubclass(cls, (StartEvent, HumanResponseEvent)) or cls is Event:
                    continue
                if not any(issubclass(p, cls) for p in produced):
                    raise WorkflowValidationError(
                        f"step {spec.name!r} accepts {cls.__name__} but no step emits it "
                        "(events sent from outside the run should subclass HumanResponseEvent)"
                    )

    def _describe(self) -> dict[str, Any]:
        state = self.state_type
        return {
            "steps": {
                spec.name: {
                    "accepts": sorted(type_key(c) for c in spec.accepts),
                    "emits": sorted(type_key(c) for c in spec.emits),
                }
                for spec in self.steps.values()
            },
            "state": None if state is None else state.__qualname__,  # never the module: see type_key
        }


def graph_of(workflow_cls: type[Workflow]) -> StepGraph:
    """The class's graph, built and validated on first use (so forward references can resolve)."""
    graph = workflow_cls.__dict__.get("_durableflow_graph")
    if graph is None:
        graph = StepGraph(workflow_cls)
        setattr(workflow_cls, "_durableflow_graph", graph)  # noqa: B010 - a private cache Workflow does not declare
    return graph
