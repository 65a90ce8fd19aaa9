"""llama-index-workflows' ``workflows.context`` path: the context and its serializers."""

from .. import Context
from .serializers import BaseSerializer, JsonPickleSerializer, JsonSerializer, PickleSerializer

__all__ = ["BaseSerializer", "Context", "JsonPickleSerializer", "JsonSerializer", "PickleSerializer"]
