"""Events: pydantic models, the built-in start/stop pair and the human-in-the-loop pair."""

from datetime import UTC, datetime

import pydantic
import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
    step,
)
from durableflow._events import load_event


class Converted(Event):
    doc_id: int
    pages: list[int] = []  # noqa: RUF012 - pydantic copies field defaults


class Order(StartEvent):
    order_id: int
    express: bool = False


class Shipped(StopEvent):
    tracking: str


def test_event_is_a_validated_pydantic_model() -> None:
    """An Event subclass validates its typed fields like any pydantic model."""
    ev = Converted(doc_id="7", pages=[1, 2])
    assert isinstance(ev, pydantic.BaseModel)
    assert ev.doc_id == 7
    assert ev.model_dump() == {"doc_id": 7, "pages": [1, 2]}
    with pytest.raises(pydantic.ValidationError):
        Converted(doc_id="not a number")


def test_event_get_returns_field_or_default() -> None:
    """Event.get reads a field by name and falls back to the default when there is none."""
    ev = StartEvent(topic="cats")
    assert ev.get("topic") == "cats"
    assert ev.get("missing") is None
    assert ev.get("missing", 42) == 42


def test_start_event_accepts_arbitrary_fields() -> None:
    """StartEvent(**fields) keeps every keyword as an attribute and in its dump."""
    ev = StartEvent(ids=[1, 2, 3], user="ada")
    assert ev.ids == [1, 2, 3]
    assert ev.user == "ada"
    assert ev.model_dump() == {"ids": [1, 2, 3], "user": "ada"}


def test_stop_event_has_result_and_accepts_extra_fields() -> None:
    """StopEvent carries result (None by default) and any extra field."""
    assert StopEvent().result is None
    ev = StopEvent(result={"total": 3}, reason="done")
    assert ev.result == {"total": 3}
    assert ev.reason == "done"


def test_human_in_the_loop_events_accept_extra_fields() -> None:
    """InputRequiredEvent and HumanResponseEvent take whatever fields the workflow needs."""
    ask = InputRequiredEvent(prompt="approve?", amount=12)
    answer = HumanResponseEvent(response="yes", approver="bob")
    assert (ask.prompt, ask.amount) == ("approve?", 12)
    assert (answer.response, answer.approver) == ("yes", "bob")


async def test_run_keywords_become_the_start_event_fields() -> None:
    """wf.run(**fields) builds the StartEvent the first step receives."""

    class Echo(Workflow):
        @step
        async def echo(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=(type(ev).__name__, ev.ids, ev.user))

    assert await Echo().run(ids=[1, 2], user="ada") == ("StartEvent", [1, 2], "ada")


async def test_run_accepts_a_ready_start_event() -> None:
    """wf.run(start_event=...) starts the run with that very event."""

    class Echo(Workflow):
        @step
        async def echo(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=ev.topic)

    assert await Echo().run(start_event=StartEvent(topic="owls")) == "owls"


async def test_run_refuses_both_start_event_and_fields() -> None:
    """Passing start_event and start fields together is an error, not a silent choice."""

    class Echo(Workflow):
        @step
        async def echo(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=ev.topic)

    with pytest.raises(TypeError, match="start_event"):
        Echo().run(start_event=StartEvent(topic="owls"), topic="cats")


async def test_typed_start_event_subclass_is_built_and_validated_from_run_keywords() -> None:
    """A step taking a StartEvent subclass gets it built from wf.run's keywords, with validation."""

    class Shop(Workflow):
        @step
        async def ship(self, ev: Order) -> StopEvent:
            return StopEvent(result=(type(ev).__name__, ev.order_id, ev.express))

    assert await Shop().run(order_id="12") == ("Order", 12, False)
    with pytest.raises(WorkflowRuntimeError, match="Failed creating a start event of type 'Order'"):
        Shop().run(express=True)  # order_id is required


async def test_plain_stop_event_gives_its_result_and_a_subclass_gives_itself() -> None:
    """Awaiting a run gives StopEvent.result, or the whole event when the step returns a StopEvent subclass."""

    class Plain(Workflow):
        @step
        async def end(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=[1, 2], note="ignored by the await")

    class Typed(Workflow):
        @step
        async def end(self, ev: StartEvent) -> Shipped:
            return Shipped(result="ok", tracking="XY1")

    assert await Plain().run() == [1, 2]
    shipped = await Typed().run()
    assert isinstance(shipped, Shipped)
    assert (shipped.result, shipped.tracking) == ("ok", "XY1")


async def test_step_without_ctx_parameter_runs() -> None:
    """A step may take only its event; ctx is injected only when asked for."""

    class Ctxless(Workflow):
        @step
        async def only_event(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="fine")

    assert await Ctxless().run() == "fine"


async def test_context_annotation_may_appear_anywhere() -> None:
    """The event parameter is found by its annotation, not its position."""

    class Reordered(Workflow):
        @step
        async def first(self, ctx: Context, start: StartEvent) -> StopEvent:
            return StopEvent(result=(isinstance(ctx, Context), start.x))

    assert await Reordered().run(x=3) == (True, 3)


def test_a_stored_input_event_is_rebuilt_only_as_a_class_the_workflow_declares() -> None:
    """StepFailedEvent.input_event is stored with its class's name; loading looks that name up among the
    workflow's declared types (by its tail, the module left out) and never imports it."""
    failed = StepFailedEvent(
        step_name="convert",
        input_event=Converted(doc_id=7, note="x"),
        exception=ValueError("bad"),
        attempts=1,
        elapsed_seconds=0.0,
        failed_at=datetime.now(UTC),
    )
    stored = failed.model_dump(mode="json")
    assert stored["input_event"]["qualified_name"].endswith(".Converted")

    declared = load_event(StepFailedEvent, stored, {"Converted": Converted}).input_event  # type: ignore[attr-defined]
    assert type(declared) is Converted and (declared.doc_id, declared.note) == (7, "x")

    undeclared = load_event(StepFailedEvent, stored, {}).input_event  # type: ignore[attr-defined]
    assert type(undeclared) is Event and undeclared.model_dump() == {"doc_id": 7, "pages": [], "note": "x"}

    stored["input_event"]["qualified_name"] = "os.system"
    assert type(load_event(StepFailedEvent, stored, {"Converted": Converted}).input_event) is Event  # type: ignore[attr-defined]
