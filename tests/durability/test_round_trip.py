"""What `ctx.store.set` accepts, a resume returns unchanged; what it cannot return, `set` refuses."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Callable
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
from durableflow._serialization import MAX_DEPTH

from .crashing import Crash, crash_at


class Stored(Event):
    payload: Any = None


class Keeper(Workflow):
    """Stores what its start event's ``make()`` builds, checkpoints, then returns what the store gives back."""

    def __init__(self, make: Callable[[], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.make = make

    @step
    async def keep(self, ev: StartEvent, ctx: Context) -> Stored:
        await ctx.store.set("value", self.make())
        await ctx.store.set("effect", await ctx.effect("made", self.make))
        await ctx.checkpoint()
        return Stored(payload=self.make())

    @step
    async def give_back(self, ev: Stored, ctx: Context) -> StopEvent:
        return StopEvent(result=[await ctx.store.get("value"), await ctx.store.get("effect"), ev.payload])


async def kept_across_a_crash(make: Callable[[], Any], tmp_path: Path) -> Any:
    """Run Keeper, crash once its value is checkpointed, resume in a new engine, and return what it gives back."""
    with crash_at("step.give_back.start#1"), contextlib.suppress(Crash):
        await Keeper(make, checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).run(run_id="kept")
    return await Keeper(make, checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).resume("kept")


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


TAG_LIKE = [
    {"__event__": "Stored", "data": {"payload": 1}},
    {"__event__": "no.such.Type", "data": {}},
    {"___event__": "escaped once already", "data": 2},
    {"__event__": 5},
    [{"__event__": "StopEvent", "data": {"result": "not an event"}}],
    {"outer": {"__event__": "Stored", "data": {}, "more": True}},
]


@pytest.mark.parametrize("value", TAG_LIKE, ids=lambda value: str(value)[:40])
async def test_user_dicts_shaped_like_the_event_tag_come_back_as_dicts(value: Any, tmp_path: Path) -> None:
    """A dict with an `__event__` key, in state, in an effect's result and in an event field, comes back equal."""
    assert await kept_across_a_crash(lambda: value, tmp_path) == [value, value, value]


@pytest.mark.parametrize("value", [1e308, -0.0, 5e-324, 10**300, "\u202e\x00", [1.5, {"a": None}]])
async def test_values_at_the_edges_of_json_come_back_equal(value: Any, tmp_path: Path) -> None:
    """Extreme floats and integers, NUL and bidi characters survive a crash and resume as they were."""
    kept = await kept_across_a_crash(lambda: value, tmp_path)
    assert kept == [value, value, value]
    if value == 0.0:
        assert all(math.copysign(1, item) == -1 for item in kept)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "where",
    ["state", "nested state", "effect result", "event field", "start field"],
)
async def test_non_finite_floats_are_refused_where_they_are_stored(bad: float, where: str, tmp_path: Path) -> None:
    """NaN and infinities cannot be JSON: set, an effect's result and a checkpointed event refuse them with a
    SerializationError naming the value, instead of storing null that a resume would return."""

    class Probe(Workflow):
        @step
        async def probe(self, ev: StartEvent, ctx: Context) -> StopEvent:
            if where == "state":
                await ctx.store.set("x", bad)
            elif where == "nested state":
                await ctx.store.set("x", {"list": [1, bad]})
            elif where == "effect result":
                await ctx.effect("measure", lambda: {"v": bad})
            elif where == "event field":
                return StopEvent(result={"v": bad})
            return StopEvent(result="stored")

    workflow = Probe(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db"))
    with pytest.raises(SerializationError, match=rf"float {bad!r}"):
        if where == "start field":
            await workflow.run(x=bad)
        else:
            await workflow.run()


class Typed(BaseModel):
    ratio: float = 0.0
    label: str = ""
    tree: list[Any] = []


async def test_typed_state_refuses_what_it_could_not_return(tmp_path: Path) -> None:
    """Typed state refuses NaN (pydantic would write null), a lone surrogate and over-deep nesting at set."""

    class TypedProbe(Workflow):
        @step
        async def probe(self, ev: StartEvent, ctx: Context[Typed]) -> StopEvent:
            errors = []
            for key, value in (("ratio", math.nan), ("label", "\ud800"), ("tree", nested(MAX_DEPTH + 50))):
                try:
                    await ctx.store.set(key, value)
                    errors.append(f"{key} accepted")
                except SerializationError as exc:
                    errors.append(str(exc))
            return StopEvent(result=errors)

    errors = await TypedProbe(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).run()
    assert "float nan" in errors[0]
    assert "surrogate" in errors[1] or "surrogates" in errors[1]
    assert "depth" in errors[2] or "deep" in errors[2]


async def run_in_step(body: Callable[[Context], Awaitable[Any]], tmp_path: Path) -> Any:
    class Probe(Workflow):
        @step
        async def probe(self, ev: StartEvent, ctx: Context) -> StopEvent:
            return StopEvent(result=await body(ctx))

    return await Probe(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).run()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("text", "lone \ud83d surrogate", "lone surrogate"),
        ("in\udcffkey", 1, "lone surrogate"),
        ("deep", nested(MAX_DEPTH + 1), f"more than {MAX_DEPTH} levels"),
        ("deeper", nested(5000), "levels deep"),
    ],
    ids=["surrogate value", "surrogate key", "just too deep", "far too deep"],
)
async def test_values_a_resume_could_not_read_are_refused_at_set(
    key: str, value: Any, message: str, tmp_path: Path
) -> None:
    """A lone surrogate (no store holds it as text) and nesting past MAX_DEPTH raise SerializationError at set."""

    async def body(ctx: Context) -> str:
        with pytest.raises(SerializationError, match=message):
            await ctx.store.set(key, value)
        return "refused"

    assert await run_in_step(body, tmp_path) == "refused"


async def test_nesting_up_to_the_limit_round_trips(tmp_path: Path) -> None:
    """A value nested exactly MAX_DEPTH levels deep is accepted and comes back equal after a resume."""
    value = nested(MAX_DEPTH)
    assert await kept_across_a_crash(lambda: value, tmp_path) == [value, value, value]


class Sleeper(Workflow):
    @step
    async def nap(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.sleep(float(ev.seconds))  # passed as text: the start event itself must be storable
        return StopEvent(result="rested")


@pytest.mark.parametrize("seconds", [math.inf, math.nan])
async def test_a_sleep_that_cannot_be_stored_fails_the_step_with_serialization_error(
    seconds: float, tmp_path: Path
) -> None:
    """ctx.sleep(inf) or (nan) cannot be checkpointed as a deadline: the run fails with SerializationError, and
    the stored run stays loadable."""
    checkpointer = SQLiteCheckpointer(tmp_path / "runs.db")
    with pytest.raises(SerializationError, match="finite number of seconds"):
        await Sleeper(checkpointer=checkpointer).run(run_id="nap", seconds=str(seconds))
    assert checkpointer.info("nap").status == "failed"
    with pytest.raises(SerializationError, match="finite number of seconds"):
        await Sleeper(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).resume("nap")


class Slow(Workflow):
    @step
    async def first(self, ev: StartEvent, ctx: Context) -> Stored:
        await ctx.store.set("first", "done")
        return Stored(payload=1)

    @step
    async def second(self, ev: Stored, ctx: Context) -> StopEvent:
        return StopEvent(result=await ctx.store.get("first"))


@pytest.mark.parametrize("timeout", [math.inf, None, 30.0])
async def test_a_run_without_a_finite_timeout_resumes(timeout: float | None, tmp_path: Path) -> None:
    """Workflow(timeout=inf) means no limit: its run checkpoints, crashes, and resumes to the end."""
    checkpointer = SQLiteCheckpointer(tmp_path / "runs.db")
    with crash_at("step.second.start#1"), contextlib.suppress(Crash):
        await Slow(timeout=timeout, checkpointer=checkpointer).run(run_id="slow")
    assert await Slow(timeout=timeout, checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).resume("slow") == "done"


class Returns(Workflow):
    """Ends with the value it is started with."""

    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.value)


@pytest.mark.parametrize(
    "value", ["done", 'é "quoted" \\ \n \u2028 \U0001f600', "", 7, -(10**30), True, 1.5, {"a": [1, "é"]}]
)
async def test_a_runs_stored_result_is_its_json_text(value: Any) -> None:
    """What ``info().result`` holds is the result as ``json.dumps`` writes it, whatever its type."""
    store = MemoryCheckpointer()
    assert await Returns(checkpointer=store).run(run_id="r", value=value) == value
    assert store.info("r").result == json.dumps(value)
