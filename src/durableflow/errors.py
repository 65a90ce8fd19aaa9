"""llama-index-workflows' ``workflows.errors`` path, its names bound to durableflow's errors.

The peer's names that durableflow spells differently are the same classes here, so an ``except`` written
for the peer catches what durableflow raises (see the README's porting table).
"""

from . import (
    SnapshotError,
    WorkflowCancelledError,
    WorkflowConfigurationError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)

ContextSerdeError = SnapshotError
ContextStateError = WorkflowRuntimeError
WorkflowStepDoesNotExistError = WorkflowRuntimeError
WorkflowCancelledByUser = WorkflowCancelledError

__all__ = [
    "ContextSerdeError",
    "ContextStateError",
    "WorkflowCancelledByUser",
    "WorkflowConfigurationError",
    "WorkflowRuntimeError",
    "WorkflowStepDoesNotExistError",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
]
