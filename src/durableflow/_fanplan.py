"""What a workflow declares about fan-out/fan-in, and the checks on it: the ``Collect``/``All``/``Take``
markers of a ``list[E]`` parameter, and which batches each such parameter and each join can be fed from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, final

from ._errors import WorkflowValidationError
from ._events import Event, HumanResponseEvent, StopEvent

if TYPE_CHECKING:
    from ._graph import StepGraph
    from ._step import StepConfig


@dataclass(frozen=True)
class Cardinality:
    """When a ``list[E]`` parameter's batch is released: ``All()`` or ``Take(n)``."""


@dataclass(frozen=True)
class All(Cardinality):
    """Fire once when the batch closes, with every event it gathered (the default)."""


@dataclass(frozen=True)
class Take(Cardinality):
    """Fire once on the ``n``-th arrival with the first ``n`` (or, if the batch closes first, with what came)."""

    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError("Take(n) requires an integer n >= 1")


@dataclass(frozen=True)
class Collect:
    """Marks how a ``list[E]`` parameter is released: ``Annotated[list[E], Collect(Take(1))]``."""

    cardinality: Cardinality = field(default_factory=All)

    def __post_init__(self) -> None:
        if type(self.cardinality) not in (All, Take):
            raise WorkflowValidationError(f"Collect takes All() or Take(n), not {self.cardinality!r}")


@final
class FanPlan:
    """Which collecting steps each list-returning step feeds: those taking an event type produced at its level."""

    def __init__(self, graph: StepGraph) -> None:
        configs: dict[str, StepConfig] = graph.configs
        self.collectors = {name: c for name, c in configs.items() if c.collection_param is not None}
        self.producers = {name: c.fan_out_types for name, c in configs.items() if c.fan_out_types}
        self.joins = tuple(name for name, c in configs.items() if c.collect_params)
        self._steps = graph.steps
        self.bindings: dict[str, tuple[str, ...]] = {}
        self._levels: dict[str, set[type[Event]]] = {}
        for source in self.producers:
            level = self._level(graph, source)
            self.bindings[source] = tuple(name for name in self.collectors if self._takes_any(name, level))
        self._by_type: dict[type[Event], tuple[str, ...]] = {}
        answers = {a for spec in graph.steps.values() for a in spec.accepts if issubclass(a, HumanResponseEvent)}
        self._top = self._spread(graph, {graph.start_type, *answers})
        """Event types made outside any batch: from the start event, and from answers sent from outside."""

    def _takes_any(self, step: str, level: set[type[Event]]) -> bool:
        config = self.collectors[step]
        items = config.collection_param[1]  # type: ignore[index]
        return any(_matches(t, items, config.accept_event_subclasses) for t in level)

    def _level(self, graph: StepGraph, source: str) -> set[type[Event]]:
        """Event types that can arise inside a batch ``source`` opens: its items and what steps make of them
        there; a list returned inside opens a batch of its own, whose collecting steps' output is this one's."""
        if source in self._levels:
            return self._levels[source]
        level: set[type[Event]] = set(self.producers[source])
        self._levels[source] = level  # a cycle back to this batch adds nothing new
        return self._spread(graph, level)

    def _spread(self, graph: StepGraph, level: set[type[Event]]) -> set[type[Event]]:
        """``level`` with what steps make of its events at that level, added in place."""
        todo = list(level)
        while todo:
            for spec in graph.consumers(todo.pop()):
                made = [t for t in spec.emits if t not in spec.config.fan_out_types]
                if spec.config.fan_out_types:
                    inner = self._level(graph, spec.name)
                    for name in self.collectors:
                        if self._takes_any(name, inner):
                            made += graph.steps[name].emits
                for cls in made:
                    if cls not in level:
                        level.add(cls)
                        todo.append(cls)
        return level

    def check(self) -> None:
        """No ``-> list[StopEvent]``; a ``list[E]`` parameter needs a ``-> list[...]`` step whose batch makes an E."""
        for name, listed in self.producers.items():
            stop = next((t.__name__ for t in listed if issubclass(t, StopEvent)), None)
            if stop is not None:  # a fan-out feeds other steps, and a run ends once: it could only fail later
                raise WorkflowValidationError(
                    f"Step '{name}' is annotated to return list[{stop}], which cannot work: a fan-out list holds "
                    f"events for other steps, and a run ends once. Return the {stop} alone (-> {stop}), or a "
                    "list of events that lead to it"
                )
        bound = {name for names in self.bindings.values() for name in names}
        for name, config in self.collectors.items():
            if name not in bound:
                param, items = config.collection_param  # type: ignore[misc]
                wanted = ", ".join(sorted(t.__name__ for t in items))
                answered = self._answered_outside(items, config.accept_event_subclasses)
                if answered is not None:
                    maker, answer = answered
                    raise WorkflowValidationError(
                        f"Step '{name}' parameter '{param}' collects list[{wanted}], but no batch can produce "
                        f"one: '{maker}' makes it from {answer.__name__}, an answer from outside the run, and an "
                        "event sent from outside joins no batch, so a batch member that asks a question and "
                        "stops there leaves the batch. Have the member wait for its answer instead: "
                        f"`answer = await ctx.wait_for_event({answer.__name__}, waiter_event=YourQuestion(...))`, "
                        "then return the event the batch collects"
                    )
                raise WorkflowValidationError(
                    f"Step '{name}' parameter '{param}' collects list[{wanted}], but no returned-list producer "
                    "creates a stream for those event types. list[E] fan-in only consumes events from steps "
                    "annotated as returning list[E]; use ctx.collect_events for unstreamed ctx.send_event flows."
                )

    def check_joins(self) -> None:
        """A join pairs events of one batch (or of none): its parameters' types must all be made in one place."""
        places = {"outside any batch": self._top} | {f"in the batch of step '{n}'": v for n, v in self._levels.items()}
        for name, spec in self._steps.items():
            slots = spec.config.collect_params
            if not slots:
                continue
            subclasses = spec.config.accept_event_subclasses

            def made_in(slot: type[Event], level: set[type[Event]]) -> bool:
                return any(_matches(t, (slot,), subclasses) for t in level)  # noqa: B023 - used at once

            if any(all(made_in(slot, level) for _, slot in slots) for level in places.values()):
                continue
            where = "; ".join(
                f"'{param}' ({slot.__name__}) is made "
                + (" and ".join(p for p, level in places.items() if made_in(slot, level)) or "nowhere")
                for param, slot in slots
            )
            raise WorkflowValidationError(
                f"Step '{name}' joins events that are never made in one place: {where}. Its events would pair "
                "across a batch's edge, and those left over would wait for a partner for ever, their results "
                "missing from the fan-in. Make them in one place: carry what the batch's work needs in the "
                "events it starts with, or have the member wait for it with ctx.wait_for_event"
            )

    def _answered_outside(self, items: tuple[type[Event], ...], subclasses: bool) -> tuple[str, type[Event]] | None:
        """(step, answer type) if a step making ``items`` takes a HumanResponseEvent: a human-in-the-loop
        member that returned its question, whose answer arrives from outside every batch."""
        for spec in self._steps.values():
            if any(_matches(t, items, subclasses) for t in spec.emits):
                answer = next((a for a in spec.accepts if issubclass(a, HumanResponseEvent)), None)
                if answer is not None:
                    return spec.name, answer
        return None

    def collectors_for(self, cls: type[Event]) -> tuple[str, ...]:
        names = self._by_type.get(cls)
        if names is None:
            names = self._by_type[cls] = tuple(
                name
                for name, c in self.collectors.items()
                if _matches(cls, c.collection_param[1], c.accept_event_subclasses)  # type: ignore[index]
            )
        return names

    def take(self, step: str) -> int | None:
        policy = self.collectors[step].collection_policy
        card = policy.cardinality if policy is not None else None
        return card.n if isinstance(card, Take) else None


def _matches(cls: type[Event], items: tuple[type[Event], ...], subclasses: bool) -> bool:
    return cls in items or (subclasses and issubclass(cls, items))
