"""Steps: async and plain methods, routing by input annotation, num_workers, and graph validation."""

import asyncio
import threading
from typing import Annotated, Optional

import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    Resource,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowValidationError,
    retry_policy,
    step,
)


class Text(Event):
    body: str


class Number(Event):
    value: int


class Loud(Text):
    """A Text subclass: steps accepting Text receive it too."""


class Job(Event):
    n: int


class JobDone(Event):
    n: int


class Orphan(Event):
    pass


# -- running steps -----------------------------------------------------------------------


async def test_plain_def_step_runs_in_a_worker_thread_and_can_use_ctx() -> None:
    """A plain `def` step runs off the event loop's thread and may still write to the stream."""
    loop_thread = threading.get_ident()

    class Mixed(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Number:
            return Number(value=ev.value)

        @step
        def double(self, ev: Number, ctx: Context) -> StopEvent:
            ctx.write_event_to_stream(Text(body="doubling"))
            return StopEvent(result=(ev.value * 2, threading.get_ident() != loop_thread))

    handler = Mixed().run(value=21)
    streamed = [ev async for ev in handler.stream_events()]
    assert await handler == (42, True)
    assert [type(ev) for ev in streamed] == [Text, StopEvent]


async def test_union_input_receives_every_member_type() -> None:
    """A step whose input is `A | B` runs for events of either type."""

    class Both(Workflow):
        @step
        async def fan(self, ev: StartEvent, ctx: Context) -> Text | Number:
            ctx.send_event(Text(body="a"))
            return Number(value=1)

        @step
        async def either(self, ev: Text | Number, ctx: Context) -> StopEvent | None:
            seen = await ctx.store.get("seen", default=[])
            seen.append(type(ev).__name__)
            await ctx.store.set("seen", seen)
            return StopEvent(result=sorted(seen)) if len(seen) == 2 else None

    assert await Both().run() == ["Number", "Text"]


async def test_optional_style_union_return_annotation_is_accepted() -> None:
    """`Optional[Event]` and `Event | None` both declare an emitted event."""

    class Maybe(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Optional[Number]:  # noqa: UP045 - the spelling under test
            return Number(value=5)

        @step
        async def end(self, ev: Number) -> StopEvent | None:
            return StopEvent(result=ev.value)

    assert await Maybe().run() == 5


async def test_subclass_event_is_routed_to_a_step_accepting_its_base() -> None:
    """An event is delivered to steps that accept its class or any base of it."""

    class Shouting(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Loud:
            return Loud(body="HEY")

        @step
        async def hear(self, ev: Text) -> StopEvent:
            return StopEvent(result=(type(ev).__name__, ev.body))

    assert await Shouting().run() == ("Loud", "HEY")


async def test_an_event_goes_to_every_step_that_accepts_it() -> None:
    """Two steps accepting the same event type each get their own delivery."""

    class Split(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Number:
            return Number(value=3)

        @step
        async def left(self, ev: Number, ctx: Context) -> Text:
            return Text(body=f"left{ev.value}")

        @step
        async def right(self, ev: Number, ctx: Context) -> Text:
            return Text(body=f"right{ev.value}")

        @step
        async def join(self, ev: Text, ctx: Context) -> StopEvent | None:
            both = ctx.collect_events(ev, [Text, Text])
            return None if both is None else StopEvent(result=sorted(t.body for t in both))

    assert await Split().run() == ["left3", "right3"]


async def test_step_returning_none_emits_nothing() -> None:
    """A step may return None; the run goes on with the events it sent."""

    class Quiet(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> Number | None:
            ctx.send_event(Number(value=9))
            return None

        @step
        async def end(self, ev: Number) -> StopEvent:
            return StopEvent(result=ev.value)

    assert await Quiet().run() == 9


async def _max_concurrency(num_workers: int, jobs: int) -> tuple[int, list[int]]:
    """Run `jobs` events through a step with `num_workers`; return the peak overlap and the jobs done."""
    active = 0
    peak = 0

    class Pool(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> Job:
            for n in range(jobs):
                ctx.send_event(Job(n=n))
            return None

        @step(num_workers=num_workers)
        async def work(self, ev: Job) -> JobDone:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1
            return JobDone(n=ev.n)

        @step
        async def gather(self, ev: JobDone, ctx: Context) -> StopEvent | None:
            done = ctx.collect_events(ev, [JobDone] * jobs)
            return None if done is None else StopEvent(result=sorted(d.n for d in done))

    result = await asyncio.wait_for(asyncio.ensure_future(Pool().run()), 5)
    return peak, result


async def test_num_workers_bounds_concurrent_executions() -> None:
    """With num_workers=3, at most three invocations of the step overlap, and three really do."""
    peak, done = await _max_concurrency(num_workers=3, jobs=10)
    assert done == list(range(10))
    assert peak == 3


async def test_num_workers_one_serialises_a_step() -> None:
    """With num_workers=1 the step's invocations never overlap."""
    peak, done = await _max_concurrency(num_workers=1, jobs=5)
    assert done == list(range(5))
    assert peak == 1


async def test_plain_def_steps_respect_num_workers() -> None:
    """Thread-run `def` steps are bounded by num_workers too."""
    lock = threading.Lock()
    active = 0
    peak = 0

    class Threads(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> Job:
            for n in range(6):
                ctx.send_event(Job(n=n))
            return None

        @step(num_workers=2)
        def work(self, ev: Job) -> JobDone:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            threading.Event().wait(0.02)
            with lock:
                active -= 1
            return JobDone(n=ev.n)

        @step
        async def gather(self, ev: JobDone, ctx: Context) -> StopEvent | None:
            done = ctx.collect_events(ev, [JobDone] * 6)
            return None if done is None else StopEvent(result=len(done))

    assert await asyncio.wait_for(asyncio.ensure_future(Threads().run()), 5) == 6
    assert peak == 2


# -- validation --------------------------------------------------------------------------


def test_validation_names_a_parameter_without_annotation() -> None:
    """A step parameter with no annotation is rejected, naming the step and the parameter."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin'.*'extra'.*no annotation"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent, extra) -> StopEvent:
                return StopEvent()

        Bad.validate()


def test_validation_names_a_step_without_return_annotation() -> None:
    """A step without a return annotation is rejected, naming the step."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin'.*no return annotation"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent):
                return StopEvent()

        Bad.validate()


def test_validation_rejects_a_non_event_return_annotation() -> None:
    """Returning `int` (not an Event or None) is rejected, naming the step and the annotation."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin'.*return annotation.*int"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent) -> int:
                return 1

        Bad.validate()


def test_validation_rejects_a_return_union_with_a_non_event() -> None:
    """A return union mixing an Event with a non-event type is rejected."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin'.*return annotation"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent) -> StopEvent | str:
                return StopEvent()

        Bad.validate()


def test_validation_rejects_a_list_parameter_beside_an_event_parameter() -> None:
    """A step collecting a list[E] batch takes no other event parameter (several event parameters are a join)."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin'.*'other'.*exactly one event"):

        class Bad(Workflow):
            @step
            async def begin(self, batch: list[Text], other: Text) -> StopEvent:
                return StopEvent()


def test_validation_rejects_a_step_with_no_event_parameter() -> None:
    """A step with nothing annotated as an Event could never run."""

    with pytest.raises(WorkflowValidationError, match=r"step 'idle'.*no parameter is annotated with an Event"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent) -> StopEvent:
                return StopEvent()

            @step
            async def idle(self, ctx: Context) -> None:
                return None

        Bad.validate()


def test_validation_rejects_a_parameter_that_is_not_injectable() -> None:
    """A parameter annotated with a plain type is neither event, ctx nor resource."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin'.*'retries'.*neither an Event"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent, retries: int) -> StopEvent:
                return StopEvent()

        Bad.validate()


def test_validation_rejects_annotated_without_resource() -> None:
    """`Annotated[T, ...]` is only injectable with a Resource(...) in it."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin'.*'client'.*Resource"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent, client: Annotated[dict, "not a resource"]) -> StopEvent:
                return StopEvent()

        Bad.validate()


def test_validation_rejects_var_args() -> None:
    """*args cannot be injected."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin'.*'rest'"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent, *rest: Text) -> StopEvent:
                return StopEvent()

        Bad.validate()


def test_validation_names_an_event_produced_but_never_consumed() -> None:
    """An emitted event no step accepts is rejected, naming the producer and the event."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin' emits Orphan but no step accepts it"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent) -> Orphan | StopEvent:
                return StopEvent()

        Bad.validate()


def test_validation_requires_a_step_taking_start_event() -> None:
    """A workflow no step of which accepts StartEvent cannot begin."""

    with pytest.raises(WorkflowValidationError, match=r"Workflow .Bad. has no @step that accepts StartEvent"):

        class Bad(Workflow):
            @step
            async def middle(self, ev: Text) -> StopEvent | Text:
                return StopEvent()

        Bad.validate()


def test_validation_requires_a_step_producing_stop_event() -> None:
    """A workflow that never returns StopEvent cannot end."""

    with pytest.raises(WorkflowValidationError, match=r"Workflow .Bad. has no @step that returns StopEvent"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent) -> Text:
                return Text(body="x")

            @step
            async def sink(self, ev: Text) -> None:
                return None

        Bad.validate()


def test_validation_names_a_step_accepting_an_event_nobody_emits() -> None:
    """A step waiting for an event no step emits is rejected, naming the step and the event."""

    with pytest.raises(WorkflowValidationError, match=r"step 'never' accepts Number but no step emits it"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent) -> StopEvent:
                return StopEvent()

            @step
            async def never(self, ev: Number) -> StopEvent:
                return StopEvent()

        Bad.validate()


def test_validation_allows_human_events_from_outside_and_input_requests_without_consumer() -> None:
    """HumanResponseEvent needs no producer and InputRequiredEvent needs no consumer."""

    class Asks(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(prompt="?")

        @step
        async def answer(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent(result=ev.response)

    Asks.validate()  # must not raise


def test_validation_rejects_conflicting_typed_states() -> None:
    """Two steps declaring unrelated Context[State] types is an error naming both, raised when validated or run
    (a ValueError too, as llama-index-workflows raises)."""
    from pydantic import BaseModel

    class StateA(BaseModel):
        a: int = 0

    class StateB(BaseModel):
        b: int = 0

    with pytest.raises(
        WorkflowValidationError,
        match=r"different state types: StateA, StateB, which are not in a compatible inheritance hierarchy",
    ):

        class Bad(Workflow):
            @step
            async def begin(self, ev: StartEvent, ctx: Context[StateA]) -> Text:
                return Text(body="")

            @step
            async def end(self, ev: Text, ctx: Context[StateB]) -> StopEvent:
                return StopEvent()

        Bad.validate()


def test_validation_rejects_a_workflow_without_steps() -> None:
    """A Workflow subclass with no @step method is an error."""

    class Empty(Workflow):
        async def not_a_step(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match=r"Workflow .Empty. has no configured steps"):
        Empty.validate()


def test_validation_rejects_two_different_start_event_types() -> None:
    """Only one StartEvent type can begin a run."""

    class StartA(StartEvent):
        pass

    class StartB(StartEvent):
        pass

    with pytest.raises(
        WorkflowValidationError, match="Only one type of StartEvent is allowed per workflow, found 2: StartA, StartB"
    ):

        class Bad(Workflow):
            @step
            async def a(self, ev: StartA) -> StopEvent:
                return StopEvent()

            @step
            async def b(self, ev: StartB) -> StopEvent:
                return StopEvent()

        Bad.validate()


async def test_validation_happens_at_first_run() -> None:
    """An invalid workflow raises WorkflowValidationError from wf.run(), before anything runs."""
    ran = []

    class Bad(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Orphan | StopEvent:
            ran.append(ev)
            return Orphan()

    with pytest.raises(WorkflowValidationError, match="'begin' emits Orphan"):
        Bad().run()
    assert ran == []


def test_validation_resolves_forward_references_at_first_use() -> None:
    """An annotation naming an event defined after the class resolves once the workflow is used."""
    EarlyFlow.validate()  # must not raise


class EarlyFlow(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> "LateEvent":
        return LateEvent()

    @step
    async def end(self, ev: "LateEvent") -> StopEvent:
        return StopEvent()


class LateEvent(Event):
    pass


def test_validation_reports_an_unresolvable_annotation() -> None:
    """A forward reference that does not resolve is a validation error naming the step."""

    with pytest.raises(WorkflowValidationError, match=r"step 'begin'.*cannot resolve"):

        class Bad(Workflow):
            @step
            async def begin(self, ev: "NoSuchEvent") -> StopEvent:  # type: ignore[name-defined] # noqa: F821
                return StopEvent()

        Bad.validate()


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, None])
def test_step_rejects_a_bad_num_workers(bad: object) -> None:
    """@step(num_workers=...) needs an int >= 1 and says so at decoration time."""
    with pytest.raises(WorkflowValidationError, match="num_workers"):
        step(num_workers=bad)  # type: ignore[arg-type]


def test_step_rejects_a_retry_that_is_not_a_policy() -> None:
    """@step(retry=...) needs an object with a next() method."""
    with pytest.raises(WorkflowValidationError, match="retry"):
        step(retry=3)  # type: ignore[arg-type]
    step(retry=retry_policy())  # a real policy is fine


def test_resource_parameters_do_not_count_as_events() -> None:
    """A resource parameter next to the event validates fine."""

    class WithClient(Workflow):
        @step
        async def begin(self, ev: StartEvent, client: Annotated[dict, Resource(dict)]) -> StopEvent:
            return StopEvent()

    WithClient.validate()


async def test_a_subclass_inherits_steps_and_may_override_one() -> None:
    """A workflow subclass runs its parent's steps, with its own version of any step it redefines."""

    class Base(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Number:
            return Number(value=ev.value)

        @step
        async def finish(self, ev: Number) -> StopEvent:
            return StopEvent(result=("base", ev.value))

    class Child(Base):
        @step
        async def finish(self, ev: Number) -> StopEvent:
            return StopEvent(result=("child", ev.value * 10))

    assert await Child().run(value=2) == ("child", 20)
    assert await Base().run(value=2) == ("base", 2)
