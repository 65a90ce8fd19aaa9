"""The ``@step`` and ``@catch_error`` decorators and what they learn from a step's signature."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, TypeVar, Union, get_args, get_origin, overload

from pydantic import BaseModel

from ._errors import WorkflowValidationError
from ._events import CollectionReleaseEvent, Event, StepFailedEvent
from ._fanout import join_call
from ._fanplan import Collect
from ._resource import Resource
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ._workflow import Workflow

F = TypeVar("F", bound=Callable[..., Any])

EVENT = "event"
CONTEXT = "ctx"
COLLECTED = "collected"  # a ``list[E]`` parameter: the batch a fan-out gathered

WorkflowGraphCheck = Literal["reachability", "terminal_event", "dead_end"]
StepGraphCheck = Literal["reachability", "dead_end"]


class ResourceDefinition(NamedTuple):
    """A step parameter injected from a resource."""

    name: str
    resource: Resource[Any]
    type_annotation: Any


@dataclass
class StepConfig:
    """What ``@step`` learned from a step's signature (``fn._step_config``)."""

    accepted_events: list[Any]
    event_name: str
    return_types: list[Any]
    context_parameter: str | None
    num_workers: int
    retry_policy: RetryPolicy | None
    resources: list[ResourceDefinition]
    context_state_type: type[BaseModel] | None = None
    skip_graph_checks: list[StepGraphCheck] = dataclasses.field(default_factory=list)
    role: Literal["step", "catch_error"] = "step"
    catch_error_for_steps: list[str] | None = None
    catch_error_max_recoveries: int = 1
    accept_event_subclasses: bool = True  # events route to steps accepting a base of theirs
    plan: tuple[Any, ...] = ()  # per positional argument: EVENT, CONTEXT or (Resource, annotation)
    keywords: tuple[str, ...] = ()  # names of the trailing arguments passed by keyword
    free: bool = False  # a free function (no self), added with @step(workflow=...) or Workflow.add_step
    collection_param: tuple[str, tuple[Any, ...]] | None = None  # a ``list[E]`` parameter: (name, E types)
    collection_policy: Collect | None = None  # when that parameter's batch is released
    fan_out_types: tuple[Any, ...] = ()  # the E of a ``-> list[E]`` return: each returned list opens a batch
    list_only_types: tuple[Any, ...] = ()  # of those, the ones the annotation names only inside list[...]
    collect_params: list[tuple[str, Any]] | None = None  # several event parameters: a join, (name, type) each
    join_positions: tuple[int, ...] = ()  # where the joined events sit among the arguments


@dataclass(frozen=True, eq=False)
class StepSpec:
    """One step as the run loop sees it."""

    name: str
    fn: Callable[..., Any]  # always called as fn(workflow, *args)
    is_async: bool
    accepts: tuple[type[Event], ...]
    emits: tuple[type[Event], ...]
    plan: tuple[Any, ...]
    keywords: tuple[str, ...]
    state_type: type[BaseModel] | None
    num_workers: int
    retry: RetryPolicy | None
    simple: bool  # only the event and ctx, positionally: the run loop's fast path
    config: StepConfig


@overload
def step(fn: F, /) -> F: ...
@overload
def step(
    *,
    workflow: type[Workflow] | None = None,
    num_workers: int = 4,
    retry_policy: RetryPolicy | None = None,
    retry: RetryPolicy | None = None,
    skip_graph_checks: list[StepGraphCheck] | None = None,
    accept_event_subclasses: bool = True,
) -> Callable[[F], F]: ...


def step(
    fn: F | None = None,
    /,
    *,
    workflow: type[Workflow] | None = None,
    num_workers: int = 4,
    retry_policy: RetryPolicy | None = None,
    retry: RetryPolicy | None = None,
    skip_graph_checks: list[StepGraphCheck] | None = None,
    accept_event_subclasses: bool = True,
) -> F | Callable[[F], F]:
    """Make a workflow method a step: it runs on each event its input annotation accepts.

    ``num_workers`` bounds how many of its invocations run at once;
    ``retry_policy`` (or ``retry``) decides whether a step that raised runs
    again (``ctx.attempt`` tells which try it is). A free function becomes a
    step of ``workflow``.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise WorkflowValidationError("num_workers must be an integer greater than 0")
    policy = retry_policy if retry_policy is not None else retry
    if policy is not None and not callable(getattr(policy, "next", None)):
        raise WorkflowValidationError(f"@step(retry_policy={policy!r}): a retry policy needs a next() method")
    localns = _caller_locals()

    def mark(f: F) -> F:
        def parse() -> StepConfig:
            config = parse_signature(f, localns, num_workers, policy, list(skip_graph_checks or ()))
            config.accept_event_subclasses = accept_event_subclasses
            return config

        _configure(f, parse)
        if is_free_function(f.__qualname__):
            if workflow is None:
                raise WorkflowValidationError(
                    f"To decorate {f.__name__} please pass a workflow class to the @step decorator."
                )
            workflow.add_step(f)
        return f

    return mark(fn) if fn is not None else mark


@overload
def catch_error(fn: F, /) -> F: ...
@overload
def catch_error(*, for_steps: list[str] | None = None, max_recoveries: int = 1) -> Callable[[F], F]: ...


def catch_error(
    fn: F | None = None, /, *, for_steps: list[str] | None = None, max_recoveries: int = 1
) -> F | Callable[[F], F]:
    """Make a method the handler of steps that failed for good: it receives a ``StepFailedEvent``.

    ``for_steps`` limits it to those steps (default: every step no scoped
    handler claims); ``max_recoveries`` is how often it may handle failures
    in one run before the run fails after all.
    """
    if isinstance(max_recoveries, bool) or not isinstance(max_recoveries, int) or max_recoveries < 1:
        raise WorkflowValidationError("@catch_error max_recoveries must be an integer >= 1")
    if for_steps is not None and (not isinstance(for_steps, list) or not all(isinstance(s, str) for s in for_steps)):
        raise WorkflowValidationError("@catch_error for_steps must be None or a list of step name strings")
    localns = _caller_locals()

    def mark(f: F) -> F:
        def parse() -> StepConfig:
            config = parse_signature(f, localns, 1, None, [])
            if config.accepted_events != [StepFailedEvent]:
                raise WorkflowValidationError(
                    f"@catch_error handler '{f.__name__}' must accept StepFailedEvent as its event parameter."
                )
            config.role = "catch_error"
            config.catch_error_for_steps = list(for_steps) if for_steps is not None else None
            config.catch_error_max_recoveries = max_recoveries
            return config

        _configure(f, parse)
        return f

    return mark(fn) if fn is not None else mark


def _configure(fn: Callable[..., Any], parse: Callable[[], StepConfig]) -> None:
    """Parse the signature now, as the decorator runs. While the step's module is still being
    imported, an annotation may name a class further down it: parse that one when the workflow
    is first used. Once the module is imported, a name that does not resolve never will."""
    try:
        fn._step_config = parse()  # type: ignore[attr-defined]
    except WorkflowValidationError as exc:
        if not isinstance(exc.__cause__, NameError) or _module_imported(fn):
            raise
        fn._step_parse = parse  # type: ignore[attr-defined]


def _module_imported(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s module has finished importing. The script being run (``__main__``: a file,
    ``python -m``, a notebook) may still define names whatever its spec says, so it never counts as done."""
    module = getattr(fn, "__module__", "") or ""
    spec = getattr(sys.modules.get(module), "__spec__", None)
    return module != "__main__" and spec is not None and not getattr(spec, "_initializing", False)


def _caller_locals() -> dict[str, Any]:
    """The local names where the decorator was applied, and around it: annotations may name
    classes defined inside a function, which ``from __future__ import annotations`` leaves as strings."""
    frame = sys._getframe(2)  # past this function and the decorator
    chain = []
    for _ in range(4):
        if frame is None:
            break
        chain.append(frame.f_locals)
        frame = frame.f_back  # type: ignore[assignment]
    localns: dict[str, Any] = {}
    for names in reversed(chain):
        localns.update(names)
    return localns


def is_free_function(qualname: str) -> bool:
    """A module-level or nested function rather than a method (PEP 3155 qualified names)."""
    parts = qualname.split(".")
    return len(parts) == 1 or parts[-2] == "<locals>"


def parse_signature(
    fn: Callable[..., Any],
    localns: dict[str, Any] | None,
    num_workers: int,
    retry: RetryPolicy | None,
    skip_graph_checks: list[StepGraphCheck],
) -> StepConfig:
    """Read a step's signature; a ``WorkflowValidationError`` says what does not fit."""
    from ._context import Context  # the annotation users write; imported late to avoid a cycle

    name = getattr(fn, "__qualname__", repr(fn))
    short = f"step {getattr(fn, '__name__', name)!r}"
    try:
        hints = typing.get_type_hints(fn, include_extras=True, localns=localns)
    except Exception as exc:  # a name that does not resolve
        missing = getattr(exc, "name", None)
        missing_text = f" Missing name: {missing}." if missing else ""
        raise WorkflowValidationError(
            f"{short} cannot resolve its annotations. Failed to resolve type annotations for {name}.{missing_text} "
            "If you are using 'from __future__ import annotations' or string annotations, ensure referenced "
            f"names are available in module scope or in the scope where the @step decorator is applied. ({exc})"
        ) from exc

    free = is_free_function(name)
    parameters = list(inspect.signature(fn).parameters.values())
    if not free and parameters:
        parameters = parameters[1:]  # self
    parameters = [p for p in parameters if p.name not in ("self", "cls")]
    plan: list[Any] = []
    keywords: list[str] = []
    resources: list[ResourceDefinition] = []
    accepts: list[Any] = []
    event_name = ""
    context_parameter = None
    state_type: type[BaseModel] | None = None
    collection_param: tuple[str, tuple[Any, ...]] | None = None
    collection_policy: Collect | None = None
    source: Any
    slots: list[tuple[str, tuple[type[Event], ...], int]] = []  # event parameters: name, types, position
    for param in parameters:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise WorkflowValidationError(f"{short}: parameter {param.name!r}: *args and **kwargs cannot be injected")
        hint = hints.get(param.name)
        if hint is None:
            raise WorkflowValidationError(
                f"{short}: parameter {param.name!r} has no annotation; annotate the event, ctx and resources"
            )
        collected = _collected(hint, short, param.name)
        if collected is not None:
            if accepts or slots:
                raise WorkflowValidationError(
                    f"{short}: parameter {param.name!r}: a step takes exactly one event parameter"
                )
            collection_param, collection_policy = (param.name, collected[0]), collected[1]
            accepts, source, event_name = list(collected[0]), COLLECTED, param.name
        elif get_origin(hint) is Annotated:
            found = [m for m in hint.__metadata__ if isinstance(m, Resource)]
            if not found:
                raise WorkflowValidationError(f"{short}: parameter {param.name!r}: Annotated[...] without a Resource")
            found[0].use_names(localns)
            source = (found[0], get_args(hint)[0])
            resources.append(ResourceDefinition(param.name, found[0], get_args(hint)[0]))
        elif hint is Context or get_origin(hint) is Context:
            source, context_parameter = CONTEXT, param.name
            args = get_args(hint)
            if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                state_type = args[0]
        else:
            events = event_types(hint)
            if not events:
                raise WorkflowValidationError(
                    f"{short}: parameter {param.name!r}: {hint!r} is neither an Event, a Context "
                    "nor Annotated[T, Resource(...)]"
                )
            if collection_param is not None:
                raise WorkflowValidationError(
                    f"{short}: parameter {param.name!r}: a step takes exactly one event parameter"
                )
            slots.append((param.name, events, len(plan)))
            source = EVENT
            if not accepts:
                accepts, event_name = list(events), param.name
        if param.kind is param.KEYWORD_ONLY:
            keywords.append(param.name)
        elif keywords:
            raise WorkflowValidationError(f"{short}: parameter {param.name!r}: positional after keyword-only")
        plan.append(source)
    collect_params = None
    if len(slots) > 1:  # a join: one event of each parameter's type
        for slot_name, slot_types, _ in slots:
            if len(slot_types) != 1:
                raise WorkflowValidationError(
                    f"{short}: parameter {slot_name!r}: a step with several event parameters joins one event "
                    "of each, so each takes a single event type, not a union"
                )
        collect_params = [(slot_name, slot_types[0]) for slot_name, slot_types, _ in slots]
        accepts = [slot_type for _, slot_type in collect_params]
    if not accepts:
        raise WorkflowValidationError(
            f"Step signature must have at least one parameter annotated as type Event ({short}: no parameter "
            "is annotated with an Event type, so nothing can start it)"
        )
    if "return" not in hints:
        raise WorkflowValidationError(
            "Return types of workflows step functions must be annotated with their type. "
            f"({short} has no return annotation; name the events it emits, or None)"
        )
    returns = hints["return"]
    listed = _listed_types(returns)
    emits: list[Any] = list(event_types(_without_lists(returns), allow_none=True))
    list_only = tuple(t for t in listed if t not in emits)
    emits += list_only
    if not emits and returns not in (None, type(None)):
        raise WorkflowValidationError(f"{short}: return annotation {returns!r} must be Event types and/or None")
    if returns in (None, type(None)) or (
        get_origin(returns) in (Union, types.UnionType) and type(None) in get_args(returns)
    ):
        emits.append(type(None))
    return StepConfig(
        accepted_events=accepts,
        event_name=event_name,
        return_types=emits,
        context_parameter=context_parameter,
        num_workers=num_workers,
        retry_policy=retry,
        resources=resources,
        context_state_type=state_type,
        skip_graph_checks=skip_graph_checks,
        plan=tuple(plan),
        keywords=tuple(keywords),
        free=free,
        collection_param=collection_param,
        collection_policy=collection_policy,
        fan_out_types=listed,
        list_only_types=list_only,
        collect_params=collect_params,
        join_positions=tuple(position for _, _, position in slots) if collect_params else (),
    )


def step_config(fn: object) -> StepConfig | None:
    """The step's config, parsing now a signature whose names were not defined when it was decorated."""
    config = getattr(fn, "_step_config", None)
    if config is None:
        parse = getattr(fn, "_step_parse", None)
        if parse is not None:
            config = fn._step_config = parse()  # type: ignore[attr-defined]
    return config


def make_spec(name: str, fn: Callable[..., Any], config: StepConfig) -> StepSpec:
    """The run loop's view of a step: a free function is wrapped to take the workflow like a method."""
    is_async = inspect.iscoroutinefunction(fn)
    call = fn
    if config.free:
        if is_async:

            async def call(_workflow: Any, *args: Any, **kwargs: Any) -> Any:
                return await fn(*args, **kwargs)
        else:

            def call(_workflow: Any, *args: Any, **kwargs: Any) -> Any:
                return fn(*args, **kwargs)

    if config.collect_params:
        call = join_call(name, call, config, is_async)
    return StepSpec(
        name=name,
        fn=call,
        is_async=is_async,
        accepts=(CollectionReleaseEvent,) if config.collection_param else tuple(config.accepted_events),
        emits=tuple(t for t in config.return_types if t is not type(None)),
        plan=config.plan,
        keywords=config.keywords,
        state_type=config.context_state_type,
        num_workers=config.num_workers,
        retry=config.retry_policy,
        simple=not config.keywords and all(source in (EVENT, CONTEXT) for source in config.plan),
        config=config,
    )


def event_types(hint: Any, allow_none: bool = False) -> tuple[type[Event], ...]:
    """The Event classes of ``A``, ``A | B`` or ``Optional[A]``; empty when it is not made of them."""
    if hint is None or hint is type(None):
        return ()
    if get_origin(hint) in (Union, types.UnionType):
        found: list[type[Event]] = []
        for arg in get_args(hint):
            if arg is type(None):
                if not allow_none:
                    return ()
                continue
            if not (isinstance(arg, type) and issubclass(arg, Event)):
                return ()
            found.append(arg)
        return tuple(found)
    if isinstance(hint, type) and issubclass(hint, Event):
        return (hint,)
    return ()


def _collected(hint: Any, short: str, name: str) -> tuple[tuple[type[Event], ...], Collect] | None:
    """``list[E]``, ``list[A | B]`` or ``Annotated[list[E], Collect(...)]``: (E types, policy); else None."""
    policy = Collect()
    if get_origin(hint) is Annotated:
        markers = [m for m in hint.__metadata__ if isinstance(m, Collect)]
        if not markers:
            return None
        policy, hint = markers[0], get_args(hint)[0]
        if get_origin(hint) is not list:
            raise WorkflowValidationError(f"{short}: parameter {name!r}: Collect(...) annotates a list[Event]")
    if get_origin(hint) is not list:
        return None
    (item,) = get_args(hint) or (None,)
    events = event_types(item)
    if not events:
        raise WorkflowValidationError(
            f"{short}: parameter {name!r}: a list parameter collects events: list[E] with E a single event "
            f"type or a union of them, not {hint!r}"
        )
    return events, policy


def _listed_types(returns: Any) -> tuple[type[Event], ...]:
    """The E of ``-> list[E]`` (also inside a union: ``list[E] | None``, ``list[A] | B``)."""
    members = get_args(returns) if get_origin(returns) in (Union, types.UnionType) else (returns,)
    found: list[type[Event]] = []
    for member in members:
        if get_origin(member) is list:
            found += [t for t in event_types(next(iter(get_args(member)), None)) if t not in found]
    return tuple(found)


def _without_lists(returns: Any) -> Any:
    """The return annotation without its ``list[...]`` members (``list[A] | B | None`` -> ``B | None``)."""
    if get_origin(returns) is list:
        return None
    if get_origin(returns) in (Union, types.UnionType):
        rest = [member for member in get_args(returns) if get_origin(member) is not list]
        if len(rest) != len(get_args(returns)):
            if not rest:
                return None
            return Union[tuple(rest)] if len(rest) > 1 else rest[0]  # noqa: UP007 - built from a runtime tuple
    return returns
