"""What a store hands back, checked before anything relies on it: run metadata, records, and their documents.

A store is data that anyone who can write it may have edited. Every field is checked for its type and
range, so a defect raises ``SnapshotError`` naming the run (and the record), never another exception.
Fields this version does not know are left alone: a newer writer may add some.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, get_args

from ._checkpointer import Record, RunInfo, RunStatus
from ._errors import SnapshotError

DOCUMENT_STATUSES = frozenset({"new", "running", "waiting", "completed", "failed", "cancelled"})
"""What a record may say a run is (``new``: a context saved before it ran); ``RunInfo.status`` is a ``RunStatus``."""
_LATEST_TIME = 1e11
"""Seconds since the epoch (the year 5138): a later timestamp is not one durableflow wrote, and no calendar shows it."""


# -- metadata ----------------------------------------------------------------------------------


def check_info(info: object, run_id: str | None = None) -> RunInfo:
    """``info`` if it is metadata durableflow could have written for ``run_id``; ``SnapshotError`` naming the run
    and every malformed field otherwise."""
    if not isinstance(info, RunInfo):
        raise SnapshotError(f"the store described the run with a {type(info).__name__}, not RunInfo", run_id=run_id)
    stored_id = info.run_id
    if not _is_text(stored_id):
        raise SnapshotError(f"malformed metadata: the stored run id {stored_id!r} is not text", run_id=run_id)
    if run_id is not None and stored_id != run_id:
        raise SnapshotError(f"the store answered with the metadata of run {stored_id!r}", run_id=run_id)
    if info.workflow is None and info.status is None and info.created_at is None:
        raise SnapshotError(
            "no metadata is stored for this run (its entry was deleted, or holds something else"
            + (f": {info.error}" if isinstance(info.error, str) else "")
            + ")",
            run_id=stored_id,
        )
    problems = []
    if not _is_text(info.workflow):
        problems.append(f"workflow {info.workflow!r} is not a name")
    if info.status not in get_args(RunStatus):
        problems.append(f"status {info.status!r} is not one of {', '.join(get_args(RunStatus))}")
    for name in ("created_at", "updated_at"):
        if not _is_time(getattr(info, name)):
            problems.append(f"{name} {getattr(info, name)!r} is not a time")
    if not _is_int(info.last_seq, least=1) or info.last_seq > _LAST_RECORD:
        problems.append(f"last_seq {info.last_seq!r} is not a record number")
    for name in ("result", "error", "lease_owner"):
        value = getattr(info, name)
        if value is not None and not _is_text(value, empty=True):
            problems.append(f"{name} {value!r} is not text")
    if info.lease_expires_at is not None and not _is_time(info.lease_expires_at):
        problems.append(f"lease_expires_at {info.lease_expires_at!r} is not a time")
    if problems:
        raise SnapshotError(
            "malformed metadata (edited by hand, or written by something else): " + "; ".join(problems),
            run_id=stored_id,
        )
    return info


# -- records and documents ---------------------------------------------------------------------


def check_record(record: object, run_id: str) -> Record:
    """``record`` if it has the shape of a stored record; ``SnapshotError`` naming the run otherwise."""
    if not isinstance(record, Record):
        raise SnapshotError(f"the store returned a {type(record).__name__} as a record", run_id=run_id)
    if not _is_int(record.seq, least=1):
        raise SnapshotError(f"a stored record's number {record.seq!r} is not a positive integer", run_id=run_id)
    if not isinstance(record.full, bool):
        raise SnapshotError(f"the full flag {record.full!r} is not a boolean", run_id=run_id, seq=record.seq)
    return record


def check_document(doc: dict[str, Any], run_id: str, seq: int | None) -> None:
    """Every field a full snapshot or a delta may hold has the type the loader expects; a full one has them all."""
    kind = doc.get("kind")
    if kind not in ("full", "delta"):
        raise SnapshotError(f"record kind {kind!r} is neither full nor delta", run_id=run_id, seq=seq)
    fields = _FULL if kind == "full" else _DELTA
    problems = []
    for name, (required, valid, expected) in fields.items():
        if name not in doc:
            if required:
                problems.append(f"{name} is missing")
        elif not valid(doc[name]):
            problems.append(f"{name} is not {expected}: {_short(doc[name])}")
    if kind == "full" and _is_text(doc.get("run_id")) and doc["run_id"] != run_id:
        problems.append(f"it is a snapshot of run {doc['run_id']!r} (moved from another run?)")
    if problems:
        raise SnapshotError(f"malformed {kind} record: " + "; ".join(problems), run_id=run_id, seq=seq)


def check_run(doc: dict[str, Any], run_id: str) -> None:
    """The replayed run holds together: everything it owes refers to events it holds, an ended run has its ending."""
    seq = doc.get("seq")
    events = {int(eid) for eid in doc["events"]}
    problems = []
    if events and doc["next_eid"] <= max(events):
        problems.append(f"next_eid {doc['next_eid']} would reuse the id of a stored event")
    owed = [int(key.split(":", 1)[0]) for key in doc["deliveries"]]
    owed += doc["awaiting"] + [eid for eids in doc["buffers"].values() for eid in eids]
    missing = sorted(set(owed) - events)
    if missing:
        problems.append(f"it owes events {', '.join(map(str, missing[:5]))} that it does not hold")
    if doc["status"] == "completed" and doc.get("result") is None:
        problems.append("it is completed without a result")
    if problems:
        raise SnapshotError("inconsistent run: " + "; ".join(problems), run_id=run_id, seq=seq)


# -- predicates --------------------------------------------------------------------------------


def _is_text(value: Any, empty: bool = False) -> bool:
    if not isinstance(value, str) or not (value or empty):
        return False
    if value.isascii():  # no surrogate in it: the common case, without encoding it
        return True
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate: not text anyone wrote
        return False
    return True


_LAST_RECORD = 2**53
"""The highest record number a store holds exactly: Redis's scripts compare record numbers as Lua numbers
(doubles). No run writes that many records: a larger last_seq was written by hand."""


def _is_int(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_time(value: Any) -> bool:
    return _is_number(value) and -_LATEST_TIME < value < _LATEST_TIME


def _is_eid(text: Any) -> bool:
    return isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 19


def _is_delivery_key(key: Any) -> bool:
    eid, _, step = key.partition(":") if isinstance(key, str) else ("", "", "")
    return _is_eid(eid) and step.isidentifier()


def _anything(value: Any) -> bool:
    return True


def _dict_of(valid_key: Callable[[Any], bool], valid_value: Callable[[Any], bool]) -> Callable[[Any], bool]:
    if valid_value is _anything:  # only the keys to check (state, effects): one pass in C over them
        if valid_key is _text:
            return _text_keys
        return lambda value: isinstance(value, dict) and all(map(valid_key, value))
    return lambda value: isinstance(value, dict) and all(valid_key(k) and valid_value(v) for k, v in value.items())


def _list_of(valid: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(valid(item) for item in value)


def _pair(first: Callable[[Any], bool], second: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and len(value) == 2 and first(value[0]) and second(value[1])


def _text(value: Any) -> bool:
    return isinstance(value, str) and (value.isascii() or _is_text(value, empty=True))


def _text_keys(value: Any) -> bool:
    """A dict whose keys are all text: ASCII keys (parsed JSON keys are always strings) in one C-level pass."""
    if not isinstance(value, dict):
        return False
    try:
        if all(map(str.isascii, value)):
            return True
    except TypeError:  # a key that is not a string at all
        return False
    return all(map(_text, value))


def _eid(value: Any) -> bool:
    return _is_int(value, least=1)


_EVENT = _pair(_is_text, lambda data: isinstance(data, dict))
_SLEEPS = _list_of(_is_number)


def _DELIVERY(value: Any) -> bool:
    """[sent, sleep deadlines, attempt, crashes, running, waits]: durable attempt counts beside the sends."""
    return (
        isinstance(value, list)
        and len(value) == 6
        and all(_is_int(v) for v in (value[0], *value[2:]))
        and _SLEEPS(value[1])
        and value[2] >= 1
        and value[3] >= 0
        and value[4] in (0, 1)
        and value[5] in (0, 1)
    )


def _error(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _text(value.get("type")) and _text(value.get("message")))


def _graph(value: Any) -> bool:
    def step(spec: Any) -> bool:
        return isinstance(spec, dict) and _list_of(_text)(spec.get("accepts"))

    return isinstance(value, dict) and _dict_of(_is_text, step)(value.get("steps"))


# name: (required in a full snapshot, check, what it should be)
_FIELDS: dict[str, tuple[bool, Callable[[Any], bool], str]] = {
    "at": (True, _text, "text"),
    "run_id": (True, _is_text, "a run id"),
    "seq": (True, _is_int, "a record number"),  # 0: saved by to_dict before any checkpoint
    "status": (True, lambda value: isinstance(value, str) and value in DOCUMENT_STATUSES, "a run status"),
    "next_eid": (True, _eid, "an event id"),
    "deadline": (True, lambda value: value is None or _is_number(value), "a finite time or null"),
    "error": (True, _error, "an error (type and message) or null"),
    "recoveries": (False, lambda value: _is_int(value, -1), "a count, or -1 for a run submitted and not started"),
    "workflow": (True, _is_text, "a workflow name"),
    "fingerprint": (True, _text, "a fingerprint"),
    "graph": (True, _graph, "a step graph"),
    "state": (True, _dict_of(_text, _anything), "an object of state keys"),
    "events": (True, _dict_of(_is_eid, _EVENT), "an object of events by id"),
    "deliveries": (True, _dict_of(_is_delivery_key, _DELIVERY), "an object of pending deliveries"),
    "buffers": (True, _dict_of(_text, _list_of(_eid)), "an object of collect buffers"),
    "effects": (True, _dict_of(_text, _anything), "an object of effect results"),
    "awaiting": (True, _list_of(_eid), "a list of event ids"),
    "result": (False, lambda value: value is None or _EVENT(value), "an event or null"),
    "state_del": (False, _list_of(_text), "a list of state keys"),
    "events_del": (False, _list_of(_eid), "a list of event ids"),
    "deliveries_del": (False, _list_of(_is_delivery_key), "a list of delivery keys"),
    "buffers_add": (False, _dict_of(_text, _list_of(_eid)), "an object of events added to collect buffers"),
}
_DELTA_ONLY = ("state_del", "events_del", "deliveries_del", "buffers_add")
_FULL_ONLY = ("run_id", "seq", "workflow", "fingerprint", "graph")
_FULL = {name: spec for name, spec in _FIELDS.items() if name not in _DELTA_ONLY}
_DELTA = {name: (False, check, what) for name, (_, check, what) in _FIELDS.items() if name not in _FULL_ONLY}
_DELTA["at"] = _FIELDS["at"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
