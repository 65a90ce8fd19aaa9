"""llama-index-workflows' ``workflows.decorators`` path."""

from . import (
    StepConfig,
    StepGraphCheck,
    WorkflowGraphCheck,
    catch_error,
    step,
)

__all__ = ["StepConfig", "StepGraphCheck", "WorkflowGraphCheck", "catch_error", "step"]
