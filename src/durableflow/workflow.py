"""llama-index-workflows' ``workflows.workflow`` path."""

from . import (
    Workflow,
)

__all__ = ["Workflow"]
