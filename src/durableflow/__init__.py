"""durableflow: event-driven Python workflows that checkpoint themselves and resume after a crash."""

from ._checkpointer import Append, Checkpointer, GroupCommit, Record, RunInfo, RunStatus, open_checkpointer
from ._clock import Clock, SystemClock, get_clock, use_clock
from ._context import Context
from ._crashpoints import crashpoint
from ._errors import (
    DurableflowError,
    RecoveryLimitError,
    RunConflictError,
    RunExistsError,
    RunLeaseError,
    RunNotFoundError,
    SerializationError,
    SnapshotError,
    StoreUnavailableError,
    WorkflowCancelledError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from ._events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from ._handler import WorkflowHandler
from ._hooks import HookSpecs, hookimpl, plugin_manager
from ._memory import MemoryCheckpointer
from ._redis import RedisCheckpointer
from ._resource import Resource, override_resources
from ._retry import ConstantDelayRetryPolicy, ExponentialBackoffRetryPolicy, RetryPolicy
from ._sqlite import SQLiteCheckpointer
from ._step import step
from ._workflow import Workflow

__all__ = [
    "Append",
    "Checkpointer",
    "Clock",
    "ConstantDelayRetryPolicy",
    "Context",
    "DurableflowError",
    "Event",
    "ExponentialBackoffRetryPolicy",
    "GroupCommit",
    "HookSpecs",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "MemoryCheckpointer",
    "Record",
    "RecoveryLimitError",
    "RedisCheckpointer",
    "Resource",
    "RetryPolicy",
    "RunConflictError",
    "RunExistsError",
    "RunInfo",
    "RunLeaseError",
    "RunNotFoundError",
    "RunStatus",
    "SQLiteCheckpointer",
    "SerializationError",
    "SnapshotError",
    "StartEvent",
    "StopEvent",
    "StoreUnavailableError",
    "SystemClock",
    "Workflow",
    "WorkflowCancelledError",
    "WorkflowHandler",
    "WorkflowRuntimeError",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "crashpoint",
    "get_clock",
    "hookimpl",
    "open_checkpointer",
    "override_resources",
    "plugin_manager",
    "step",
    "use_clock",
]
