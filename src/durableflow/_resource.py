"""Resources: objects a step receives from a factory, never serialized, re-created on resume."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Factory = Callable[[], Any]
"""A zero-argument callable, sync or async, that builds a resource."""

Overrides = tuple[Mapping[object, Factory], ...]
"""Layers of overrides, innermost first; each layer is the caller's own mapping, read live."""

_overrides: ContextVar[Overrides] = ContextVar("durableflow_resource_overrides", default=())


class Resource(Generic[T]):
    """Marks a step parameter as injected: ``Annotated[Redis, Resource(get_redis)]``.

    With ``cache=True`` a run builds the resource once and every step of that
    run shares it; with ``cache=False`` every step invocation gets a new one.
    """

    __slots__ = ("cache", "factory")

    def __init__(self, factory: Callable[[], T], cache: bool = True) -> None:
        self.factory = factory
        self.cache = cache

    def __repr__(self) -> str:
        return f"Resource({getattr(self.factory, '__qualname__', self.factory)!r}, cache={self.cache})"


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

    __slots__ = ("_built", "_overrides")

    def __init__(self, overrides: Overrides) -> None:
        self._overrides = overrides
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

    async def get(self, resource: Resource[Any], annotation: object) -> Any:
        factory = self._factory(resource, annotation)
        if not resource.cache:
            return await _build(factory)
        key = (resource.factory, factory)
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = asyncio.ensure_future(_build(factory))
        try:
            return await asyncio.shield(built)
        except Exception:
            if self._built.get(key) is built and built.done():
                del self._built[key]  # a failed build is not cached: a retry builds again
            raise


async def _build(factory: Factory) -> Any:
    value = factory()
    if inspect.isawaitable(value):
        value = await value
    return value
