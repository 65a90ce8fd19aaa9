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

from pydantic import BaseModel, ValidationError

from ._errors import WorkflowValidationError

if TYPE_CHECKING:
    from ._graph import StepGraph

T = TypeVar("T")

Factory = Callable[..., Any]
"""A callable, sync or async, that builds a resource; its parameters may be resources themselves."""

Overrides = tuple[Mapping[object, Factory], ...]
"""Layers of overrides, innermost first; each layer is the caller's own mapping, read live."""

Builds = dict[tuple[Factory, Factory], "asyncio.Future[Any]"]
"""Resources being or already built, by (declared factory, factory in force)."""

_overrides: ContextVar[Overrides] = ContextVar("durableflow_resource_overrides", default=())


class Resource(Generic[T]):
    """Marks a step parameter as injected: ``Annotated[Redis, Resource(get_redis)]``.

    With ``cache=True`` a run builds the resource once and every step of that
    run shares it; with ``cache=False`` every step invocation gets a new one.
    """

    def __init__(self, factory: Callable[..., T], cache: bool = True) -> None:
        self.factory = factory
        self.cache = cache
        self._name: str = getattr(factory, "__qualname__", type(factory).__name__)
        self._is_async = inspect.iscoroutinefunction(factory)
        self._localns: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """What a ``ResourceManager`` knows it by: the factory's qualified name."""
        return self._name

    def __repr__(self) -> str:
        return f"Resource({self.name!r}, cache={self.cache})"

    def use_names(self, localns: dict[str, Any] | None) -> None:
        """Names of the scope the step was written in, for factories whose annotations are strings
        (``from __future__ import annotations``) naming classes defined inside a function."""
        if localns and self._localns is None:
            self._localns = localns

    def dependencies(self) -> list[tuple[str, Resource[Any], Any]]:
        """The factory's parameters annotated ``Annotated[T, Resource(...)]``: resources built for it first."""
        localns = self._localns
        if localns:  # the factory's own module wins over a same-named local of the step's scope
            own = getattr(self.factory, "__globals__", {})
            localns = {k: v for k, v in localns.items() if k not in own}
        try:
            hints = typing.get_type_hints(self.factory, include_extras=True, localns=localns)
        except Exception:  # annotations that do not resolve name no resources
            return []
        found = []
        for name, hint in hints.items():
            if typing.get_origin(hint) is Annotated:
                marker = next((m for m in hint.__metadata__ if isinstance(m, Resource)), None)
                if marker is not None:
                    marker.use_names(self._localns)
                    found.append((name, marker, typing.get_args(hint)[0]))
        return found

    async def call(self, resource_manager: ResourceManager) -> T:
        """Build the resource outside a run (its dependencies too), as a step would receive it."""
        value: T = await ResourceCache((), resource_manager).get(self, None)
        return value


class ResourceConfig(Resource[Any]):
    """A pydantic model read from a JSON file: ``Annotated[Settings, ResourceConfig("settings.json")]``.

    ``path_selector`` ("a.b") picks a nested object; the annotated type (``cls_factory``)
    validates it. The file is looked for when first read, from the directory current then.
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
        super().__init__(self.call, cache=True)
        self._file, self._resolved = config_file, ""
        self.path_selector = path_selector
        self.label, self.description = label, description
        self.cls_factory: type[BaseModel] | None = None

    @property
    def name(self) -> str:
        return self._file + (f".{self.path_selector}" if self.path_selector else "")

    @property
    def config_file(self) -> str:
        """The file's absolute path, found on first use."""
        if not self._resolved:
            path = Path(self._file)
            if not path.is_file():
                # the peer's message, plus where a relative path was looked for: the directory current now
                where = "" if path.is_absolute() else f" (looked for as {path.absolute()})"
                raise FileNotFoundError(f"No such file: {self._file}{where}")
            self._resolved = str(path.resolve())
        return self._resolved

    def dependencies(self) -> list[tuple[str, Resource[Any], Any]]:
        return []

    def call(self) -> Any:  # type: ignore[override]  # reads a file: nothing to build first
        """Read the file, select ``path_selector`` and validate it as ``cls_factory``."""
        try:
            data = json.loads(Path(self.config_file).read_text())
        except json.JSONDecodeError as exc:  # its own message names no file
            raise json.JSONDecodeError(f"{self.config_file} is not valid JSON: {exc.msg}", exc.doc, exc.pos) from None
        walked: list[str] = []
        for key in self.path_selector.split(".") if self.path_selector else ():
            walked.append(key)
            data = data.get(key) if isinstance(data, dict) else None
            if not isinstance(data, dict):
                raise ValueError(
                    f"Expected dictionary for configuration from {self.config_file} at path {'.'.join(walked)}, "
                    f"got: {data!r}"
                )
        if self.cls_factory is None:
            raise ValueError("Class factory should be set to a BaseModel subclass before calling")
        try:
            return self.cls_factory.model_validate(data)
        except ValidationError as exc:
            at = f" at {self.path_selector}" if self.path_selector else ""
            raise _naming_file(exc, self.cls_factory.__name__, f"{self.config_file}{at}") from None


def _naming_file(exc: ValidationError, model: str, source: str) -> ValidationError:
    """``exc`` retitled so that its first line names the file it read, which pydantic's own message does not."""
    try:
        errors = exc.errors(include_url=False)
        return ValidationError.from_exception_data(f"{model} (from {source})", errors)  # type: ignore[arg-type]
    except KeyError:  # an error type pydantic cannot rebuild (a custom one): keep it, with a note
        exc.add_note(f"{model} was read from {source}")
        return exc


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
    resource annotated with it or a subclass of it, and every resource annotated
    loosely (``Any``, or not at all) whose factory built one. A type's override may be
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
        self._built: Builds = {}

    def _factory(self, resource: Resource[Any], annotation: object) -> Factory:
        for layer in self._overrides:
            factory = layer.get(resource.factory)
            if factory is not None:
                return factory
            if isinstance(annotation, type):
                typed = _by_type(layer, resource, lambda key: issubclass(annotation, key))
                if typed is not None:
                    return typed
        return resource.factory

    async def get(
        self,
        resource: Resource[Any],
        annotation: object,
        within: tuple[str, ...] = (),
        scope: Builds | None = None,
    ) -> Any:
        """The resource for one parameter; ``scope`` spans one step's parameters, in which a resource
        marked ``cache=False`` is still built only once (two factories taking it share it)."""
        if self._manager is not None and resource.name in self._manager.resources:
            return self._manager.resources[resource.name]
        if resource.name in within:
            chain = " -> ".join((*within, resource.name))
            raise WorkflowValidationError(f"Circular resource dependency detected: {chain}")
        if isinstance(resource, ResourceConfig) and resource.cls_factory is None and isinstance(annotation, type):
            resource.cls_factory = annotation
        factory = self._factory(resource, annotation)
        if scope is None:
            scope = {}
        builds = self._built if resource.cache else scope
        key = (resource.factory, factory)
        built = builds.get(key)
        if built is None:
            building = self._build(resource, factory, annotation, (*within, resource.name), scope)
            built = builds[key] = asyncio.ensure_future(building)
        try:
            return await asyncio.shield(built)
        except Exception:
            if builds.get(key) is built and built.done():
                del builds[key]  # a failed build is not kept: a retry builds again
            raise

    async def _build(
        self, resource: Resource[Any], factory: Factory, annotation: object, within: tuple[str, ...], scope: Builds
    ) -> Any:
        kwargs = {}
        if factory is resource.factory:  # an override builds its resource its own way
            for name, dependency, wanted in resource.dependencies():
                kwargs[name] = await self.get(dependency, wanted, within, scope)
        value = factory(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        loose = annotation is Any or annotation is object or not isinstance(annotation, type)
        if factory is resource.factory and loose:
            # annotated loosely (Any, object, none): a type's override still replaces what the factory built as
            # one, or a test meaning to fake every Redis client would reach the real server
            override = self._override_by_value(resource, value)
            if override is not None:
                value = override()
                if inspect.isawaitable(value):
                    value = await value
        return value

    def _override_by_value(self, resource: Resource[Any], value: object) -> Factory | None:
        for layer in self._overrides:
            typed = _by_type(layer, resource, lambda key: isinstance(value, key))
            if typed is not None:
                return typed
        return None


def _by_type(
    layer: Mapping[object, Factory], resource: Resource[Any], matches: Callable[[type], bool]
) -> Factory | None:
    """The override of the first type key of ``layer`` that ``matches``, adapted to ``resource``'s factory."""
    for key, candidate in layer.items():
        if isinstance(key, type) and matches(key):
            adapt = getattr(candidate, "for_resource", None)
            return adapt(resource.factory) if adapt is not None else candidate
    return None


def check_resources(graph: StepGraph, manager: ResourceManager, configs: bool, build: bool) -> None:
    """``validate()``'s resource checks: config files that load (also those a factory takes), and
    (``build``) every resource built once."""
    config_errors, build_errors = [], []
    for spec in graph.steps.values():
        for parameter, resource, annotation in spec.config.resources:
            where = f"In step '{spec.name}', parameter '{parameter}'"
            if configs:
                for config, model in _configs_of(resource, annotation, set()):
                    try:
                        config.cls_factory = config.cls_factory or model
                        config.call()
                    except Exception as exc:
                        config_errors.append(f"{where}: {config.name}: {exc}")
            if build and not config_errors:
                try:
                    asyncio.run(ResourceCache(current_overrides(), manager).get(resource, annotation))
                except Exception as exc:
                    build_errors.append(f"{where}: {exc}")
    if config_errors:
        raise WorkflowValidationError(
            "Resource config validation failed:\n" + "\n".join(f"  - {e}" for e in config_errors)
        )
    if build_errors:
        raise WorkflowValidationError("Resource validation failed:\n" + "\n".join(f"  - {e}" for e in build_errors))


def _configs_of(resource: Resource[Any], annotation: Any, seen: set[int]) -> Iterator[tuple[ResourceConfig, Any]]:
    """The ``ResourceConfig``s a resource reads, itself or through its factory's parameters."""
    if id(resource) in seen:  # a cycle: reported when building
        return
    seen.add(id(resource))
    if isinstance(resource, ResourceConfig):
        yield resource, annotation
        return
    for _, dependency, dependency_annotation in resource.dependencies():
        yield from _configs_of(dependency, dependency_annotation, seen)
