"""llama-index-workflows' ``workflows.context.state_store`` path; ``InMemoryStateStore`` is ``StateStore``."""

from .. import (
    DictState,
    InMemorySerializedState,
    StateStore,
    decode_state,
    deserialize_state_from_dict,
    encode_state,
    parse_in_memory_state,
)

InMemoryStateStore = StateStore

__all__ = [
    "DictState",
    "InMemorySerializedState",
    "InMemoryStateStore",
    "StateStore",
    "decode_state",
    "deserialize_state_from_dict",
    "encode_state",
    "parse_in_memory_state",
]
