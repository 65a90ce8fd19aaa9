"""llama-index-workflows' ``workflows.collect`` path: how a ``list[E]`` parameter's batch is released."""

from ._fanplan import All, Cardinality, Collect, Take

__all__ = ["All", "Cardinality", "Collect", "Take"]
