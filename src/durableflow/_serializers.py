"""The ``serializer=`` choice: JSON (the default, data only) or pickle (explicit opt-in, code).

``JsonSerializer`` turns values into JSON text; a pydantic model travels with
its class's qualified name and comes back as a class already loaded in this
process, or, given ``allowed_types``, only as one of those: reading never
imports anything. ``PickleSerializer`` additionally stores what JSON cannot
hold, as a pickle. Unpickling runs code named by the stored bytes, so use it
only with stores written by you; a workflow uses it only when given
``serializer=PickleSerializer()``.
"""

from __future__ import annotations

import base64
import json
import pickle
import sys
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from ._errors import SerializationError


class JsonSerializer:
    """JSON text; pydantic models (events included) are tagged with their class and rebuilt as it."""

    pickles = False

    def __init__(self, *, allowed_types: Iterable[type[Any] | str] | None = None) -> None:
        self._types: dict[str, type[Any]] = {}
        self._allowed: frozenset[str] | None = None
        """``None``: any loaded class; else an allowlist (classes and names), durableflow's own classes always in."""
        if allowed_types is None:
            return
        names: set[str] = set()
        for entry in allowed_types:
            if isinstance(entry, str):  # a name: allowed once its class is loaded
                names.add(entry)
            elif isinstance(entry, type):
                for name in (f"{entry.__module__}.{entry.__qualname__}", f"{entry.__module__}.{entry.__name__}"):
                    claimed = self._types.setdefault(name, entry)
                    if claimed is not entry:
                        raise ValueError(f"two classes are stored under the name {name}: {claimed!r} and {entry!r}")
                    names.add(name)
            else:
                raise TypeError(f"allowed_types takes classes or qualified class names, not {entry!r}")
        self._allowed = frozenset(names)

    def resolve_class(self, qualified_name: str) -> type[Any]:
        """The class a stored name means: one given in ``allowed_types``, or one already loaded (never imported).

        With ``allowed_types``, a name outside it is refused even if its class is
        loaded (durableflow's own classes, such as ``DictState``, always resolve).
        """
        cls = self._types.get(qualified_name)
        if cls is not None:
            return cls
        if (
            self._allowed is not None
            and qualified_name not in self._allowed
            and not qualified_name.startswith("durableflow.")
        ):
            raise SerializationError(
                f"Refusing to import disallowed class {qualified_name!r}: it is not in this serializer's "
                f"allowed_types; pass JsonSerializer(allowed_types=[..., {qualified_name.rpartition('.')[2]}]) to "
                "read it (stored names are never imported)"
            )
        module_name, _, qualname = qualified_name.rpartition(".")
        found: Any = sys.modules.get(module_name)
        while found is None and "." in module_name:  # a nested class: Outer.Inner
            module_name, _, outer = module_name.rpartition(".")
            found, qualname = sys.modules.get(module_name), f"{outer}.{qualname}"
        for part in qualname.split(".") if found is not None else ():
            found = getattr(found, part, None)
        if not (isinstance(found, type) and issubclass(found, BaseModel)):
            raise SerializationError(
                f"stored value names class {qualified_name!r}, which is not loaded here; pass it in "
                "JsonSerializer(allowed_types=[...]) (stored names are never imported)"
            )
        return found

    def serialize_value(self, value: Any) -> Any:
        if isinstance(value, BaseModel):
            cls = type(value)
            return {
                "__is_pydantic": True,
                "value": value.model_dump(mode="json"),
                "qualified_name": f"{cls.__module__}.{cls.__qualname__}",
            }
        if isinstance(value, dict):
            return {k: self.serialize_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.serialize_value(v) for v in value]
        return value

    def deserialize_value(self, data: Any) -> Any:
        from ._events import Event, load_event  # events keep their undeclared fields

        if isinstance(data, dict):
            if data.get("__is_pydantic") and data.get("qualified_name"):
                cls = self.resolve_class(data["qualified_name"])
                return load_event(cls, data["value"]) if issubclass(cls, Event) else cls.model_validate(data["value"])
            return {k: self.deserialize_value(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.deserialize_value(v) for v in data]
        return data

    def serialize(self, value: Any) -> str:
        try:
            return json.dumps(self.serialize_value(value), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Failed to serialize value: {type(value)}: {value!s} ({exc})") from None

    def deserialize(self, value: str) -> Any:
        return self.deserialize_value(json.loads(value))


class PickleSerializer(JsonSerializer):
    """JSON when it can, pickle when it cannot. Unpickling runs code: only for stores you write yourself."""

    pickles = True

    def serialize(self, value: Any) -> str:
        try:
            return super().serialize(value)
        except ValueError:
            return base64.b64encode(pickle.dumps(value)).decode()

    def deserialize(self, value: str) -> Any:
        try:
            return super().deserialize(value)
        except ValueError:
            return pickle.loads(base64.b64decode(value))


Serializer = JsonSerializer
"""What ``Workflow(serializer=...)`` takes: a ``JsonSerializer`` or a ``PickleSerializer``."""
