"""llama-index-workflows' ``workflows.events`` path: the event classes."""

from . import (
    CollectionReleaseEvent,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    InternalDispatchEvent,
    StartEvent,
    StepFailedEvent,
    StepState,
    StepStateChanged,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)

__all__ = [
    "CollectionReleaseEvent",
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "InternalDispatchEvent",
    "StartEvent",
    "StepFailedEvent",
    "StepState",
    "StepStateChanged",
    "StopEvent",
    "WorkflowCancelledEvent",
    "WorkflowFailedEvent",
    "WorkflowTimedOutEvent",
]
