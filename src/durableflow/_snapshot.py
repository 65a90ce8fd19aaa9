"""The snapshot format: full snapshots and deltas as JSON, sealed by ``_framing`` with a checksum or a keyed MAC.

A stored record is ``magic + digest(run id, sequence number, body) + body``
where body is UTF-8 JSON naming the format version. Binding the run and the
position into the digest catches a record moved to another run or place
without spending bytes on them in every delta.
A run loads as its newest full snapshot with the later deltas applied in
order (``_encoding`` writes them). Loading is pure data: event types resolve only against the types the
workflow declares, and any defect raises ``SnapshotError``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ._errors import SnapshotError
from ._events import Event, StopEvent, load_event
from ._framing import DIGEST_SIZE, Key, opened, seal
from ._framing import MAGIC as MAGIC  # where readers of the format look for it
from ._integrity import check_document, check_record, check_run
from ._runstate import Delivery, RunState
from ._serialization import EVENT_TAG, ValueCodec, compact_json

if TYPE_CHECKING:
    from ._checkpointer import Record
    from ._graph import StepGraph

FORMAT = 2
"""The format records are written in. Format 2 added ``buffers_add`` to deltas; format 1 records still load."""
READABLE = (1, 2)
_quote = encode_basestring  # a str as a JSON string literal (C-accelerated)


def frame(body: str, run_id: str, seq: int, key: Key = ...) -> bytes:
    """``body`` sealed as record ``seq`` of ``run_id``, with ``key`` (default: ``$DURABLEFLOW_KEY``, if set)."""
    return seal(body, run_id, seq, key)


def checksum(doc: dict[str, Any]) -> str:
    """The checksum ``ctx.to_dict()`` adds, over the canonical JSON of the rest of the document."""
    rest = {k: v for k, v in doc.items() if k != "checksum"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(canonical.encode(), digest_size=DIGEST_SIZE).hexdigest()


_READABLE_TEXT = " and ".join(map(str, READABLE))


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
