"""A workflow class's steps as a graph: routing, validation and the fingerprint snapshots carry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from pydantic import BaseModel

from . import _validation
from ._errors import WorkflowValidationError
from ._events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StepFailedEvent, StopEvent, type_key
from ._fanplan import FanPlan
from ._serialization import ValueCodec
from ._step import StepConfig, StepSpec, make_spec, step_config

if TYPE_CHECKING:
    from ._workflow import Workflow


@final
class StepGraph:
    """The steps of one workflow class, built and checked once on first use."""

    def __init__(self, workflow_cls: type[Workflow]) -> None:
        self.workflow_path = f"{workflow_cls.__module__}:{workflow_cls.__qualname__}"
        self._routes: dict[type[Event], tuple[StepSpec, ...]] = {}
        self._checked: set[frozenset[str]] = set()
        self.configs: dict[str, StepConfig] = {}
        functions: dict[str, Callable[..., Any]] = {}
        for name in sorted(dir(workflow_cls)):
            fn = getattr(workflow_cls, name, None)
            if callable(fn) and (hasattr(fn, "_step_config") or hasattr(fn, "_step_parse")):
                functions[name] = fn
        functions.update(workflow_cls._step_functions)
        for name, fn in functions.items():
            config = step_config(fn)
            assert config is not None
            self.configs[name] = config
        self.steps = {name: make_spec(name, functions[name], config) for name, config in self.configs.items()}
        names = list(self.steps)
        # per step, where a worker that finished it looks for more: the steps after it, then it (no starving)
        self.take_order = {name: (*names[i + 1 :], *names[: i + 1]) for i, name in enumerate(names)}
        self.catchers = {name: spec for name, spec in self.steps.items() if spec.config.role == "catch_error"}
        self.state_conflict = ""  # steps declaring unrelated state types: raised when a run starts
        self.state_type = self._state_type()
        if not self.steps:
            _validation.validate_workflow({}, workflow_cls.__name__)
        self.start_type = _validation.start_event_class(self.configs, workflow_cls.__name__)
        self.stop_type = _validation.stop_event_class(self.configs, workflow_cls.__name__)
        self.types: dict[str, type[Event]] = {}
        for builtin in (StartEvent, StopEvent, InputRequiredEvent, HumanResponseEvent, StepFailedEvent):
            self.types[type_key(builtin)] = builtin
        declared = [cls for spec in self.steps.values() for cls in spec.accepts + spec.emits]
        for cls in [*declared, *workflow_cls.extra_events]:
            known = self.types.setdefault(type_key(cls), cls)
            if known is not cls:
                raise WorkflowValidationError(
                    f"two event types of {workflow_cls.__name__} are named {type_key(cls)} "
                    f"({known.__module__} and {cls.__module__}); a snapshot names events by name, so rename one"
                )
        self.stored_as: dict[type[Event], tuple[str, str | None]] = {}
        """The snapshot encoder's: the opening of each type's records, and a record whole for a type with no fields."""
        self.codec = ValueCodec(self.types)
        self.pickle_codec = ValueCodec(self.types, pickles=True)  # for serializer=PickleSerializer() only
        self.description = self._describe()
        canonical = json.dumps(self.description, sort_keys=True, separators=(",", ":"))
        self.description_json = canonical
        self.fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        self._name = workflow_cls.__name__
        fans = any(c.collection_param is not None or c.fan_out_types for c in self.configs.values())
        self.fan_plan = FanPlan(self) if fans else None
        """Which list[E] parameters each ``-> list[...]`` step feeds (``None``: no fan-out/fan-in here)."""

    def check(self, skip: frozenset[str] = frozenset()) -> None:
        """The checks a run needs besides the structure: every event consumed and produced, no step
        unreachable or stuck, skipping the graph checks named in ``skip``."""
        if self.state_conflict:
            raise WorkflowValidationError(self.state_conflict)
        if skip not in self._checked:
            _validation.validate_workflow(self.configs, self._name, set(skip))  # type: ignore[arg-type]
            if self.fan_plan is not None:
                self.fan_plan.check()
                self.fan_plan.check_joins()
            self._checked.add(skip)

    def consumers(self, event_type: type[Event]) -> tuple[StepSpec, ...]:
        """The steps an event of this type is delivered to: those accepting it or a base of it."""
        route = self._routes.get(event_type)
        if route is None:
            route = tuple(
                spec
                for spec in self.steps.values()
                if spec.config.role == "step"
                and spec.config.collection_param is None  # a list[E] step gets batches, not single events
                and (
                    event_type in spec.accepts
                    or (spec.config.accept_event_subclasses and any(issubclass(event_type, a) for a in spec.accepts))
                )
            )
            self._routes[event_type] = route
        return route

    def _state_type(self) -> type[BaseModel] | None:
        declared = {spec.state_type for spec in self.steps.values() if spec.state_type is not None}
        if len(declared) > 1:
            # Context[Base] and Context[Child] in one workflow: the most derived type holds every field
            for candidate in declared:
                if all(issubclass(candidate, other) for other in declared):
                    return candidate
            names = ", ".join(sorted(cls.__name__ for cls in declared))
            self.state_conflict = (
                f"steps declare different state types: {names}, which are not in a compatible inheritance "
                "hierarchy; use one Context[State], or a model and its subclasses"
            )
            return None
        return declared.pop() if declared else None

    def _describe(self) -> dict[str, Any]:
        state = self.state_type
        return {
            "steps": {
                spec.name: {
                    "accepts": sorted(type_key(c) for c in spec.accepts),
                    "emits": sorted(type_key(c) for c in spec.emits),
                    **(
                        {"collects": sorted(type_key(c) for c in spec.config.collection_param[1])}
                        if spec.config.collection_param
                        else {}
                    ),
                }
                for spec in self.steps.values()
            },
            "state": None if state is None else state.__qualname__,  # never the module: see type_key
        }


def graph_of(workflow_cls: type[Workflow], check: bool = True) -> StepGraph:
    """The class's graph, built on first use (so forward references can resolve), and checked unless ``check`` is
    false (the workflow's own ``skip_graph_checks`` and ``disable_validation`` decide then)."""
    graph = workflow_cls.__dict__.get("_durableflow_graph")
    if graph is None:
        graph = StepGraph(workflow_cls)
        setattr(workflow_cls, "_durableflow_graph", graph)  # noqa: B010 - a private cache Workflow does not declare
    if check:
        graph.check()
    return graph
