"""llama-index-workflows' ``workflows.context.serializers`` path.

JSON is the default and the peer's ``BaseSerializer``; pickle only when chosen (see the README).
"""

from .. import JsonSerializer, PickleSerializer

BaseSerializer = JsonSerializer
JsonPickleSerializer = PickleSerializer

__all__ = ["BaseSerializer", "JsonPickleSerializer", "JsonSerializer", "PickleSerializer"]
