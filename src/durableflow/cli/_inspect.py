"""``durableflow runs`` and ``durableflow show``: the stored runs, and one run's checkpoints with what each changed."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from .._checkpointer import STATUSES, Record, without_password
from .._errors import SnapshotError, password_note
from .._framing import record_key
from .._integrity import check_info, check_record
from .._snapshot import unframe
from .._waiters import PARKED
from ._exits import DEFAULT_STORE
from ._options import add_command, open_store, positive_int, sqlite_file_missing, stored_run_id
from ._output import STATUS_STYLES, about, cell, clip, console, names, printable, table, when


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runs = add_command(commands, "runs", runs_command, "list the stored runs, newest first")
    runs.add_argument("--limit", type=positive_int, default=20, metavar="N", help="show at most N runs (default 20)")
    runs.add_argument(
        "--status", action="extend", nargs="+", choices=STATUSES, metavar="STATUS", dest="statuses",
        help=f"only runs with one of these statuses (one or more, repeatable): {', '.join(STATUSES)}; "
        "interrupted: running, but nobody drives it any more",
    )  # fmt: skip
    runs.add_argument("--after", metavar="CURSOR", help="the page after this cursor (printed below a full page)")

    show = add_command(
        commands, "show", show_command, "a run's metadata and its stored checkpoints, with what each one changed"
    )
    show.add_argument("run_id", type=stored_run_id, metavar="RUN_ID")


def runs_command(args: argparse.Namespace) -> int:
    out = console()
    if sqlite_file_missing(args.store):
        out.print(cell(f"no runs in {args.store}: the file does not exist yet"))
        return 0
    checkpointer = open_store(args.store)
    try:
        runs = checkpointer.runs(args.statuses, args.limit, args.after)
    finally:
        checkpointer.close()
    if not runs:
        which = f" with status {' or '.join(args.statuses)}" if args.statuses else ""
        shown = without_password(args.store)
        out.print(cell(f"no runs{which} in {shown}" + (" after that cursor" if args.after else "")))
        return 0
    listing = table("run", "workflow", "status", "created", "updated", "last seq", "result or error")
    listing.columns[0].min_width = max(len(printable(str(info.run_id))) for info in runs)  # what a reader copies
    for column in (0, 2, 3, 4):
        listing.columns[column].no_wrap = True
    unreadable = 0
    for info in runs:
        try:
            check_info(info)
        except SnapshotError as exc:  # one edited run must not hide the others
            unreadable += 1
            problem = str(exc).partition(": ")[2] or str(exc)
            listing.add_row(cell(info.run_id), cell(info.workflow), cell("unreadable", "red"), "-", "-", "-",
                            cell(clip(problem, 60), "red"))  # fmt: skip
            continue
        outcome = cell(clip(info.error, 60), "red") if info.error else cell(clip(info.result or "", 60))
        listing.add_row(
            cell(info.run_id), cell(info.workflow), cell(info.status, STATUS_STYLES.get(info.status, "")),
            when(info.created_at, compact=True), when(info.updated_at, compact=True), str(info.last_seq), outcome,
        )  # fmt: skip
    out.print(listing)
    if len(runs) == args.limit:  # maybe more: the line that lists the next page
        out.print(cell(f"next page: {shlex.join(_next_page_argv(args, runs[-1].cursor))}"), soft_wrap=True)
        note = password_note(without_password(args.store), alone=True)
        if note:  # on a line of its own: the command's is copied whole
            out.print(cell(note))
    if unreadable:
        print(
            f"warning: {unreadable} stored run(s) have malformed metadata and are listed as unreadable; "
            "`durableflow show RUN_ID` says what is wrong",
            file=sys.stderr,
        )
    return 0


def _next_page_argv(args: argparse.Namespace, cursor: str) -> list[str]:
    argv = ["durableflow", "runs", "--limit", str(args.limit), "--after", cursor]
    for status in args.statuses or ():
        argv += ["--status", status]
    if args.store != DEFAULT_STORE:
        argv += ["--store", without_password(args.store)]
    return argv


def show_command(args: argparse.Namespace) -> int:
    out = console()
    checkpointer = open_store(args.store, must_exist=args.run_id)
    problems: list[str] = []
    try:
        info = checkpointer.info(args.run_id)
        try:
            check_info(info, args.run_id)
        except SnapshotError as exc:
            problems.append(f"its metadata is malformed ({exc})")
        key = record_key(checkpointer)
        try:
            records: Sequence[Any] = checkpointer.load(args.run_id)
        except SnapshotError as exc:
            problems.append(f"its records cannot be read ({exc})")
            records = []
    finally:
        checkpointer.close()
    out.print(about(info))
    first = records[0] if records else None
    if isinstance(first, Record) and isinstance(first.seq, int) and first.seq > 1:
        out.print(f"(records before {first.seq} were folded into the full snapshot {first.seq})")
    checkpoints = table("seq", "kind", "at", "what changed")
    broken = 0
    for seq, kind, at, changes, ok in _record_rows(args.run_id, records, key):
        broken += not ok
        checkpoints.add_row(cell(seq), cell(kind), cell(at), cell(changes, "" if ok else "red"))
    out.print(checkpoints)
    if broken:
        problems.append(f"{broken} of its records are missing or cannot be decoded (the rows marked error)")
    if problems:
        raise SnapshotError(f"run {args.run_id} cannot be resumed: " + "; ".join(problems))
    return 0


def _record_rows(
    run_id: str, records: Sequence[Record], key: bytes | None
) -> Iterator[tuple[str, str, str, str, bool]]:
    """One row per stored record: seq, kind, at, what changed, and whether it decoded."""
    pending: set[str] = set()
    stored: dict[str, Any] = {}  # event id -> [class name, fields], as far as the records went
    if not records:
        yield "-", "-", "", "error: no records are stored for this run (deleted by hand?)", False
    expected: int | None = None
    for record in records:
        try:
            check_record(record, run_id)
        except SnapshotError as exc:
            yield str(getattr(record, "seq", "?")), "?", "", f"error: {exc}", False
            continue
        if expected is None and not record.full:
            yield str(record.seq), "delta", "", "error: the oldest stored record is not a full snapshot", False
        elif expected is not None and record.seq != expected:
            yield f"{expected}-{record.seq - 1}", "?", "", "error: missing (deleted by hand?)", False
        expected = record.seq + 1
        kind = "full" if record.full else "delta"
        try:
            doc = unframe(record.data, run_id, record.seq, key)
            changes = _changes(doc, pending, stored)
        except SnapshotError as exc:
            yield str(record.seq), kind, "", f"error: {exc}", False
            continue
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # well framed, yet not what the engine writes
            yield str(record.seq), kind, "", f"error: malformed record ({type(exc).__name__}: {exc})", False
            continue
        yield str(record.seq), doc["kind"], doc["at"], changes, True


def _buffer(name: str) -> str:
    """A collect buffer is named for its step; the engine's own is named so that no step's name can clash."""
    return "parked (events sent from outside that no step took yet)" if name == PARKED else name


def _changes(doc: dict[str, Any], pending: set[str], stored: dict[str, Any] | None = None) -> str:
    """What one record holds (a full snapshot) or changed (a delta); updates ``pending`` deliveries and the
    ``stored`` events, so that the input a run awaits is shown with what it asks.

    A delta names the run's status and error only when they changed."""
    full = doc["kind"] == "full"
    stored = {} if stored is None else stored
    if full:
        stored.clear()
    stored.update(doc.get("events") or {})
    parts = []
    if "status" in doc:
        parts.append(f"status {doc['status']}")
    if doc.get("error"):
        parts.append(f"error {doc['error']['type']}: {doc['error']['message']}")
    if doc.get("state"):
        parts.append(("state " if full else "state set ") + names(doc["state"]))
    if doc.get("state_del"):
        parts.append("state deleted " + names(doc["state_del"]))
    if doc.get("events"):
        events = [f"{eid} {record[0].rpartition('.')[2]}" for eid, record in doc["events"].items()]
        parts.append(("events " if full else "events added ") + names(events))
    if doc.get("events_del"):
        parts.append("events consumed " + names(str(eid) for eid in doc["events_del"]))
    deliveries = list(doc.get("deliveries", {}))
    if full:
        pending.clear()
    added = [key for key in deliveries if key not in pending]
    updated = [key for key in deliveries if key in pending]
    finished = list(doc.get("deliveries_del", ()))
    pending.update(added)
    pending.difference_update(finished)
    for label, keys in (("pending" if full else "deliveries added", added), ("deliveries updated", updated)):
        if keys:
            parts.append(f"{label} " + names(_delivery(key) for key in keys))
    if finished:
        parts.append("deliveries finished " + names(_delivery(key) for key in finished))
    if doc.get("buffers"):
        parts.append("buffers " + names(map(_buffer, doc["buffers"])))
    if doc.get("buffers_add"):
        parts.append("buffers grown " + names(map(_buffer, doc["buffers_add"])))
    if doc.get("effects"):
        parts.append(("effects " if full else "effects recorded ") + names(doc["effects"]))
    if "awaiting" in doc and (doc["awaiting"] or not full):
        parts.append("awaiting input " + (names(_request(str(eid), stored) for eid in doc["awaiting"]) or "none"))
    if doc.get("result") is not None:
        key, data = doc["result"]
        parts.append("result " + clip(json.dumps(data.get("result") if key == "StopEvent" else data), 80))
    return "; ".join(parts) or "nothing"


def _request(eid: str, stored: dict[str, Any]) -> str:
    """An awaited request as its id, class and fields: what the answer to ``durableflow resume --respond`` is for."""
    name, fields = stored.get(eid) or ("", None)
    return f"{eid} {str(name).rpartition('.')[2]} {clip(json.dumps(fields), 80)}" if fields is not None else eid


def _delivery(key: str) -> str:
    eid, _, step = key.partition(":")
    return f"{step}<-{eid}"
