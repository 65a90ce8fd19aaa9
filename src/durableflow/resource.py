"""llama-index-workflows' ``workflows.resource`` path; ``Resource`` and ``ResourceConfig`` are the classes too."""

from . import (
    Resource,
    ResourceConfig,
    ResourceManager,
)

_Resource = Resource
_ResourceConfig = ResourceConfig

__all__ = ["Resource", "ResourceConfig", "ResourceManager", "_Resource", "_ResourceConfig"]
