"""A state saved on its own (encode_state / decode_state, StateStore.to_dict / from_dict), in the layout
llama-index-workflows uses, read back through the serializer: never importing a stored class name."""

import base64
import json
import pickle
import sys

import pytest
from pydantic import BaseModel

from durableflow import (
    Context,
    DictState,
    InMemorySerializedState,
    JsonSerializer,
    PickleSerializer,
    SerializationError,
    SnapshotError,
    StateStore,
    decode_state,
    deserialize_state_from_dict,
    encode_state,
    parse_in_memory_state,
)

from .test_context_calls import Counts


class Tally(BaseModel):
    count: int = 0
    label: str = "none"


class Notes(DictState):
    pass


def test_untyped_and_typed_state_round_trip() -> None:
    serializer = JsonSerializer()
    data, kind, _ = encode_state(DictState(count=2, items=["a"], nested=Tally(count=1)), serializer)
    assert kind == "DictState" and set(data["_data"]) == {"count", "items", "nested"}
    back = decode_state(data, serializer)
    assert isinstance(back, DictState) and back == {"count": 2, "items": ["a"], "nested": Tally(count=1)}
    assert decode_state(json.dumps(data), serializer) == back  # stored as one JSON text, too

    notes = Notes()
    notes["seen"] = True
    assert decode_state(encode_state(notes, serializer)[0], serializer) == {"seen": True}

    text, kind, module = encode_state(Tally(count=7, label="x"), serializer)
    assert (kind, module) == ("Tally", __name__)
    assert decode_state(text, serializer) == Tally(count=7, label="x")


def test_what_is_not_a_state_payload_is_refused() -> None:
    serializer = JsonSerializer()
    for payload in (json.dumps([1]), json.dumps("text"), {"foo": 1}, [1, 2], 3):
        with pytest.raises(ValueError, match="state payload"):
            decode_state(payload, serializer)
    assert decode_state(None, serializer) == DictState()
    live = Tally(count=3)
    assert decode_state(live, serializer) is live


def test_a_stored_class_name_is_never_imported() -> None:
    text = json.dumps({"__is_pydantic": True, "value": {}, "qualified_name": "json.tool.Anything"})
    sys.modules.pop("json.tool", None)
    with pytest.raises(SerializationError, match="not loaded here"):
        decode_state(text, JsonSerializer())
    assert "json.tool" not in sys.modules


def test_allowed_types_is_an_allowlist() -> None:
    """Given allowed_types, a serializer rebuilds only those classes (and durableflow's own), loaded or not."""
    text, _, _ = encode_state(Tally(count=7), JsonSerializer())
    with pytest.raises(SerializationError, match=r"Refusing to import disallowed class .*Tally"):
        decode_state(text, JsonSerializer(allowed_types=[DictState]))
    assert decode_state(text, JsonSerializer(allowed_types=[Tally])) == Tally(count=7)
    assert decode_state(text, JsonSerializer(allowed_types=[f"{__name__}.Tally"])) == Tally(count=7)
    assert decode_state(text, JsonSerializer()) == Tally(count=7)  # no allowlist: any loaded class
    untyped, _, _ = encode_state(DictState(n=1), JsonSerializer())
    assert decode_state(untyped, JsonSerializer(allowed_types=[])) == {"n": 1}
    with pytest.raises(TypeError, match="allowed_types"):
        JsonSerializer(allowed_types=[Tally(count=1)])  # type: ignore[list-item]


def test_a_pickled_state_loads_only_with_the_pickle_serializer() -> None:
    pickled = base64.b64encode(pickle.dumps(Tally(count=5))).decode()
    assert decode_state(pickled, PickleSerializer()) == Tally(count=5)
    with pytest.raises(ValueError, match="neither JSON nor a pickle"):
        decode_state(pickled, JsonSerializer())


async def test_a_store_saved_with_to_dict_comes_back_with_from_dict() -> None:
    serializer = JsonSerializer()
    untyped: StateStore[DictState] = StateStore()
    await untyped.set("count", 42)
    saved = untyped.to_dict(serializer)
    assert saved["store_type"] == "in_memory" and saved["state_type"] == "DictState"
    assert deserialize_state_from_dict(saved, serializer) == {"count": 42}
    restored = StateStore.from_dict(saved, serializer)
    assert await restored.get("count") == 42

    typed = StateStore(Tally(count=100, label="t"))
    saved = typed.to_dict()
    assert deserialize_state_from_dict(saved, serializer, state_type=DictState) == Tally(count=100, label="t")
    assert await StateStore.from_dict(saved).get_state() == Tally(count=100, label="t")


def test_a_payload_written_by_another_kind_of_store_is_refused() -> None:
    old = parse_in_memory_state({"state_type": "DictState", "state_data": {"_data": {}}})
    assert isinstance(old, InMemorySerializedState) and old.store_type == "in_memory"
    for kind in ("sql", "redis"):
        with pytest.raises(ValueError, match=f"Cannot parse store_type '{kind}'"):
            parse_in_memory_state({"store_type": kind, "run_id": "r"})
        with pytest.raises(ValueError, match=f"Cannot parse store_type '{kind}'"):
            StateStore.from_dict({"store_type": kind, "run_id": "r"})


class Base(BaseModel):
    a: int = 0


class Child(Base):
    b: int = 0


async def test_a_store_outside_a_run_keeps_a_subclass_state_whole_and_clears_to_it() -> None:
    """StateStore(Base()).set_state(Child(...)) keeps the child's fields (none is dropped); clear() resets to Child."""
    store = StateStore(Base())
    await store.set_state(Child(a=1, b=7))
    assert await store.get_state() == Child(a=1, b=7)
    assert await store.get("b") == 7
    await store.clear()
    state = await store.get_state()
    assert type(state) is Child and (state.a, state.b) == (0, 0)
    await store.set_state(Child(a=0, b=5))
    await store.set_state(Base(a=2))  # a base instance merges its fields in: the child's own stay
    assert await store.get_state() == Child(a=2, b=5)


async def test_a_context_saved_by_llama_index_workflows_is_refused_by_name_and_its_state_carries_over() -> None:
    """Its run cannot continue here (the error says whose it is, not 'corrupt'); its state seeds a new run."""
    saved = {  # the peer's ctx.to_dict() layout
        "version": 2,
        "state": {
            "state_data": {"_data": {"n": "5"}},
            "state_type": "DictState",
            "state_module": "workflows.context.state_store",
        },
        "is_running": False,
        "workers": {},
    }
    wf = Counts()
    with pytest.raises(SnapshotError, match=r"saved by llama-index-workflows .*version 2"):
        Context.from_dict(wf, saved)
    ctx = Context(wf)
    await ctx.store.set_state(deserialize_state_from_dict(saved["state"], JsonSerializer()))
    assert await wf.run(ctx=ctx) == 6
