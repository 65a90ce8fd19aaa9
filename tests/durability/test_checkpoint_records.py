"""The records a checkpoint hands its store are the protocol's own ``Record``, however the engine makes them."""

from __future__ import annotations

import dataclasses

from durableflow import Record
from durableflow._checkpointing import new_record


def test_a_record_made_by_the_engine_equals_one_made_by_the_dataclass() -> None:
    made = new_record(3, True, b"data")
    assert made == Record(3, True, b"data")
    assert hash(made) == hash(Record(3, True, b"data"))
    assert dataclasses.asdict(made) == {"seq": 3, "full": True, "data": b"data"}
    # a field added to Record must be set here too (the fast constructor sets each one by name)
    assert [field.name for field in dataclasses.fields(Record)] == ["seq", "full", "data"]
