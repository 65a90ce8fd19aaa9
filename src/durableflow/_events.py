"""The events steps exchange: pydantic models, plus the four the engine knows by name."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    """Base of every event; subclass it with typed fields."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def get(self, name: str, default: Any = None) -> Any:
        """The field ``name``, or ``default`` when the event has none (handy for extra fields)."""
        return getattr(self, name, default)


class StartEvent(Event):
    """Starts a run; ``wf.run(**fields)`` builds one from its keyword arguments."""

    model_config = ConfigDict(extra="allow")


class StopEvent(Event):
    """Ends a run; awaiting the handler gives ``result`` (or the event itself for a subclass)."""

    model_config = ConfigDict(extra="allow")

    result: Any = None


class InputRequiredEvent(Event):
    """Asks a human for input: written to the stream, and re-sent there after a restore."""

    model_config = ConfigDict(extra="allow")


class HumanResponseEvent(Event):
    """A human's answer, sent from outside with ``handler.send_event``."""

    model_config = ConfigDict(extra="allow")


_BUILTIN = {cls: cls.__name__ for cls in (Event, StartEvent, StopEvent, InputRequiredEvent, HumanResponseEvent)}


def type_key(cls: type[Event]) -> str:
    """The name a snapshot records for an event type: short for built-ins, dotted for user types."""
    return _BUILTIN.get(cls) or f"{cls.__module__}.{cls.__qualname__}"


def run_result(stop: StopEvent) -> Any:
    """What awaiting a finished run gives: the result of a plain ``StopEvent``, else the event."""
    return stop.result if type(stop) is StopEvent else stop
