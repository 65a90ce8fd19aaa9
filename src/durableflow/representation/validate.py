"""llama-index-workflows' ``workflows.representation.validate`` path."""

from .. import GraphValidationError, build_step_graph, validate_graph

__all__ = ["GraphValidationError", "build_step_graph", "validate_graph"]
