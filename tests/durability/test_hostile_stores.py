"""Stores edited by hand, resumed through the library: every defect is a SnapshotError naming the run (and the
record) and saying what is wrong, on SQLite and on a real redis-server, never another exception."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from durableflow import (
    Checkpointer,
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RedisCheckpointer,
    SnapshotError,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from durableflow._framing import HEADER_SIZE, seal
from durableflow._snapshot import replay

from .crashing import Crash, crash_at


class Doubled(Event):
    n: int


class Ask(Workflow):
    """Doubles a number, stores it, then asks a human before it ends."""

    @step
    async def double(self, ev: StartEvent, ctx: Context) -> Doubled:
        await ctx.store.set("doubled", ev.n * 2)
        await ctx.effect("note", lambda: "noted")
        return Doubled(n=ev.n * 2)

    @step
    async def ask(self, ev: Doubled) -> InputRequiredEvent:
        return InputRequiredEvent(prefix=f"accept {ev.n}?")

    @step
    async def decide(self, ev: HumanResponseEvent, ctx: Context) -> StopEvent:
        return StopEvent(result=[await ctx.store.get("doubled"), ev.response])


@dataclass
class RawStore:
    """One run's records as raw bytes, read and written behind the checkpointer's back."""

    open: Callable[[], Checkpointer]
    read: Callable[[], list[bytes]]
    write: Callable[[list[bytes]], None]
    seqs: Callable[[], list[int]]


@pytest.fixture(params=["sqlite", "redis"])
def raw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RawStore]:
    if request.param == "sqlite":
        path = tmp_path / "runs.db"

        def rows(db: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return db.execute("SELECT key, data FROM durableflow_records ORDER BY key").fetchall()

        def read() -> list[bytes]:
            with contextlib.closing(sqlite3.connect(path)) as db:
                return [data for _, data in rows(db)]

        def write(records: list[bytes]) -> None:
            with sqlite3.connect(path) as db:
                for (key, _), data in zip(rows(db), records, strict=True):
                    db.execute("UPDATE durableflow_records SET data = ? WHERE key = ?", (data, key))

        def seqs() -> list[int]:
            with contextlib.closing(sqlite3.connect(path)) as db:
                return [key & 0xFFFFFFFF for key, _ in rows(db)]

        yield RawStore(lambda: SQLiteCheckpointer(path), read, write, seqs)
        return
    import redis

    url = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    key = "durableflow:records:{asked}"  # each item: an 8-byte sequence number, a full flag, the record

    def write_items(records: list[bytes]) -> None:
        for index, (item, data) in enumerate(zip(client.lrange(key, 0, -1), records, strict=True)):
            client.lset(key, index, item[:9] + data)

    yield RawStore(
        lambda: RedisCheckpointer(url),
        lambda: [item[9:] for item in client.lrange(key, 0, -1)],
        write_items,
        lambda: [int.from_bytes(item[:8], "big") for item in client.lrange(key, 0, -1)],
    )
    client.close()


async def waiting_run(raw: RawStore) -> None:
    """A run of Ask stored up to its input request; its process died there."""
    with crash_at("checkpoint.write.after#4"), pytest.raises(Crash):
        await Ask(checkpointer=raw.open()).run(run_id="asked", n=21)
    assert len(raw.read()) >= 3


def edit_body(raw: RawStore, index: int, change: Callable[[dict[str, Any]], Any]) -> None:
    """Rewrite record ``index``'s JSON and seal it again with a valid checksum, as a forger would."""
    records, seqs = raw.read(), raw.seqs()
    body = json.loads(records[index][HEADER_SIZE:])
    changed = change(body)
    records[index] = seal(json.dumps(body if changed is None else changed), "asked", seqs[index], None)
    raw.write(records)


def in_format_1(raw: RawStore) -> None:
    """Every record as format 1 wrote it: the same fields, which format 2 extended (format 1 still loads)."""
    for index in range(len(raw.read())):
        edit_body(raw, index, lambda body: {**body, "format": 1})


def awaited(raw: RawStore) -> int:
    """The id of the event the stored run waits on: one it holds to the end."""
    return int(replay(raw.open().load("asked"), "asked")["awaiting"][0])


def full(body: dict[str, Any]) -> dict[str, Any]:
    assert body["kind"] == "full"
    return body


EDITS: dict[str, tuple[Callable[[RawStore], None], str]] = {
    "a newer magic": (
        lambda raw: raw.write([b"DFR9" + data[4:] for data in raw.read()]),
        r"record 1: not a durableflow record \(foreign data or a newer format\)",
    ),
    "a newer format number": (
        lambda raw: edit_body(raw, 0, lambda body: {**body, "format": 3}),
        r"record 1: record format 3 is not supported",
    ),
    "every record in format 1 (before buffers_add)": (lambda raw: in_format_1(raw), ""),
    "the format as true": (
        lambda raw: edit_body(raw, 0, lambda body: {**body, "format": True}),
        r"record 1: record format True is not supported",
    ),
    "records swapped": (
        lambda raw: raw.write([raw.read()[1], raw.read()[0], *raw.read()[2:]]),
        r"record 1: checksum mismatch",
    ),
    "a record of another run": (
        lambda raw: raw.write(
            [
                seal(data[HEADER_SIZE:].decode(), "other-run", 2, None) if i == 1 else data
                for i, data in enumerate(raw.read())
            ]
        ),
        r"record 2: checksum mismatch.*belongs to another run",
    ),
    "a full snapshot claiming another run": (
        lambda raw: edit_body(raw, 0, lambda body: {**full(body), "run_id": "other-run"}),
        r"record 1: malformed full record: it is a snapshot of run 'other-run'",
    ),
    "the status missing": (
        lambda raw: edit_body(raw, 0, lambda body: {k: v for k, v in full(body).items() if k != "status"}),
        r"record 1: malformed full record: status is missing",
    ),
    "a status nobody writes": (
        lambda raw: edit_body(raw, -1, lambda body: {**body, "status": "paused"}),
        r"malformed delta record: status is not a run status: 'paused'",
    ),
    "a deadline as text": (
        lambda raw: edit_body(raw, 0, lambda body: {**body, "deadline": "tomorrow"}),
        r"deadline is not a finite time or null",
    ),
    "an awaited event it does not hold": (
        lambda raw: edit_body(raw, -1, lambda body: {**body, "awaiting": [999]}),
        r"inconsistent run: it owes events 999 that it does not hold",
    ),
    "a delivery to a removed step": (
        lambda raw: edit_body(
            raw, -1, lambda body: {**body, "deliveries": {f"{awaited(raw)}:vanished": [0, [], 1, 0, 0, 0]}}
        ),
        r"step 'vanished' is pending but the workflow has no such step",
    ),
    "an event id reused": (
        lambda raw: edit_body(raw, -1, lambda body: {**body, "next_eid": 1}),
        r"next_eid 1 would reuse the id of a stored event",
    ),
    "completed without a result": (
        lambda raw: edit_body(raw, -1, lambda body: {**body, "status": "completed"}),
        r"inconsistent run: it is completed without a result",
    ),
    "a state value naming an undeclared event": (
        lambda raw: edit_body(
            raw, -1, lambda body: body.setdefault("state", {}).update(doubled={"__event__": "os.system", "data": {}})
        ),
        r"names event type 'os.system', which the workflow does not declare",
    ),
    "an event of an undeclared type": (
        lambda raw: edit_body(raw, -1, lambda body: {**body, "events": {str(awaited(raw)): ["subprocess.Popen", {}]}}),
        r"event \d+ has type 'subprocess.Popen', which .* does not declare",
    ),
    "a sleep deadline as text": (
        lambda raw: edit_body(raw, -1, lambda body: {**body, "deliveries": {"3:decide": [0, ["soon"], 1, 0, 0, 0]}}),
        r"deliveries is not an object of pending deliveries",
    ),
    "an effect key that is a number": (
        lambda raw: raw.write(
            [
                seal(
                    data[HEADER_SIZE:].decode().replace('"effects":{"note"', '"effects":{"1":{"x":1},"note"'),
                    "asked",
                    seq,
                    None,
                )
                for data, seq in zip(raw.read(), raw.seqs(), strict=True)
            ]
        ),  # an extra effect is data, not a defect: the run still resumes
        "",
    ),
    "a body that is a list": (
        lambda raw: raw.write([seal("[1, 2]", "asked", raw.seqs()[0], None), *raw.read()[1:]]),
        r"record 1: record is not a JSON object",
    ),
    "a body nested far too deep": (
        lambda raw: raw.write([seal("[" * 50_000 + "]" * 50_000, "asked", raw.seqs()[0], None), *raw.read()[1:]]),
        r"record 1: record is not valid JSON",
    ),
    "an integer of 5000 digits": (
        lambda raw: raw.write(
            [seal('{"format": 1, "n": ' + "9" * 5000 + "}", "asked", raw.seqs()[0], None), *raw.read()[1:]]
        ),
        r"record 1: record is not valid JSON",
    ),
    "every record truncated to its header": (
        lambda raw: raw.write([data[: HEADER_SIZE - 1] for data in raw.read()]),
        r"record 1: record is truncated",
    ),
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
async def test_a_store_edited_by_hand_resumes_or_raises_a_snapshot_error_saying_what(raw: RawStore, edit: str) -> None:
    """Each hand edit of a stored run raises SnapshotError naming the run (and the record) and the defect;
    an edit that leaves a loadable run (an extra effect record) lets it resume to the end."""
    change, message = EDITS[edit]
    await waiting_run(raw)
    change(raw)
    if not message:
        handler = Ask(checkpointer=raw.open()).resume("asked")
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                handler.send_event(HumanResponseEvent(response="yes"))
        assert await handler == [42, "yes"]
        return
    with pytest.raises(SnapshotError, match=message) as raised:
        await Ask(checkpointer=raw.open()).resume("asked")
    assert str(raised.value).startswith("run 'asked'")
