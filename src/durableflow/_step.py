"""The ``@step`` decorator and what it learns from a step's signature."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, overload

from pydantic import BaseModel

from ._errors import WorkflowValidationError
from ._events import Event
from ._resource import Resource
from ._retry import RetryPolicy

F = TypeVar("F", bound=Callable[..., Any])

EVENT = "event"
CONTEXT = "ctx"


@dataclass(frozen=True)
class StepOptions:
    num_workers: int
    retry: RetryPolicy | None


@overload
def step(fn: F, /) -> F: ...
@overload
def step(*, num_workers: int = 4, retry: RetryPolicy | None = None) -> Callable[[F], F]: ...


def step(fn: F | None = None, /, *, num_workers: int = 4, retry: RetryPolicy | None = None) -> F | Callable[[F], F]:
    """Make a workflow method a step: it runs on each event its input annotation accepts.

    ``num_workers`` bounds how many of its invocations run at once; ``retry``
    decides whether a step that raised runs again (``ctx.attempt`` tells which try it is).
    """
    if not isinstance(num_workers, int) or num_workers < 1:
        raise WorkflowValidationError(f"@step(num_workers={num_workers!r}): num_workers must be an int >= 1")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise WorkflowValidationError(f"@step(retry={retry!r}): a retry policy needs a next() method")

    def mark(f: F) -> F:
        f.__durableflow_step__ = StepOptions(num_workers, retry)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


@dataclass(frozen=True, eq=False)
class StepSpec:
    """One step as the run loop sees it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    accepts: tuple[type[Event], ...]
    emits: tuple[type[Event], ...]
    plan: tuple[Any, ...]  # per positional argument: EVENT, CONTEXT or (Resource, annotation)
    keywords: tuple[str, ...]  # names of the trailing arguments passed by keyword
    state_type: type[BaseModel] | None
    num_workers: int
    retry: RetryPolicy | None
    simple: bool  # only the event and ctx, positionally: the run loop's fast path


def step_options(fn: object) -> StepOptions | None:
    return getattr(fn, "__durableflow_step__", None)


def parse_step(name: str, fn: Callable[..., Any], options: StepOptions) -> StepSpec:
    """Read a step's signature; a ``WorkflowValidationError`` names the step and the problem."""

    def invalid(problem: str) -> WorkflowValidationError:
        return WorkflowValidationError(f"step {name!r}: {problem}")

    from ._context import Context  # the annotation users write; imported late to avoid a cycle

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # a forward reference that does not resolve
        raise invalid(f"cannot resolve its annotations ({exc})") from exc

    plan: list[Any] = []
    keywords: list[str] = []
    accepts: tuple[type[Event], ...] = ()
    state_type: type[BaseModel] | None = None
    parameters = list(inspect.signature(fn).parameters.values())[1:]  # after self
    for param in parameters:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise invalid(f"parameter {param.name!r}: *args and **kwargs cannot be injected")
        if param.name not in hints:
            raise invalid(f"parameter {param.name!r} has no annotation; annotate the event, ctx and resources")
        hint = hints[param.name]
        if get_origin(hint) is Annotated:
            resources = [m for m in hint.__metadata__ if isinstance(m, Resource)]
            if not resources:
                raise invalid(f"parameter {param.name!r}: Annotated[...] without a Resource(...)")
            source: Any = (resources[0], get_args(hint)[0])
        elif hint is Context or get_origin(hint) is Context:
            source = CONTEXT
            args = get_args(hint)
            if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                state_type = args[0]
        else:
            events = _event_types(hint)
            if not events:
                raise invalid(
                    f"parameter {param.name!r}: {hint!r} is neither an Event, a Context nor Annotated[T, Resource(...)]"
                )
            if accepts:
                raise invalid(f"parameter {param.name!r}: a step takes exactly one event parameter")
            accepts, source = events, EVENT
        if param.kind is param.KEYWORD_ONLY:
            keywords.append(param.name)
        elif keywords:
            raise invalid(f"parameter {param.name!r}: positional after keyword-only")
        plan.append(source)
    if not accepts:
        raise invalid("no parameter is annotated with an Event type, so nothing can start it")
    if "return" not in hints:
        raise invalid("no return annotation; name the events it emits (or None)")
    emits = _event_types(hints["return"], allow_none=True)
    if not emits and hints["return"] not in (None, type(None)):
        raise invalid(f"return annotation {hints['return']!r} must be Event types and/or None")
    return StepSpec(
        name=name,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        accepts=accepts,
        emits=emits,
        plan=tuple(plan),
        keywords=tuple(keywords),
        state_type=state_type,
        num_workers=options.num_workers,
        retry=options.retry,
        simple=not keywords and all(source in (EVENT, CONTEXT) for source in plan),
    )


def _event_types(hint: Any, allow_none: bool = False) -> tuple[type[Event], ...]:
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
