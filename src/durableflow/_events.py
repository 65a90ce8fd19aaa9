"""The events steps exchange: pydantic models that keep undeclared fields, plus the ones the engine knows by name."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    model_serializer,
)


class Event(BaseModel):
    """Base of every event: typed fields as in any pydantic model, and undeclared ones kept too.

    ``Event(msg="x")`` keeps ``msg``: read it as ``ev.msg``, ``ev["msg"]`` or
    ``ev.get("msg")``. Undeclared fields (``ev._data``) travel with the event
    through the stream, checkpoints and resume, and ``model_dump()`` holds them
    beside the declared ones. They are pydantic's own extra fields, so an event
    costs nothing more to build than a plain model.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="allow")

    @property
    def _data(self) -> dict[str, Any]:
        """The undeclared fields (a live dict)."""
        extra = self.__pydantic_extra__
        if extra is None:  # a subclass that forbids extra fields
            extra = {}
        return extra

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__private_attributes__:  # only these pay for it: an event is built on every step
            init_private = cls.model_post_init

            def set_private_from_kwargs(self: Event, context: Any, /) -> None:
                # Event(_secret=...) sets the declared private attribute (pydantic would keep it as an
                # extra field); being private, it is not stored, as the class declared.
                init_private(self, context)
                extra = self.__pydantic_extra__
                if extra:
                    for name in [key for key in extra if key in cls.__private_attributes__]:
                        setattr(self, name, extra.pop(name))

            cls.model_post_init = set_private_from_kwargs  # type: ignore[method-assign,assignment]

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # the undeclared fields' names, as a dict would
        return iter(self._data)

    def __bool__(self) -> bool:
        return True

    def get(self, key: str, default: Any = None) -> Any:
        """The undeclared field ``key`` (or a declared one of that name), else ``default``."""
        data = self._data
        if key in data:
            return data[key]
        return getattr(self, key, default) if key in type(self).__pydantic_fields__ else default

    def keys(self) -> KeysView[str]:
        return self._data.keys()

    def values(self) -> ValuesView[Any]:
        return self._data.values()

    def items(self) -> ItemsView[str, Any]:
        return self._data.items()

    def to_dict(self) -> dict[str, Any]:
        """The undeclared fields."""
        return self._data


class StartEvent(Event):
    """Starts a run; ``wf.run(**fields)`` builds one from its keyword arguments."""


class StopEvent(Event):
    """Ends a run; awaiting the handler gives ``result`` (or the event itself for a subclass).

    Its dump holds ``result`` only when one was given, as llama-index-workflows' does.
    """

    result: Any = None

    @model_serializer(mode="wrap")
    def _dump_without_unset_result(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("result", 0) is None:
            del data["result"]
        return data

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v!r}" for k, v in {**self._data, **self.model_dump()}.items())
        return f"{type(self).__name__}({parts})"

    def __str__(self) -> str:
        return str(self.result)


class InputRequiredEvent(Event):
    """Asks a human for input: written to the stream, and re-sent there after a restore."""


class HumanResponseEvent(Event):
    """A human's answer, sent from outside with ``handler.send_event``."""


class RestoredError(Exception):
    """A step's exception as a checkpoint keeps it: its type's name and message. Nothing is imported to
    rebuild the original type, since a store is data; ``type_name`` says what it was."""

    def __init__(self, message: str, type_name: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name


def _dump_error(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, RestoredError):
        return {"type": exc.type_name, "message": str(exc)}
    cls = type(exc)
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "message": str(exc)}


def _load_error(value: Any) -> BaseException:
    if isinstance(value, BaseException):
        return value
    return RestoredError(str(value["message"]), str(value["type"]))


EVENT_TYPES = "durableflow.event_types"
"""The validation-context key of a workflow's declared event types, by ``type_key``."""


def _dump_inner_event(event: Event) -> dict[str, Any]:
    """An event inside another, laid out as llama-index-workflows' ``JsonSerializer`` lays it out: its
    fields under its class's name. A batch's members go too: the fan-in buffer that held them is gone
    once the step that failed on them is retired."""
    cls = type(event)
    value: dict[str, Any] = event.model_dump(mode="json")
    if isinstance(event, CollectionReleaseEvent):
        value["events"] = [_dump_inner_event(member) for member in event.events]
    return {"__is_pydantic": True, "value": value, "qualified_name": f"{cls.__module__}.{cls.__qualname__}"}


def _load_inner_event(value: Any, info: ValidationInfo) -> Event:
    """The stored event as its own class if the workflow declares one of that name (``load_event(types=)``),
    else as a plain ``Event`` with its fields: a store is data, so a stored name is looked up, never imported."""
    if isinstance(value, Event):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"expected an event's fields, found {type(value).__name__}")
    if value.get("__is_pydantic") is not True or not isinstance(value.get("value"), dict):
        return Event(**value)
    types = info.context.get(EVENT_TYPES) if isinstance(info.context, dict) else None
    cls = _declared(str(value.get("qualified_name", "")), types or {})
    if cls is None:
        return Event(**value["value"])
    return cls.model_validate(value["value"], context=info.context)


def _declared(qualified_name: str, types: Mapping[str, type[Event]]) -> type[Event] | None:
    """The declared type a ``module.Qualname`` names: the longest tail of it that is a ``type_key`` (which
    leaves the module out, so a script's ``__main__`` class is found under the module it is imported as)."""
    name = qualified_name
    while name:
        cls = types.get(name)
        if cls is not None:
            return cls
        name = name.partition(".")[2]
    return None


StoredError = Annotated[BaseException, PlainSerializer(_dump_error), PlainValidator(_load_error)]
"""An exception field of an event: stored as its type's name and message, restored as ``RestoredError``."""

AnyEvent = Annotated[Event, PlainSerializer(_dump_inner_event), PlainValidator(_load_inner_event)]
"""An event field of an event (``StepFailedEvent.input_event``): stored with its class's name, restored as it."""


class WorkflowTimedOutEvent(StopEvent):
    """Written to the stream when a run passes its deadline, before awaiting it raises ``WorkflowTimeoutError``."""

    timeout: float
    active_steps: list[str]


class WorkflowCancelledEvent(StopEvent):
    """Written to the stream when a run is cancelled, before awaiting it raises ``WorkflowCancelledError``."""


class WorkflowFailedEvent(StopEvent):
    """Written to the stream when a step fails for good, before awaiting the run raises the step's error."""

    step_name: str
    exception: StoredError
    attempts: int | None = None
    elapsed_seconds: float | None = None


class StepFailedEvent(Event):
    """What a ``@catch_error`` step receives when a step has failed for good."""

    step_name: str
    input_event: AnyEvent
    exception: StoredError
    attempts: int
    elapsed_seconds: float
    failed_at: datetime


class CollectionReleaseEvent(Event):
    """What starts a step taking ``list[E]``: one batch a fan-out gathered (``events``).

    Stored without ``events``: the batch stays in the run's fan-in buffer until the step
    completes, and is read from there at each (re)delivery, after a crash too.
    """

    events: list[AnyEvent] = Field(default_factory=list, exclude=True)
    stream_id: str = ""
    binding_id: str = ""


class InternalDispatchEvent(Event):
    """Events about the engine itself, streamed only with ``stream_events(expose_internal=True)``."""


class StepState(Enum):
    PREPARING = "preparing"
    RUNNING = "running"
    NOT_RUNNING = "not_running"


class StepStateChanged(InternalDispatchEvent):
    """A step started or finished working on an event."""

    name: str
    step_state: StepState
    worker_id: str
    input_event_name: str
    output_event_name: str | None = None


_BUILTIN = {
    cls: cls.__name__
    for cls in (
        Event,
        StartEvent,
        StopEvent,
        InputRequiredEvent,
        HumanResponseEvent,
        WorkflowTimedOutEvent,
        WorkflowCancelledEvent,
        WorkflowFailedEvent,
    )
}
_RESERVED = set(_BUILTIN.values())


def type_key(cls: type[Event]) -> str:
    """The name a snapshot records for an event type: never its module, so a script's
    ``__main__`` types load in a process that imports the script under its own name."""
    name = _BUILTIN.get(cls)
    if name is not None:
        return name
    qualname = cls.__qualname__
    return f"{cls.__module__}.{qualname}" if qualname in _RESERVED else qualname


def load_event(cls: type[Event], data: dict[str, Any], types: Mapping[str, type[Event]] | None = None) -> Event:
    """An event of type ``cls`` from its ``model_dump()``, undeclared fields included; an event stored inside
    it (``StepFailedEvent.input_event``) comes back as its own class when ``types`` (a workflow's, by
    ``type_key``) has it."""
    if types is None:
        return cls.model_validate(data)
    return cls.model_validate(data, context={EVENT_TYPES: types})


def run_result(stop: StopEvent) -> Any:
    """What awaiting a finished run gives: the result of a plain ``StopEvent``, else the event."""
    return stop.result if type(stop) is StopEvent else stop


def event_fields(event: Event) -> dict[str, Any]:
    """An event's fields as JSON data for people to read: declared and undeclared side by side."""
    data: dict[str, Any] = event.model_dump(mode="json")
    return data
