"""What an event's untyped fields hold comes back as it was after a restart, or the run refuses it.

Pydantic writes whatever a field declared ``Any`` (or not declared at all, as ``wf.run(when=...)`` gives the
start event) holds as JSON, and reads the JSON back as it is: a datetime would come back as a string."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from durableflow import (
    Context,
    Event,
    MemoryCheckpointer,
    SerializationError,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from durableflow._framing import HEADER_SIZE
from durableflow._snapshot import unframe

from .crashing import Crash, crash_at

WHEN = datetime(2026, 12, 1, 3, 0)


class Invoice(BaseModel):
    total: int


class Dated(StartEvent):
    when: datetime


class Middle(Event):
    payload: Any = None
    entries: dict[str, Any] | None = None


class Echo(Workflow):
    """Hands its start event's ``value`` through an ``Any`` field to the result, and the start's own type."""

    @step
    async def hand_on(self, ev: StartEvent) -> Middle:
        return Middle(payload=ev.get("value"), entries={"value": ev.get("value")})

    @step
    async def finish(self, ev: Middle, ctx: Context) -> StopEvent:
        return StopEvent(result=[ev.payload, (ev.entries or {})["value"]])


class Typed(Workflow):
    @step
    async def read(self, ev: Dated) -> StopEvent:
        return StopEvent(result=[type(ev.when).__name__, ev.when.isoformat()])


NOT_JSON = [
    (WHEN, "a datetime.datetime"),
    ({1, 2}, "a set"),
    (Invoice(total=3), "Invoice"),
    ({"a": {1: "one"}}, "a dict key 1 of type int"),
    ([b"raw"], "a bytes"),
]


@pytest.mark.parametrize(("value", "named"), NOT_JSON, ids=[named for _, named in NOT_JSON])
async def test_a_start_value_a_restart_would_change_is_refused_naming_its_field(value: Any, named: str) -> None:
    with pytest.raises(SerializationError) as refused:
        await Echo(checkpointer=MemoryCheckpointer()).run(value=value)
    told = str(refused.value)
    assert "cannot store a StartEvent: its field 'value' holds" in told and named in told
    assert "declare the field with its type" in told


async def test_a_result_a_restart_would_change_is_refused_naming_its_field() -> None:
    class Returns(Workflow):
        @step
        async def make(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=Invoice(total=ev.total))

    with pytest.raises(SerializationError, match=r"cannot store a StopEvent: its field 'result' holds a .*Invoice"):
        await Returns(checkpointer=MemoryCheckpointer()).run(total=3)


async def test_a_run_that_stores_nothing_keeps_any_value() -> None:
    """Only a durable run stores its events: without a checkpointer, a datetime is handed on as it is."""
    assert await Echo().run(value=WHEN) == [WHEN, WHEN]


@pytest.mark.parametrize("value", [{"a": [1, "é", None, True, 1.5]}, (1, 2), "text", 7])
async def test_json_data_in_untyped_fields_comes_back_from_a_crash(value: Any, tmp_path: Path) -> None:
    """A tuple comes back as a list, as ``ctx.store`` documents; everything else as it was."""
    store = SQLiteCheckpointer(tmp_path / "runs.db")
    with crash_at("step.finish.start#1"), contextlib.suppress(Crash):
        await Echo(checkpointer=store).run(run_id="r", value=value)
    expected = list(value) if isinstance(value, tuple) else value
    assert await Echo(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).resume("r") == [expected, expected]


async def test_a_field_declared_with_its_type_comes_back_as_that_type(tmp_path: Path) -> None:
    store = SQLiteCheckpointer(tmp_path / "runs.db")
    with crash_at("step.read.start#1"), contextlib.suppress(Crash):
        await Typed(checkpointer=store).run(run_id="r", start_event=Dated(when=WHEN))
    resumed = await Typed(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).resume("r")
    assert resumed == ["datetime", WHEN.isoformat()]


class Returns(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.get("value"))


@pytest.mark.parametrize(
    "value", ["done", 'a "quoted" \\ back\nslash\t\x00\x1f\x7f', "", "héllo ✓ 𝄞", None, 7, 2.5, [1, "x"]]
)
async def test_the_last_record_holds_the_result_as_pydantic_writes_it(value: Any) -> None:
    """A plain StopEvent's text result is written without pydantic (the last record of most runs): the same text."""
    store = MemoryCheckpointer()
    handler = Returns(checkpointer=store).run(value=value)
    assert await handler == value
    last = store.load(handler.run_id)[-1]
    stored = unframe(last.data, handler.run_id, last.seq)["result"]
    expected = StopEvent(result=value).model_dump_json() if value is not None else "{}"
    assert stored == ["StopEvent", json.loads(expected)]
    assert last.data[HEADER_SIZE:].decode().endswith(f'"result":["StopEvent",{expected}]}}')


async def test_a_result_holding_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(SerializationError):
        await Returns(checkpointer=MemoryCheckpointer()).run(value="lone \ud83d surrogate")
