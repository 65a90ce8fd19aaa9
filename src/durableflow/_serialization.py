"""How values are stored: as JSON text, checked when stored, decoded without importing anything.

JSON data goes as is; an event of a type the workflow declares goes as
``{"__event__": "<type>", "data": {...}}`` and comes back as that event.
Nothing else is accepted, so a snapshot can never name code to run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, final

from ._errors import SerializationError, SnapshotError
from ._events import Event, load_event, type_key

EVENT_TAG = "__event__"

_HINT = (
    "store JSON data (dict, list, str, int, float, bool, None), an event the workflow declares, "
    "or declare a typed state model with Context[State]"
)

compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""JSON text without spaces; built once, since ``json.dumps`` with options builds an encoder per call."""


_NONE = object()
_NESTED = (dict, list, tuple)


def _non_string_key(value: Any) -> Any:
    """The first dict key in ``value`` that is not a string, or ``_NONE``."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    return key
                if isinstance(inner, _NESTED):
                    pending.append(inner)
        elif isinstance(item, list | tuple):
            pending.extend(inner for inner in item if isinstance(inner, _NESTED))
    return _NONE


@final
class ValueCodec:
    """Encodes and decodes stored values for one workflow, knowing the event types it declares."""

    def __init__(self, types: Mapping[str, type[Event]]) -> None:
        self.types = types
        self._encode = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=self._event_as_json
        ).encode

    def dump(self, value: Any, where: str) -> str:
        """``value`` as compact JSON text; ``SerializationError`` names ``where`` and the offending type."""
        try:
            text = self._encode(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"cannot store {where}: {exc}; {_HINT}") from None
        if "{" in text and (key := _non_string_key(value)) is not _NONE:
            # JSON would turn it into a string silently, and 1 and "1" into one key
            raise SerializationError(
                f"cannot store {where}: a dict key {key!r} of type {type(key).__name__} is not a string; "
                "JSON keys are strings, so convert the keys (str(key)) or store a list of pairs"
            )
        return text

    def load(self, text: str) -> Any:
        """The value ``dump`` wrote; events come back as instances of the declared type."""
        if EVENT_TAG not in text:
            return json.loads(text)
        return json.loads(text, object_hook=self._event_from_json)

    def _event_as_json(self, obj: Any) -> Any:
        cls = type(obj)
        if isinstance(obj, Event) and self.types.get(type_key(cls)) is cls:
            return {EVENT_TAG: type_key(cls), "data": obj.model_dump(mode="json")}
        raise TypeError(f"a {cls.__module__}.{cls.__qualname__} is not JSON")

    def _event_from_json(self, obj: dict[str, Any]) -> Any:
        if EVENT_TAG in obj and len(obj) == 2 and "data" in obj:
            cls = self.types.get(obj[EVENT_TAG])
            if cls is None:
                raise SnapshotError(
                    f"a stored value names event type {obj[EVENT_TAG]!r}, which the workflow does not declare"
                )
            return load_event(cls, obj["data"])
        return obj
