"""Writing the snapshot format (``_snapshot`` describes it and reads it): full snapshots, deltas, status records.

Records are built as lists of pieces joined once: state and effect values are
JSON text already (and may be large: each is copied once, by the join), every
other key is an integer or a step name, so nothing is encoded twice. A
checkpoint is written after every step, so the common delta (a step finished:
an event consumed, one made and owed to the next step) is kept to as few calls
and objects as the format allows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError, to_json

from ._errors import SerializationError
from ._events import Event, StopEvent, type_key
from ._runstate import Delivery, RunState
from ._serialization import compact_json, non_finite, refuse_non_finite, refuse_not_json
from ._snapshot import FORMAT

if TYPE_CHECKING:
    from ._graph import StepGraph
    from ._store import StateStore

_quote = encode_basestring  # a str as a JSON string literal (C-accelerated)
_FULL_OPEN = f'{{"format":{FORMAT},"kind":"full","at":'
_DELTA_OPEN = f'{{"format":{FORMAT},"kind":"delta","at":'


def encode_full(run: RunState, store: StateStore[Any], graph: StepGraph, seq: int, at: str, name: str) -> str:
    """Everything needed to continue the run of workflow ``name``, as JSON text."""
    parts = [_FULL_OPEN, _quote(at), ',"run_id":', _quote(run.run_id), f',"seq":{seq}']
    _run_fields(parts, run, None)
    parts += (_identity(graph, name), ',"state":')
    values = store.values
    if values:
        _object(parts, values.items())
    else:
        parts.append("{}")
    parts.append(',"events":')
    _events(parts, run.events.items(), graph)
    parts.append(',"deliveries":')
    _deliveries(parts, run.deliveries.values())
    parts += (',"buffers":', _buffers(_durable_buffers(run, run.buffers)) if run.buffers else "{}", ',"effects":')
    if run.effects:
        _object(parts, run.effects.items())
    else:
        parts.append("{}")
    parts += (',"awaiting":', _ints(run.awaiting) if run.awaiting else "[]")
    if run.result is not None:
        parts += (',"result":', _event_json(run.result, graph))
    parts.append("}")
    return "".join(parts)


_last_identity: tuple[object, str, str] = (None, "", "")
"""The last graph and workflow name a full snapshot was written for, and their text: nearly always the next's."""


def _identity(graph: StepGraph, name: str) -> str:
    """The workflow name, fingerprint and step graph that every full snapshot of this workflow repeats."""
    global _last_identity
    last_graph, last_name, text = _last_identity
    if last_graph is not graph or last_name != name:
        text = "".join(
            (',"workflow":', _quote(name), ',"fingerprint":"', graph.fingerprint, '","graph":', graph.description_json)
        )
        _last_identity = (graph, name, text)
    return text


def encode_delta(run: RunState, store: StateStore[Any], graph: StepGraph, seq: int, at: str) -> str:
    """What changed since the previous record, as JSON text; its size follows the change."""
    parts = [_DELTA_OPEN, _quote(at)]
    _run_fields(parts, run, run.written)
    dirty = store.dirty
    if dirty:
        values = store.values
        parts.append(',"state":')
        _object(parts, [(key, values[key]) for key in dirty if key in values])
        deleted = [key for key in dirty if key not in values]
        if deleted:
            parts += (',"state_del":', compact_json(deleted))
    if run.new_events:
        events, opening = run.events, ',"events":{"'
        for eid in run.new_events:
            parts += (opening, str(eid), '":', _event_json(events[eid], graph))
            opening = ',"'
        parts.append("}")
    if run.gone_events:
        parts += (',"events_del":[', ",".join(map(str, run.gone_events)), "]")
    if run.touched:
        deliveries, opening = run.deliveries, ',"deliveries":{'
        for key in run.touched:
            parts += (opening, _delivery(deliveries[key]))
            opening = ","
        parts.append("}")
    if run.gone:
        opening = ',"deliveries_del":["'
        for eid, step in run.gone:  # step names are identifiers: nothing in "eid:step" needs escaping
            parts += (opening, str(eid), ":", step)
            opening = '","'
        parts.append('"]')
    if run.dirty_buffers:
        parts += (',"buffers":', _buffers(_durable_buffers(run, run.dirty_buffers)))
    if run.appended:  # buffers that only grew: their new events, not the whole buffer again
        grown = [(b, eids) for b, eids in run.appended.items() if b not in run.dirty_buffers]
        if grown:
            parts += (',"buffers_add":', _buffers(grown))
    if run.new_effects:
        effects = run.effects
        parts.append(',"effects":')
        _object(parts, [(key, effects[key]) for key in run.new_effects])
    if run.awaiting_dirty:
        parts += (',"awaiting":', _ints(run.awaiting))
    if run.result is not None:
        parts += (',"result":', _event_json(run.result, graph))
    parts.append("}")
    return "".join(parts)


def encode_status(run: RunState, seq: int, at: str) -> str:
    """A delta holding only the run-level fields that changed (its status and error, as a run fails)."""
    parts = [_DELTA_OPEN, _quote(at)]
    _run_fields(parts, run, run.written)
    parts.append("}")
    return "".join(parts)


def _run_fields(parts: list[str], run: RunState, written: dict[str, Any] | None) -> None:
    """The run-level fields: all of them in a full snapshot (``written`` None), those that changed in a delta."""
    full = written is None
    if not written:  # a full snapshot, or a first record: every field as never written (absent recoveries are 0)
        written = _NOTHING_WRITTEN
    if run.status != written["status"]:
        parts.append(f',"status":"{run.status}"')
    if run.next_eid != written["next_eid"]:
        parts.append(f',"next_eid":{run.next_eid}')
    if full or run.deadline != written["deadline"]:
        deadline = run.deadline
        # no finite deadline (a timeout of inf) is no deadline: JSON has no inf, and None means "never"
        parts += (',"deadline":', repr(float(deadline)) if deadline is not None and math.isfinite(deadline) else "null")
    if full or run.error != written["error"]:
        parts += (',"error":', "null" if run.error is None else compact_json(run.error))
    if run.recoveries != written["recoveries"]:  # absent means 0: most runs never need it
        parts.append(f',"recoveries":{run.recoveries}')


_NOTHING_WRITTEN: dict[str, Any] = {"status": None, "next_eid": None, "deadline": None, "error": None, "recoveries": 0}
"""``RunState.written`` before any record: subscripted, as ``note_written``'s every key is (cheaper than ``get``)."""


def _object(parts: list[str], items: Iterable[tuple[str, str]]) -> None:
    """A JSON object of values that are JSON text already, as pieces."""
    opening = "{"
    for key, value in items:
        parts += (opening, _quote(key), ":", value)
        opening = ","
    parts.append("}" if opening == "," else "{}")


def _events(parts: list[str], items: Iterable[tuple[int, Event]], graph: StepGraph) -> None:
    opening = '{"'
    for eid, event in items:
        parts += (opening, str(eid), '":', _event_json(event, graph))
        opening = ',"'
    parts.append("}" if opening == ',"' else "{}")


def _deliveries(parts: list[str], deliveries: Iterable[Delivery]) -> None:
    opening = "{"
    for d in deliveries:
        parts += (opening, _delivery(d))
        opening = ","
    parts.append("}" if opening == "," else "{}")


_rows: dict[tuple[int, int, int, bool, bool], str] = {}
"""A delivery's row without sleeps, by its fields: nearly every delivery of a run has one of a few."""


def _delivery(d: Delivery) -> str:
    """``"eid:step":[sent,sleeps,attempt,crashes,running,waits]`` (step names are identifiers: no escaping)."""
    if d.sleeps:
        row = f"[{d.sent},{_floats(d.sleeps)},{d.attempt},{d.crashes},{1 if d.running else 0},{1 if d.waits else 0}]"
    else:
        fields = (d.sent, d.attempt, d.crashes, d.running, d.waits)
        cached = _rows.get(fields)
        if cached is None:
            cached = f"[{d.sent},[],{d.attempt},{d.crashes},{1 if d.running else 0},{1 if d.waits else 0}]"
            if len(_rows) < 4096:
                _rows[fields] = cached
        row = cached
    return f'"{d.eid}:{d.step}":{row}'


def _durable_buffers(run: RunState, buffer_ids: Iterable[str]) -> list[tuple[str, list[int]]]:
    """Collect buffers as a restart must find them: with the events that running steps have
    collected but whose completion is not recorded yet, since those steps will be delivered again."""
    taken: dict[str, list[int]] = {}
    for delivery in run.deliveries.values():
        for buffer_id, eid in delivery.taken:
            taken.setdefault(buffer_id, []).append(eid)
    return [(b, taken.get(b, []) + run.buffers.get(b, [])) for b in buffer_ids]


def _buffers(buffers: Iterable[tuple[str, list[int]]]) -> str:
    return "{" + ",".join([f"{_quote(b)}:{_ints(eids)}" for b, eids in buffers]) + "}"


def _ints(values: Iterable[int]) -> str:
    return "[" + ",".join(map(str, values)) + "]"


def _floats(values: Iterable[float]) -> str:
    text = "[" + ",".join([repr(float(v)) for v in values]) + "]"
    if "n" in text:  # inf or nan: JSON cannot hold it, and a record holding it could never be loaded
        raise SerializationError(f"cannot checkpoint a sleep until {text}: ctx.sleep takes a finite number of seconds")
    return text


def _event_json(event: Event, graph: StepGraph) -> str:
    """An event as the ``[type, data]`` pair it is stored as."""
    cls = type(event)
    opening, bare = graph.stored_as.get(cls) or _declared(cls, graph)
    if not event.__pydantic_extra__:
        if bare is not None:
            return bare  # an event of a class with no fields: nothing to serialize, nothing to check
        if cls is StopEvent:  # the last record of most runs: its result written as pydantic would, without it
            result = event.__dict__["result"]
            kind = type(result)
            if kind is str and result.isascii():  # (non-ASCII text takes the checked path: a lone surrogate)
                return f'{opening}{{"result":{_quote(result)}}}]'
            if result is None:
                return opening + "{}]"
    refuse_not_json(event)
    try:
        data = event_body(event)
    except PydanticSerializationError as exc:
        raise SerializationError(f"cannot checkpoint a {cls.__name__}: {exc}") from None
    # a model writes NaN as null, a bare result as the NaN of no JSON standard: refused either way, as set() does
    if ("null" in data or "NaN" in data or "Infinity" in data) and (
        found := non_finite(event.model_dump())
    ) is not None:
        raise refuse_non_finite(found, f"a {cls.__name__} in a checkpoint")
    return opening + data + "]"


def _declared(cls: type[Event], graph: StepGraph) -> tuple[str, str | None]:
    """The opening of the ``[type, data]`` pair an event of ``cls`` is stored as, and the whole pair if the class
    has no fields (reading ``__pydantic_fields__`` costs three dict lookups), remembered on the graph;
    ``SerializationError`` if the workflow does not declare ``cls`` (it could not be loaded again)."""
    key = type_key(cls)
    if graph.types.get(key) is not cls:
        raise SerializationError(
            f"cannot checkpoint a {cls.__name__}: no step of {graph.workflow_path} names it in an annotation, "
            "so it could not be loaded again; add it to a step's input or return annotation"
        )
    opening = f"[{_quote(key)},"
    stored = graph.stored_as[cls] = (opening, None if cls.__pydantic_fields__ else opening + "{}]")
    return stored


def event_body(event: Event) -> str:
    """``event.model_dump_json()``, without the serializer's round trip through Python where the answer is
    known: an event with no fields and no undeclared data is ``{}``, a plain StopEvent ``{"result": ...}``."""
    if not event.__pydantic_extra__:
        cls = type(event)
        if cls is StopEvent:
            result = event.__dict__["result"]
            return "{}" if result is None else '{"result":' + to_json(result).decode() + "}"
        if not cls.__pydantic_fields__:
            return "{}"
    return event.model_dump_json()
