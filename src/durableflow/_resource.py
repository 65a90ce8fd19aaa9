"""Resources: objects a step receives from a factory, never serialized, re-created on resume.

A factory may itself take resources (``Annotated[T, Resource(other)]``
parameters), and ``ResourceConfig`` builds a pydantic model from a JSON file.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from pydantic import BaseModel

from ._errors import WorkflowValidationError

if TYPE_CHECKING:
    from ._graph import StepGraph

T = TypeVar("T")

Factory = Callable[..., Any]
"""A callable, sync or async, that builds a resource; its parameters may be resources themselves."""

Overrides = tuple[Mapping[object, Factory], ...]
"""Layers of overrides, innermost first; each layer is the caller's own mapping, read live."""

_overrides: ContextVar[Overrides] = ContextVar("durableflow_resource_overrides", default=())


class Resource(Generic[T]):
    """Marks a step parameter as injected: ``Annotated[Redis, Resource(get_redis)]``.

    With ``cache=True`` a run builds the resource once and every step of that
    run shares it; with ``cache=False`` every step invocation gets a new one.
    """

    def __init__(self, factory: Callable[..., T], cache: bool = True) -> None:
        self.factory = factory
        self.cache = cache
        self.name: str = getattr(factory, "__qualname__", type(factory).__name__)

    def __repr__(self) -> str:
        return f"Resource({self.name!r}, cache={self.cache})"

    def dependencies(self) -> list[tuple[str, Resource[Any], Any]]:
        """The factory's parameters annotated ``Annotated[T, Resource(...)]``: resources built for it first."""
        try:
            hints = typing.get_type_hints(self.factory, include_extras=True)
        except Exception:  # annotations that do not resolve name no resources
            return []
        found = []
        for name, hint in hints.items():
            if typing.get_origin(hint) is Annotated:
                marker = next((m for m in hint.__metadata__ if isinstance(m, Resource)), None)
                if marker is not None:
                    found.append((name, marker, typing.get_args(hint)[0]))
        return found


class ResourceConfig(Resource[Any]):
    """A pydantic model read from a JSON file: ``Annotated[Settings, ResourceConfig("settings.json")]``.

    ``path_selector`` ("a.b") picks a nested object; the annotated type validates it.
    """

    def __init__(
        self,
        config_file: str,
        path_selector: str | None = None,
        label: str | None = None,
        description: str | None = None,
    ) -> None:
        if Path(config_file).suffix != ".json":
            raise ValueError("Only JSON files can be used to load Pydantic-based resources.")
        super().__init__(self._load, cache=True)
        self.config_file, self.path_selector = config_file, path_selector
        self.label, self.description = label, description
        self.name = config_file + (f".{path_selector}" if path_selector else "")
        self.model: type[BaseModel] | None = None

    def dependencies(self) -> list[tuple[str, Resource[Any], Any]]:
        return []

    def _load(self) -> Any:
        path = Path(self.config_file)
        if not path.is_file():
            raise FileNotFoundError(f"No such file: {self.config_file}")
        data = json.loads(path.read_text())
        for key in (self.path_selector or "").split(".") if self.path_selector else ():
            data = data.get(key) if isinstance(data, dict) else None
            if not isinstance(data, dict):
                raise ValueError(f"Expected dictionary for configuration from {self.config_file} at path {key}")
        if self.model is None:
            raise ValueError("Class factory should be set to a BaseModel subclass before calling")
        return self.model.model_validate(data)


class ResourceManager:
    """Resources set by name before a run (``await manager.set(name, value)``), served instead of building them.

    A resource's name is its factory's qualified name (a ``ResourceConfig``'s, its file).
    """

    def __init__(self) -> None:
        self.resources: dict[str, Any] = {}

    async def set(self, name: str, val: Any) -> None:
        self.resources[name] = val

    def get_all(self) -> dict[str, Any]:
        return self.resources


@contextmanager
def override_resources(overrides: Mapping[object, Factory]) -> Iterator[None]:
    """Serve resources from other factories while the block runs, without touching the workflow.

    Keys are either the original factory or a type: a type replaces every
    resource annotated with it or a subclass of it. A type's override may be
    an object with a ``for_resource(factory)`` method: it is handed each
    factory it replaces and returns the one to use (the pytest plugin serves
    fake Redis clients so, configured like the real client each would build). Runs started (or resumed)
    inside the block keep the overrides until they end. Blocks nest: the
    innermost block that covers a resource wins, and within one block its
    factory key beats a type key. The mapping is read live, so entries added
    to it later apply to resources built later.
    """
    token = _overrides.set((overrides, *_overrides.get()))
    try:
        yield
    finally:
        _overrides.reset(token)


def current_overrides() -> Overrides:
    """The overrides in force here; a run captures them when it starts."""
    return _overrides.get()


class ResourceCache:
    """Builds one run's resources, applying its overrides, caching those marked ``cache``."""

    __slots__ = ("_built", "_manager", "_overrides")

    def __init__(self, overrides: Overrides, manager: ResourceManager | None = None) -> None:
        self._overrides = overrides
        self._manager = manager
        # (declared factory, factory in force) -> the build: steps that each write
        # Resource(same_factory) share it, and concurrent first uses wait for one build
        self._built: dict[tuple[Factory, Factory], asyncio.Future[Any]] = {}

    def _factory(self, resource: Resource[Any], annotation: object) -> Factory:
        for layer in self._overrides:
            factory = layer.get(resource.factory)
            if factory is not None:
                return factory
            if isinstance(annotation, type):
                for key, candidate in layer.items():
                    if isinstance(key, type) and issubclass(annotation, key):
                        adapt = getattr(candidate, "for_resource", None)
                        return adapt(resource.factory) if adapt is not None else candidate
        return resource.factory

    async def get(self, resource: Resource[Any], annotation: object, within: tuple[str, ...] = ()) -> Any:
        if self._manager is not None and resource.name in self._manager.resources:
            return self._manager.resources[resource.name]
        if resource.name in within:
            chain = " -> ".join((*within, resource.name))
            raise WorkflowValidationError(f"Circular resource dependency detected: {chain}")
        if isinstance(resource, ResourceConfig) and resource.model is None and isinstance(annotation, type):
            resource.model = annotation
        factory = self._factory(resource, annotation)
        if not resource.cache:
            return await self._build(resource, factory, (*within, resource.name))
        key = (resource.factory, factory)
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = asyncio.ensure_future(self._build(resource, factory, (*within, resource.name)))
        try:
            return await asyncio.shield(built)
        except Exception:
            if self._built.get(key) is built and built.done():
                del self._built[key]  # a failed build is not cached: a retry builds again
            raise

    async def _build(self, resource: Resource[Any], factory: Factory, within: tuple[str, ...]) -> Any:
        kwargs = {}
        if factory is resource.factory:  # an override builds its resource its own way
            for name, dependency, annotation in resource.dependencies():
                kwargs[name] = await self.get(dependency, annotation, within)
        value = factory(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value


def check_resources(graph: StepGraph, manager: ResourceManager, configs: bool, build: bool) -> None:
    """``validate()``'s resource checks: config files that load, and (``build``) every resource built once."""
    errors = []
    for spec in graph.steps.values():
        for parameter, resource, annotation in spec.config.resources:
            where = f"In step '{spec.name}', parameter '{parameter}'"
            if configs and isinstance(resource, ResourceConfig):
                try:
                    resource.model = resource.model or annotation
                    resource._load()
                except Exception as exc:
                    errors.append(f"{where}: {exc}")
            if build:
                try:
                    asyncio.run(ResourceCache(current_overrides(), manager).get(resource, annotation))
                except Exception as exc:
                    errors.append(f"{where}: {exc}")
    if errors:
        raise WorkflowValidationError("Resource validation failed:\n" + "\n".join(f"  - {e}" for e in errors))
