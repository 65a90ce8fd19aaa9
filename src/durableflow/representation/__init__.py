"""llama-index-workflows' ``workflows.representation`` path: the step graph and its checks."""

from .validate import GraphValidationError, build_step_graph, validate_graph

__all__ = ["GraphValidationError", "build_step_graph", "validate_graph"]
