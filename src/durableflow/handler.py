"""llama-index-workflows' ``workflows.handler`` path."""

from . import (
    WorkflowHandler,
)

__all__ = ["WorkflowHandler"]
