"""A state on its own as JSON data, laid out as llama-index-workflows lays it out (``state_store``'s
``encode_state`` / ``decode_state``): for code that saves a ``StateStore`` by hand or reads what
``ctx.to_dict()["state"]`` holds. A run's checkpoints keep state their own way.

Untyped state is ``{"_data": {key: serialized value}}``; a typed state is the serializer's text of the
model. Reading goes through the serializer, so a stored class name is never imported.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel

from ._serializers import JsonSerializer
from ._store import DictState, StateStore


class InMemorySerializedState(BaseModel):
    """``StateStore.to_dict()``'s shape: which store wrote it, the state's type, and its data."""

    store_type: Literal["in_memory"] = "in_memory"
    state_type: str = "DictState"
    state_module: str = DictState.__module__
    state_data: Any = None


def encode_state(state: BaseModel | dict[str, Any], serializer: JsonSerializer) -> tuple[Any, str, str]:
    """``(state_data, state_type, state_module)`` for a typed model or a ``DictState`` (any mapping)."""
    if isinstance(state, BaseModel):
        return serializer.serialize(state), type(state).__name__, type(state).__module__
    data = {str(key): serializer.serialize(value) for key, value in state.items()}
    return {"_data": data}, "DictState", DictState.__module__


def decode_state(state_data: Any, serializer: JsonSerializer) -> BaseModel | DictState:
    """The state ``encode_state`` wrote (``None``: an empty ``DictState``; a model: itself)."""
    if state_data is None:
        return DictState()
    if isinstance(state_data, BaseModel):
        return state_data
    if isinstance(state_data, str):
        try:
            parsed = json.loads(state_data)
        except ValueError:
            if serializer.pickles:  # a typed state JSON could not hold, pickled: only when chosen
                return _model(serializer.deserialize(state_data))
            raise ValueError("the state payload is neither JSON nor a pickle this serializer reads") from None
        if isinstance(parsed, dict) and parsed.get("__is_pydantic"):
            return _model(serializer.deserialize(state_data))
        state_data = parsed
    if isinstance(state_data, dict) and isinstance(state_data.get("_data"), dict):
        return DictState({key: serializer.deserialize(text) for key, text in state_data["_data"].items()})
    raise ValueError(
        f"unrecognized state payload ({type(state_data).__name__}): expected {{'_data': {{...}}}} "
        "for untyped state or a serialized model"
    )


def deserialize_state_from_dict(
    payload: dict[str, Any], serializer: JsonSerializer, state_type: Any = None
) -> BaseModel | DictState:
    """The state in a ``StateStore.to_dict()`` payload (``state_type`` is accepted and ignored: the payload says)."""
    return decode_state(parse_in_memory_state(payload).state_data, serializer)


def parse_in_memory_state(data: dict[str, Any]) -> InMemorySerializedState:
    """Read a ``to_dict()`` payload; one written by another kind of store is refused with ``ValueError``."""
    store_type = data.get("store_type", "in_memory")
    if store_type != "in_memory":
        raise ValueError(f"Cannot parse store_type {store_type!r}: only 'in_memory' state is held in the payload")
    return InMemorySerializedState.model_validate({**data, "store_type": "in_memory"})


def store_to_dict(store: StateStore[Any], serializer: JsonSerializer) -> dict[str, Any]:
    state = store._snapshot_state()
    state_data, state_type, state_module = encode_state(state, serializer)
    return InMemorySerializedState(state_type=state_type, state_module=state_module, state_data=state_data).model_dump()


def store_from_dict(data: dict[str, Any], serializer: JsonSerializer) -> StateStore[Any]:
    return StateStore(decode_state(parse_in_memory_state(data).state_data, serializer))


def _model(value: Any) -> BaseModel:
    if not isinstance(value, BaseModel):
        raise ValueError(f"the state payload holds a {type(value).__name__}, not a state model")
    return value
