"""The snapshot format: full snapshots and deltas as JSON, sealed by ``_framing`` with a checksum or a keyed MAC.

A stored record is ``magic + digest(run id, sequence number, body) + body``
where body is UTF-8 JSON naming the format version. Binding the run and the
position into the digest catches a record moved to another run or place
without spending bytes on them in every delta.
A run loads as its newest full snapshot with the later deltas applied in
order. Loading is pure data: event types resolve only against the types the
workflow declares, and any defect raises ``SnapshotError``.
"""

from __future__ import annotations

import hashlib
import json
import math
import weakref
from collections.abc import Iterable, Sequence
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_json

from ._errors import SerializationError, SnapshotError
from ._events import Event, StopEvent, load_event, type_key
from ._framing import DIGEST_SIZE, Key, opened, seal
from ._framing import MAGIC as MAGIC  # where readers of the format look for it
from ._integrity import check_document, check_record, check_run
from ._runstate import Delivery, RunState
from ._serialization import EVENT_TAG, ValueCodec, compact_json, non_finite, refuse_non_finite

if TYPE_CHECKING:
    from ._checkpointer import Record
    from ._graph import StepGraph
    from ._store import StateStore

FORMAT = 2
"""The format records are written in. Format 2 added ``buffers_add`` to deltas; format 1 records still load."""
READABLE = (1, 2)
_quote = encode_basestring  # a str as a JSON string literal (C-accelerated)


# -- writing -------------------------------------------------------------------------
#
# Records are built as lists of pieces joined once: state and effect values are JSON text already (and may be
# large: each is copied once, by the join), every other key is an integer or a step name, so nothing is
# encoded twice.


def encode_full(run: RunState, store: StateStore[Any], graph: StepGraph, seq: int, at: str, name: str) -> str:
    """Everything needed to continue the run of workflow ``name``, as JSON text."""
    parts = [_FULL_OPEN, _quote(at), ',"run_id":', _quote(run.run_id), f',"seq":{seq}']
    _run_fields(parts, run, None)
    by_name = _identities.get(graph)
    if by_name is None:
        by_name = _identities[graph] = {}
    identity = by_name.get(name)
    if identity is None:  # what every full snapshot of this workflow repeats, its step graph the most of it
        identity = by_name[name] = "".join(
            (',"workflow":', _quote(name), ',"fingerprint":"', graph.fingerprint, '","graph":', graph.description_json)
        )
    parts += (identity, ',"state":')
    _object(parts, store.values.items())
    parts.append(',"events":')
    _events(parts, run.events.items(), graph)
    parts.append(',"deliveries":')
    _deliveries(parts, run.deliveries.values())
    parts += (',"buffers":', _buffers(_durable_buffers(run, run.buffers)) if run.buffers else "{}", ',"effects":')
    _object(parts, run.effects.items())
    parts += (',"awaiting":', _ints(run.awaiting) if run.awaiting else "[]")
    if run.result is not None:
        parts += (',"result":', _event_json(run.result, graph))
    parts.append("}")
    return "".join(parts)


_identities: weakref.WeakKeyDictionary[StepGraph, dict[str, str]] = weakref.WeakKeyDictionary()
"""The workflow name, fingerprint and step graph of a full snapshot, as text, by graph and workflow name."""


def encode_delta(run: RunState, store: StateStore[Any], graph: StepGraph, seq: int, at: str) -> str:
    """What changed since the previous record, as JSON text; its size follows the change.

    The common record (a step finished: an event consumed, one made and owed to a step) takes the inlined
    paths: a checkpoint is written after every step, so each call saved here is saved at every step."""
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
        events, opening = run.events, ',"events":{'
        for eid in run.new_events:
            parts.append(f'{opening}"{eid}":{_event_json(events[eid], graph)}')
            opening = ","
        parts.append("}")
    if run.gone_events:
        parts += (',"events_del":[', ",".join(map(str, run.gone_events)), "]")
    if run.touched:
        parts.append(',"deliveries":')
        deliveries = run.deliveries
        _deliveries(parts, [deliveries[key] for key in run.touched])
    if run.gone:
        parts += (',"deliveries_del":[', ",".join([f'"{eid}:{step}"' for eid, step in run.gone]), "]")
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


def frame(body: str, run_id: str, seq: int, key: Key = ...) -> bytes:
    """``body`` sealed as record ``seq`` of ``run_id``, with ``key`` (default: ``$DURABLEFLOW_KEY``, if set)."""
    return seal(body, run_id, seq, key)


def checksum(doc: dict[str, Any]) -> str:
    """The checksum ``ctx.to_dict()`` adds, over the canonical JSON of the rest of the document."""
    rest = {k: v for k, v in doc.items() if k != "checksum"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(canonical.encode(), digest_size=DIGEST_SIZE).hexdigest()


_READABLE_TEXT = " and ".join(map(str, READABLE))
_FULL_OPEN = f'{{"format":{FORMAT},"kind":"full","at":'
_DELTA_OPEN = f'{{"format":{FORMAT},"kind":"delta","at":'


def _run_fields(parts: list[str], run: RunState, written: dict[str, Any] | None) -> None:
    """The run-level fields: all of them in a full snapshot (``written`` None), those that changed in a delta."""
    full = written is None
    if full:
        written = {}
    assert written is not None
    status = run.status
    if status != written.get("status"):
        parts.append(f',"status":"{status}"')
    if run.next_eid != written.get("next_eid"):
        parts.append(f',"next_eid":{run.next_eid}')
    deadline = run.deadline
    if full or deadline != written.get("deadline"):
        # no finite deadline (a timeout of inf) is no deadline: JSON has no inf, and None means "never"
        parts += (',"deadline":', repr(float(deadline)) if deadline is not None and math.isfinite(deadline) else "null")
    error = run.error
    if full or error != written.get("error"):
        parts += (',"error":', "null" if error is None else compact_json(error))
    if run.recoveries != written.get("recoveries", 0):  # absent means 0: most runs never need it
        parts.append(f',"recoveries":{run.recoveries}')


def _object(parts: list[str], items: Iterable[tuple[str, str]]) -> None:
    """A JSON object of values that are JSON text already, as pieces."""
    opening = "{"
    for key, value in items:
        parts += (opening, _quote(key), ":", value)
        opening = ","
    parts.append("}" if opening == "," else "{}")


def _events(parts: list[str], items: Iterable[tuple[int, Event]], graph: StepGraph) -> None:
    opening = "{"
    for eid, event in items:
        parts.append(f'{opening}"{eid}":{_event_json(event, graph)}')
        opening = ","
    parts.append("}" if opening == "," else "{}")


def _deliveries(parts: list[str], deliveries: Iterable[Delivery]) -> None:
    # step names are identifiers: nothing in "eid:step" needs escaping
    opening = "{"
    for d in deliveries:
        sleeps = _floats(d.sleeps) if d.sleeps else "[]"
        parts.append(
            f'{opening}"{d.eid}:{d.step}":[{d.sent},{sleeps},{d.attempt},{d.crashes},'
            f"{1 if d.running else 0},{1 if d.waits else 0}]"
        )
        opening = ","
    parts.append("}" if opening == "," else "{}")


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
    cls = type(event)
    opening = graph.stored_as.get(cls) or _declared(cls, graph)
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


def _declared(cls: type[Event], graph: StepGraph) -> str:
    """The opening of the ``[type, data]`` pair an event of ``cls`` is stored as, remembered on the graph;
    ``SerializationError`` if the workflow does not declare ``cls`` (it could not be loaded again)."""
    key = type_key(cls)
    if graph.types.get(key) is not cls:
        raise SerializationError(
            f"cannot checkpoint a {cls.__name__}: no step of {graph.workflow_path} names it in an annotation, "
            "so it could not be loaded again; add it to a step's input or return annotation"
        )
    opening = graph.stored_as[cls] = f"[{_quote(key)},"
    return opening


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


# -- reading -------------------------------------------------------------------------


def unframe(raw: bytes, run_id: str, seq: int, key: Key = ...) -> dict[str, Any]:
    """Check one stored record's seal and parse it; ``SnapshotError`` names the run and the record."""
    data = opened(raw, run_id, seq, key)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser can go
        raise SnapshotError(f"record is not valid JSON ({exc})", run_id=run_id, seq=seq) from None
    if not isinstance(doc, dict):
        raise SnapshotError("record is not a JSON object", run_id=run_id, seq=seq)
    version = doc.get("format")
    if version not in READABLE or isinstance(version, bool):
        raise SnapshotError(
            f"record format {version!r} is not supported (this durableflow reads formats {_READABLE_TEXT})",
            run_id=run_id,
            seq=seq,
        )
    check_document(doc, run_id, seq)
    return doc


def replay(records: Sequence[Record], run_id: str, key: Key = ...) -> dict[str, Any]:
    """The run as of its last record: the first record (a full snapshot) with each delta applied.

    ``key`` is what the records are sealed with (default: ``$DURABLEFLOW_KEY``, if set)."""
    if not records:
        raise SnapshotError("no records are stored for this run", run_id=run_id)
    for record in records:
        check_record(record, run_id)
    doc = unframe(records[0].data, run_id, records[0].seq, key)
    if doc.get("kind") != "full":
        raise SnapshotError("the oldest stored record is not a full snapshot", run_id=run_id, seq=records[0].seq)
    doc["seq"] = records[0].seq
    for record in records[1:]:
        expected = doc["seq"] + 1
        if record.seq != expected:
            raise SnapshotError(f"record {expected} is missing", run_id=run_id, seq=expected)
        delta = unframe(record.data, run_id, record.seq, key)
        try:
            apply_delta(doc, delta)
        except Exception as exc:
            raise SnapshotError(
                f"malformed delta ({type(exc).__name__}: {exc})", run_id=run_id, seq=record.seq
            ) from None
        doc["seq"] = record.seq
    return doc


def apply_delta(doc: dict[str, Any], delta: dict[str, Any]) -> None:
    if delta["kind"] != "delta":
        raise ValueError(f"expected a delta, found {delta['kind']!r}")
    doc["at"] = delta["at"]
    for field in ("status", "next_eid", "deadline", "error", "recoveries"):
        if field in delta:
            doc[field] = delta[field]
    for section, deleted in (("state", "state_del"), ("events", "events_del"), ("deliveries", "deliveries_del")):
        target = doc[section]
        target.update(delta.get(section, {}))
        for key in delta.get(deleted, ()):
            target.pop(str(key), None)
    for buffer_id, eids in delta.get("buffers", {}).items():
        if eids:
            doc["buffers"][buffer_id] = eids
        else:
            doc["buffers"].pop(buffer_id, None)
    for buffer_id, eids in delta.get("buffers_add", {}).items():
        doc["buffers"].setdefault(buffer_id, []).extend(eids)
    doc["effects"].update(delta.get("effects", {}))
    if "awaiting" in delta:
        doc["awaiting"] = delta["awaiting"]
    if "result" in delta:
        doc["result"] = delta["result"]


def restore(
    doc: dict[str, Any], graph: StepGraph, name: str, codec: ValueCodec | None = None
) -> tuple[RunState, dict[str, str]]:
    """Rebuild a run of workflow ``name`` from a full document; ``SnapshotError`` names what does not fit the code."""
    run_id = doc.get("run_id") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("kind") != "full":
        raise SnapshotError("not a full snapshot", run_id=run_id)
    check_document(doc, str(run_id), doc.get("seq"))
    check_run(doc, str(run_id))
    try:
        return _restore(doc, graph, name, codec or graph.codec)
    except SnapshotError as exc:
        if exc.run_id is not None:
            raise
        raise SnapshotError(str(exc), run_id=run_id) from None  # a value's decoder does not know the run
    except Exception as exc:
        raise SnapshotError(f"malformed snapshot ({type(exc).__name__}: {exc})", run_id=run_id) from None


def _restore(doc: dict[str, Any], graph: StepGraph, name: str, codec: ValueCodec) -> tuple[RunState, dict[str, str]]:
    run_id = doc["run_id"]

    def unfit(message: str) -> SnapshotError:
        return SnapshotError(message, run_id=run_id)

    if doc.get("format") not in READABLE or isinstance(doc.get("format"), bool):
        raise unfit(f"format {doc.get('format')!r} is not supported (this durableflow reads formats {_READABLE_TEXT})")
    if doc["kind"] != "full":
        raise unfit("not a full snapshot")
    if doc["workflow"] != name:
        raise unfit(
            f"it was made by workflow {doc['workflow']!r}, not {name!r}; a run resumes with the workflow_name "
            "that started it"
        )
    if doc["fingerprint"] != graph.fingerprint:
        breaking = graph_changes(doc["graph"], graph.description)
        if breaking:
            raise unfit(
                "the workflow no longer fits this run: "
                + "; ".join(breaking)
                + ". Resume it with the code that started it, or start a new run"
            )
    run = RunState(run_id)
    run.status = _expect(doc["status"], str)
    run.next_eid = _expect(doc["next_eid"], int)
    run.deadline = doc["deadline"]
    run.error = doc["error"]
    run.recoveries = _expect(doc.get("recoveries", 0), int)
    run.seq = _expect(doc["seq"], int)
    for eid_text, record in doc["events"].items():
        run.events[int(eid_text)] = _event(record, graph, f"event {eid_text}", unfit)
    for key, (sent, sleeps, attempt, crashes, running, waits) in doc["deliveries"].items():
        eid_text, step = key.split(":", 1)
        eid = int(eid_text)
        spec = graph.steps.get(step)
        if spec is None:
            raise unfit(f"step {step!r} is pending but the workflow has no such step (renamed or removed?)")
        event = run.events[eid]
        if not isinstance(event, spec.accepts):
            raise unfit(f"step {step!r} no longer accepts {type(event).__name__}, which it still owes a run")
        delivery = run.deliveries[eid, step] = Delivery(eid, step, _expect(sent, int), [float(s) for s in sleeps])
        delivery.persisted = True
        delivery.attempt, delivery.crashes = _expect(attempt, int), _expect(crashes, int)
        delivery.running, delivery.waits = bool(running), bool(waits)
    run.buffers = {str(b): [int(e) for e in eids if int(e) in run.events] for b, eids in doc["buffers"].items()}
    if any(len(eids) != len(doc["buffers"][b]) for b, eids in run.buffers.items()):
        raise unfit("a collect buffer refers to events the snapshot does not hold")
    run.awaiting = [int(e) for e in doc["awaiting"]]
    run.effects = {str(k): _as_json(v) for k, v in doc["effects"].items()}
    if doc.get("result") is not None:
        result = _event(doc["result"], graph, "result", unfit)
        if not isinstance(result, StopEvent):
            raise unfit("its result is not a StopEvent")
        run.result = result
    state = doc["state"]
    # _as_json inlined for the common scalars: a resume re-encodes every value of the state (keys are text,
    # checked with the document)
    values = {
        key: _quote(value) if (kind := type(value)) is str else int.__repr__(value) if kind is int else _as_json(value)
        for key, value in state.items()
    }
    for text in values.values():
        if EVENT_TAG in text:  # a stored event: fails on a type the workflow does not declare (or an unchosen pickle)
            codec.load(text)
    run.restore_refs()
    run.note_written()
    return run, values


def _as_json(value: Any) -> str:
    """A parsed value as the JSON text it was read from (``compact_json``), with the common scalars
    written directly: a resume re-encodes every value of the state."""
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is int:
        return int.__repr__(value)
    return compact_json(value)


def outcome(doc: dict[str, Any]) -> tuple[str, Any, str | None]:
    """A loaded run's status, its result as JSON data (what awaiting it gives), and its error as text."""
    result = None
    if doc.get("result") is not None:
        key, data = doc["result"]
        result = data.get("result") if key == "StopEvent" else data
    return doc["status"], result, error_text(doc.get("error"))


def error_text(error: dict[str, str] | None) -> str | None:
    """How a run's error is shown and stored: ``module.Type: message``."""
    return None if error is None else f"{error['type']}: {error['message']}"


def graph_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The differences between two step graphs that a stored run cannot survive."""
    changes = []
    old_steps, new_steps = stored["steps"], current["steps"]
    for name in sorted(old_steps.keys() - new_steps.keys()):
        changes.append(f"step {name!r} was removed or renamed")
    for name in sorted(old_steps.keys() & new_steps.keys()):
        before, after = old_steps[name]["accepts"], new_steps[name]["accepts"]
        if before != after:
            changes.append(f"step {name!r} accepted {', '.join(before)} and now accepts {', '.join(after)}")
    if stored.get("state") != current.get("state"):
        changes.append(f"the state type changed from {stored.get('state')} to {current.get('state')}")
    return changes


def _event(record: Any, graph: StepGraph, what: str, unfit: Any) -> Event:
    key, data = record
    cls = graph.types.get(key)
    if cls is None:
        raise unfit(f"{what} has type {key!r}, which {graph.workflow_path} does not declare (renamed or removed?)")
    try:
        return load_event(cls, data, graph.types)
    except ValidationError as exc:
        raise unfit(
            f"{what} no longer fits {cls.__name__}: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}"
        ) from None


def _expect(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"expected {kind.__name__}, found {value!r}")
    return value
