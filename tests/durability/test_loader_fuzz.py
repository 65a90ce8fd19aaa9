"""The loader under fuzzing: random bytes, damaged records and mutated documents give SnapshotError, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from durableflow import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    MemoryCheckpointer,
    Record,
    SnapshotError,
    StartEvent,
    StopEvent,
    Workflow,
    _snapshot,
    step,
)
from durableflow._graph import graph_of

from .crashing import Crash, crash_at
from .workflows import FanOut, World

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RUN_ID = "fuzzed"


class Asking(Workflow):
    """Asks for input and sleeps, so its documents hold awaited events and sleep deadlines too."""

    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> InputRequiredEvent:
        await ctx.store.set("asked", {"question": ev.question, "n": [1, 2.5, None, True]})
        await ctx.effect("stamp", lambda: {"at": 1})
        return InputRequiredEvent(prefix=ev.question)

    @step
    async def answer(self, ev: HumanResponseEvent, ctx: Context) -> StopEvent:
        await ctx.sleep(0)
        return StopEvent(result=ev.response)


async def _stored_runs() -> list[tuple[Workflow, list[Record]]]:
    """Real stored runs, interrupted mid-way: a fan-out with a collect buffer, and a run awaiting input."""
    runs: list[tuple[Workflow, list[Record]]] = []
    checkpointer = MemoryCheckpointer()
    with crash_at("step.gather.start#3"), contextlib.suppress(Crash):
        await FanOut(World(), checkpointer=checkpointer).run(run_id=RUN_ID, count=3)
    runs.append((FanOut(World()), checkpointer.load(RUN_ID)))
    checkpointer = MemoryCheckpointer()
    handler = Asking(checkpointer=checkpointer).run(run_id=RUN_ID, question="why?")
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.send_event(HumanResponseEvent(response="because"))
    await handler
    runs.append((Asking(), checkpointer.load(RUN_ID)))
    return runs


@cache
def stored_runs() -> list[tuple[Workflow, list[Record]]]:
    return asyncio.run(_stored_runs())


@cache
def saved_contexts() -> list[tuple[Workflow, dict[str, Any]]]:
    return [(workflow, _load(workflow, records).to_dict()) for workflow, records in stored_runs()]


def _load(workflow: Workflow, records: list[Record]) -> Context[Any]:
    """What resume does with stored records: replay them, then rebuild the run for this workflow."""
    document = _snapshot.replay(records, RUN_ID)
    _snapshot.restore(document, graph_of(type(workflow)), workflow.workflow_name)
    return Context.from_dict(workflow, {**document, "checksum": _snapshot.checksum(document)})


def _body(record: Record) -> Any:
    return json.loads(record.data[len(_snapshot.MAGIC) + 16 :])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["StartEvent", "StopEvent", "full", "delta", RUN_ID, "1:square", "2:gather", -1, 0, 10**30]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one to three parts replaced by random JSON, deleted, or given a random extra key."""
    value = copy.deepcopy(value)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(value)))
        if not path:
            return draw(json_values)
        parent = value
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return value


def _only_snapshot_errors(load: Any) -> None:
    with contextlib.suppress(SnapshotError):
        load()


def test_the_fuzzed_material_loads_when_intact() -> None:
    """The stored runs and saved contexts the fuzzers start from load without error, so mutations are what fail."""
    for workflow, records in stored_runs():
        assert len(records) > 3
        _load(workflow, records)
    for workflow, saved in saved_contexts():
        assert Context.from_dict(workflow, saved).run_id == RUN_ID


@FUZZ
@given(data=st.binary(max_size=300), seq=st.integers(0, 2**40))
@example(data=b"DFR1" + b"\0" * 16, seq=1)
def test_random_bytes_as_a_record_raise_only_snapshot_error(data: bytes, seq: int) -> None:
    """Any bytes unframed or replayed as a record raise SnapshotError and nothing else."""
    with pytest.raises(SnapshotError):
        _snapshot.unframe(data, RUN_ID, seq)
    with pytest.raises(SnapshotError):
        _snapshot.replay([Record(seq, True, data)], RUN_ID)


@FUZZ
@given(choice=st.data())
def test_damaged_stored_records_raise_only_snapshot_error(choice: st.DataObject) -> None:
    """Real records with bytes flipped, cut, inserted or swapped raise SnapshotError when replayed."""
    workflow, records = choice.draw(st.sampled_from(stored_runs()))
    records = list(records)
    index = choice.draw(st.integers(0, len(records) - 1))
    data = bytearray(records[index].data)
    how = choice.draw(st.sampled_from(["flip", "cut", "insert", "swap"]))
    if how == "flip":
        at = choice.draw(st.integers(0, len(data) - 1))
        data[at] ^= choice.draw(st.integers(1, 255))
    elif how == "cut":
        del data[choice.draw(st.integers(0, len(data) - 1)) :]
    elif how == "insert":
        data.insert(choice.draw(st.integers(0, len(data))), choice.draw(st.integers(0, 255)))
    else:
        other = choice.draw(st.integers(0, len(records) - 1).filter(lambda i: i != index))
        data = bytearray(records[other].data)
    records[index] = Record(records[index].seq, records[index].full, bytes(data))
    with pytest.raises(SnapshotError):
        _load(workflow, records)


@FUZZ
@given(choice=st.data())
def test_mutated_records_with_valid_checksums_raise_only_snapshot_error(choice: st.DataObject) -> None:
    """Real records whose JSON is mutated and framed again with a valid checksum load or raise SnapshotError."""
    workflow, records = choice.draw(st.sampled_from(stored_runs()))
    records = list(records)
    index = choice.draw(st.integers(0, len(records) - 1))
    body = choice.draw(mutated(_body(records[index])))
    seq, full = records[index].seq, records[index].full
    records[index] = Record(seq, full, _snapshot.frame(json.dumps(body), RUN_ID, seq))
    _only_snapshot_errors(lambda: _load(workflow, records))


@FUZZ
@given(choice=st.data())
def test_mutated_saved_contexts_raise_only_snapshot_error(choice: st.DataObject) -> None:
    """Context.from_dict of a mutated ctx.to_dict(), checksum fixed up or not, loads or raises SnapshotError."""
    workflow, saved = choice.draw(st.sampled_from(saved_contexts()))
    data = choice.draw(mutated(saved))
    if isinstance(data, dict) and choice.draw(st.booleans()):
        data["checksum"] = _snapshot.checksum(data)
    _only_snapshot_errors(lambda: Context.from_dict(workflow, data))


@FUZZ
@given(
    data=st.one_of(
        json_values,
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), json_values, max_size=4),
        st.builds(lambda v: {"checksum": "x", "state": {v}, "run_id": RUN_ID}, st.integers()),
        st.binary(max_size=20),
    )
)
def test_arbitrary_values_given_to_from_dict_raise_only_snapshot_error(data: Any) -> None:
    """Context.from_dict of anything that is not a saved context raises SnapshotError and nothing else."""
    with pytest.raises(SnapshotError):
        Context.from_dict(FanOut(World()), data)


def test_deeply_nested_json_raises_snapshot_error() -> None:
    """A record or saved context nested 100,000 levels deep raises SnapshotError, not RecursionError."""
    deep = '{"format":1,"kind":"full","run_id":"fuzzed","seq":1,"state":' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(SnapshotError):
        _snapshot.replay([Record(1, True, _snapshot.frame(deep, RUN_ID, 1))], RUN_ID)
    nested: dict[str, Any] = {}
    saved: dict[str, Any] = {"checksum": "x", "state": nested}
    for _ in range(100_000):
        nested["a"] = nested = {}
    with pytest.raises(SnapshotError):
        Context.from_dict(FanOut(World()), saved)
