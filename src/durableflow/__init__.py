"""durableflow: event-driven Python workflows that checkpoint themselves and resume after a crash."""

from ._checkpointer import Append, Checkpointer, GroupCommit, Record, RunInfo, RunStatus, open_checkpointer
from ._clock import Clock, SystemClock, get_clock, use_clock
from ._context import Context
from ._crashpoints import crashpoint
from ._errors import (
    DurableflowError,
    LeaseExpiredError,
    RecoveryLimitError,
    RunConflictError,
    RunExistsError,
    RunLeaseError,
    RunNotFoundError,
    SerializationError,
    SnapshotError,
    StepCrashLoopError,
    StoreUnavailableError,
    WorkflowCancelledError,
    WorkflowConfigurationError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from ._events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    InternalDispatchEvent,
    RestoredError,
    StartEvent,
    StepFailedEvent,
    StepState,
    StepStateChanged,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)
from ._handler import WorkflowHandler
from ._hooks import HookSpecs, hookimpl, plugin_manager
from ._memory import MemoryCheckpointer
from ._postgres import PostgresCheckpointer
from ._redis import RedisCheckpointer
from ._resource import Resource, ResourceConfig, ResourceManager, override_resources
from ._retry import (
    ConstantDelayRetryPolicy,
    ExponentialBackoffRetryPolicy,
    RetryInfo,
    RetryPolicy,
    retry_always,
    retry_never,
    retry_policy,
    stop_never,
)
from ._serializers import JsonSerializer, PickleSerializer
from ._sqlite import SQLiteCheckpointer
from ._step import StepConfig, catch_error, step
from ._store import DictState, in_memory_state_store
from ._test_runner import WorkflowTestResult, WorkflowTestRunner
from ._validation import GraphValidationError, build_step_graph, validate_graph
from ._worker import Worker, WorkerStats
from ._workflow import Workflow

__all__ = [
    "Append",
    "Checkpointer",
    "Clock",
    "ConstantDelayRetryPolicy",
    "Context",
    "DictState",
    "DurableflowError",
    "Event",
    "ExponentialBackoffRetryPolicy",
    "GraphValidationError",
    "GroupCommit",
    "HookSpecs",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "InternalDispatchEvent",
    "JsonSerializer",
    "LeaseExpiredError",
    "MemoryCheckpointer",
    "PickleSerializer",
    "PostgresCheckpointer",
    "Record",
    "RecoveryLimitError",
    "RedisCheckpointer",
    "Resource",
    "ResourceConfig",
    "ResourceManager",
    "RestoredError",
    "RetryInfo",
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
    "StepConfig",
    "StepCrashLoopError",
    "StepFailedEvent",
    "StepState",
    "StepStateChanged",
    "StopEvent",
    "StoreUnavailableError",
    "SystemClock",
    "Worker",
    "WorkerStats",
    "Workflow",
    "WorkflowCancelledError",
    "WorkflowCancelledEvent",
    "WorkflowConfigurationError",
    "WorkflowFailedEvent",
    "WorkflowHandler",
    "WorkflowRuntimeError",
    "WorkflowTestResult",
    "WorkflowTestRunner",
    "WorkflowTimedOutEvent",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "build_step_graph",
    "catch_error",
    "crashpoint",
    "get_clock",
    "hookimpl",
    "in_memory_state_store",
    "open_checkpointer",
    "override_resources",
    "plugin_manager",
    "retry_always",
    "retry_never",
    "retry_policy",
    "step",
    "stop_never",
    "use_clock",
    "validate_graph",
]
