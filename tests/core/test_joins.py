"""A step with several event parameters is a join: it runs once one event of each has arrived, durably."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from durableflow import (
    Context,
    Event,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowValidationError,
    catch_error,
    step,
)
from durableflow.testing import explore


class Header(Event):
    value: str


class Body(Event):
    value: str


class SendsHeaderAndBody(Workflow):
    """Sends one Header and one Body; each test adds the join that takes them."""

    @step
    async def emit(self, ctx: Context, ev: StartEvent) -> Header | Body | None:
        ctx.send_event(Header(value="h"))
        ctx.send_event(Body(value="b"))
        return None


class Footer(Event):
    value: str


class Assemble(Workflow):
    @step
    async def emit(self, ctx: Context, ev: StartEvent) -> Header | Body | Footer | None:
        ctx.send_event(Footer(value="f"))
        ctx.send_event(Header(value="h"))
        ctx.send_event(Body(value="b"))
        return None

    @step
    async def assemble(self, ctx: Context, h: Header, b: Body, f: Footer) -> StopEvent:
        calls = await ctx.store.get("calls", default=0) + 1
        await ctx.store.set("calls", calls)
        return StopEvent(result={"joined": h.value + b.value + f.value, "calls": calls})


async def test_a_join_fires_once_with_each_event_bound_by_its_type() -> None:
    """Arriving footer first, the three events still bind to their own parameters, in one call."""
    assert await Assemble().run() == {"joined": "hbf", "calls": 1}


class Pairs(Workflow):
    pairs: ClassVar[list[tuple[str, str]]] = []

    @step
    async def emit(self, ctx: Context, ev: StartEvent) -> Header | None:
        for value in "abcd":
            ctx.send_event(Header(value=value))
        return None

    @step(num_workers=1)
    async def pair(self, first: Header, second: Header) -> Body:
        self.pairs.append((first.value, second.value))
        return Body(value=first.value + second.value)

    @step
    async def finish(self, ctx: Context, ev: Body) -> StopEvent | None:
        seen = [*await ctx.store.get("seen", default=[]), ev.value]
        await ctx.store.set("seen", seen)
        return StopEvent(result=sorted(seen)) if len(seen) == 2 else None


async def test_parameters_of_one_type_bind_in_arrival_order_batch_after_batch() -> None:
    """Four headers make two pairs, each in the order the headers arrived."""
    Pairs.pairs.clear()
    assert await Pairs().run() == ["ab", "cd"]
    assert Pairs.pairs == [("a", "b"), ("c", "d")]


async def test_the_join_keeps_its_own_buffer() -> None:
    """ctx.collect_events inside the join starts empty: the join's pending events are not in it."""

    class Buffers(SendsHeaderAndBody):
        @step
        async def assemble(self, ctx: Context, h: Header, b: Body) -> StopEvent:
            return StopEvent(result=ctx.collect_events(b, [Header, Body]) is None)

    assert await Buffers().run() is True


async def test_a_failed_join_hands_its_last_arrival_to_catch_error() -> None:
    """The join's input, for @catch_error, is the event that completed the set."""

    class Recovers(SendsHeaderAndBody):
        @step
        async def assemble(self, h: Header, b: Body) -> StopEvent:
            raise RuntimeError(h.value + b.value)

        @catch_error(for_steps=["assemble"])
        async def recover(self, ev: StepFailedEvent) -> StopEvent:
            return StopEvent(result=[type(ev.input_event).__name__, str(ev.exception)])

    assert await Recovers().run() == ["Body", "hb"]


def test_a_join_parameter_takes_a_single_event_type() -> None:
    """A union in a join is ambiguous: refused when the step is declared."""

    class Host(Workflow):
        pass

    with pytest.raises(WorkflowValidationError, match="single event type"):

        @step(workflow=Host)
        async def assemble(h: Header, b: Body | Footer) -> StopEvent:
            return StopEvent(result="x")


def test_the_step_config_lists_the_join_parameters() -> None:
    """`_step_config.collect_params` names each joined parameter and its type."""
    config: Any = Assemble.assemble._step_config  # type: ignore[attr-defined]
    assert config.collect_params == [("h", Header), ("b", Body), ("f", Footer)]
    assert config.accepted_events == [Header, Body, Footer]


def test_a_crash_anywhere_joins_each_event_once() -> None:
    """Killed at every crash point and resumed, the join fires once with all three."""
    report = explore(Assemble, {}, depth=1, seed=5)
    assert report.scenarios and report.ok, report.summary()
    assert any(o.id.startswith("step.assemble.") for o in report.scenarios)
