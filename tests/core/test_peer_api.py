"""The llama-index-workflows surface: free-function steps, validation with its error names, resources that take
resources, config resources, the serializer choice, the test runner, the stream's endings and internal events."""

import asyncio
import json
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    JsonSerializer,
    PickleSerializer,
    Resource,
    ResourceConfig,
    ResourceManager,
    SerializationError,
    SnapshotError,
    StartEvent,
    StepState,
    StepStateChanged,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    WorkflowCancelledEvent,
    WorkflowConfigurationError,
    WorkflowRuntimeError,
    WorkflowTestRunner,
    WorkflowTimedOutEvent,
    WorkflowTimeoutError,
    WorkflowValidationError,
    step,
)


class Half(Event):
    n: int


class Pipeline(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Half:
        return Half(n=ev.n // 2)


@step(workflow=Pipeline)
async def finish(ev: Half) -> StopEvent:
    return StopEvent(result=ev.n)


async def test_a_free_function_is_a_step_of_the_workflow_it_names() -> None:
    """@step(workflow=W) adds a module-level function as a step of W, which runs it like a method."""
    assert await Pipeline().run(n=10) == 5
    assert set(Pipeline()._get_steps()) == {"begin", "finish"}


def test_free_functions_need_a_workflow_and_a_decorator_and_a_free_name() -> None:
    """The peer's messages: no workflow=, no @step, or a name the workflow already has."""
    with pytest.raises(WorkflowValidationError, match="please pass a workflow class to the @step decorator"):

        @step
        def loose(ev: Half) -> None:
            return None

    def plain(ev: Half) -> None:
        return None

    with pytest.raises(WorkflowValidationError, match="is missing the `@step` decorator"):
        Pipeline.add_step(plain)
    with pytest.raises(WorkflowValidationError, match="A step begin is already part of this workflow"):

        @step(workflow=Pipeline)
        def begin(ev: Half) -> None:
            return None


def test_structural_errors_raise_when_the_workflow_is_built() -> None:
    """No step returning StopEvent: WorkflowConfigurationError (a WorkflowValidationError) at construction."""

    class NoEnd(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> None:
            return None

    with pytest.raises(WorkflowConfigurationError, match="At least one Event of type StopEvent must be returned"):
        NoEnd()
    assert issubclass(WorkflowConfigurationError, WorkflowValidationError)


class Island(Event):
    pass


class WithIsland(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="done")

    @step
    async def island(self, ev: Island) -> Island | StopEvent:  # a loop nothing enters
        return StopEvent(result="never")


async def test_graph_checks_fail_the_run_unless_skipped() -> None:
    """An unreachable step fails validation at run(); skip_graph_checks lets an intentional one through."""
    with pytest.raises(WorkflowValidationError, match=r"\[reachability\] Unreachable steps: island"):
        WithIsland().run()
    assert await WithIsland(skip_graph_checks={"reachability"}).run() == "done"
    assert await WithIsland(disable_validation=True).run() == "done"
    with pytest.raises(WorkflowValidationError, match="Unknown graph check names: nope"):
        WithIsland(skip_graph_checks={"nope"})  # type: ignore[arg-type]


class Settings(BaseModel):
    greeting: str


class Greeter:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting


def settings() -> Settings:
    return Settings(greeting="hello")


def greeter(config: Annotated[Settings, Resource(settings)]) -> Greeter:
    return Greeter(config.greeting)


class Greets(Workflow):
    @step
    async def greet(self, ev: StartEvent, who: Annotated[Greeter, Resource(greeter)]) -> StopEvent:
        return StopEvent(result=f"{who.greeting} {ev.name}")


async def test_a_resource_factory_receives_the_resources_it_declares() -> None:
    """greeter() takes Annotated[Settings, Resource(settings)]: it is built first and passed in."""
    assert await Greets().run(name="ada") == "hello ada"


async def test_a_resource_manager_serves_a_resource_set_by_name() -> None:
    """A value set under the factory's name is served instead of building it."""
    manager = ResourceManager()
    await manager.set("greeter", Greeter("hi"))
    assert await Greets(resource_manager=manager).run(name="bob") == "hi bob"


def ping(other: "Annotated[object, Resource(pong)]") -> object:  # a string: pong is defined below
    return object()


def pong(other: Annotated[object, Resource(ping)]) -> object:
    return object()


class Cyclic(Workflow):
    @step
    async def use(self, ev: StartEvent, thing: Annotated[object, Resource(pong)]) -> StopEvent:
        return StopEvent()


def test_validate_resources_builds_them_and_names_a_cycle() -> None:
    """validate(validate_resources=True) builds every resource and names a dependency cycle."""
    with pytest.raises(WorkflowValidationError, match=r"Circular resource dependency detected: pong -> ping"):
        Cyclic().validate(validate_resources=True)
    assert Greets().validate(validate_resources=True) is False


class Configured(Workflow):
    @step
    async def read(
        self, ev: StartEvent, config: Annotated[Settings, ResourceConfig("config.json", path_selector="app")]
    ) -> StopEvent:
        return StopEvent(result=config.greeting)


async def test_resource_config_loads_a_model_from_a_json_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ResourceConfig reads the file (at path_selector) into the annotated model; a missing file fails validate()."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkflowValidationError, match=r"No such file: config\.json"):
        Configured().validate()
    Path("config.json").write_text(json.dumps({"app": {"greeting": "from the file"}}))
    assert await Configured().run() == "from the file"


class Opaque:
    """Not JSON: storable only as a pickle."""

    def __init__(self, value: int) -> None:
        self.value = value


class Keeps(Workflow):
    @step
    async def keep(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.store.set("thing", Opaque(41))
        return StopEvent(result=(await ctx.store.get("thing")).value + 1)


async def test_pickle_is_used_only_when_chosen_and_loads_only_when_chosen() -> None:
    """JSON refuses a non-JSON value at set(); serializer=PickleSerializer() stores it; a snapshot holding a
    pickle loads only with a PickleSerializer, since unpickling runs code."""
    with pytest.raises(SerializationError):
        await Keeps().run()
    handler = Keeps(serializer=PickleSerializer()).run()
    assert await handler == 42
    saved = handler.ctx.to_dict()
    with pytest.raises(SnapshotError, match="pickle"):
        Context.from_dict(Keeps(), saved)
    restored = Context.from_dict(Keeps(), saved, serializer=PickleSerializer())
    assert (await restored.store.get("thing")).value == 41


def test_json_serializer_never_imports_a_stored_class_name() -> None:
    """A pydantic value round-trips when its class is loaded or allowed; a name that is not loaded is refused."""
    serializer = JsonSerializer()
    assert serializer.deserialize(serializer.serialize(Half(n=3, note="x"))) == Half(n=3, note="x")
    forged = json.dumps({"__is_pydantic": True, "value": {}, "qualified_name": "os.system"})
    with pytest.raises(SerializationError, match="not loaded here"):
        serializer.deserialize(forged)
    never_loaded = json.dumps({"__is_pydantic": True, "value": {}, "qualified_name": "antigravity.Thing"})
    with pytest.raises(SerializationError):
        serializer.deserialize(never_loaded)


class Slow(Workflow):
    @step
    async def wait(self, ev: StartEvent, ctx: Context) -> StopEvent:
        ctx.write_event_to_stream(Half(n=1))
        await asyncio.sleep(5)
        return StopEvent()


async def test_a_timed_out_run_ends_its_stream_with_workflow_timed_out_event() -> None:
    """The stream's last event names the timeout and the steps still running; awaiting raises."""
    handler = Slow(timeout=0.05).run()
    events = [ev async for ev in handler.stream_events()]
    assert isinstance(events[0], Half) and isinstance(events[-1], WorkflowTimedOutEvent)
    assert (events[-1].timeout, events[-1].active_steps) == (0.05, ["wait"])
    with pytest.raises(WorkflowTimeoutError, match="Operation timed out"):
        await handler


async def test_cancel_run_ends_the_stream_with_workflow_cancelled_event() -> None:
    """await handler.cancel_run() cancels; the stream ends with WorkflowCancelledEvent, awaiting raises."""
    handler = Slow().run()
    stream = handler.stream_events()
    assert isinstance(await stream.__anext__(), Half)
    await handler.cancel_run()
    assert isinstance(await stream.__anext__(), WorkflowCancelledEvent)
    with pytest.raises(WorkflowCancelledError):
        await handler


async def test_the_test_runner_collects_the_stream_with_internal_events() -> None:
    """WorkflowTestRunner runs to the end; with internal events each step's start and finish are streamed."""
    result = await WorkflowTestRunner(Pipeline()).run(StartEvent(n=4))
    assert result.result == 2
    changes = [e for e in result.collected if isinstance(e, StepStateChanged)]
    assert [(e.name, e.step_state) for e in changes] == [
        ("begin", StepState.RUNNING),
        ("begin", StepState.NOT_RUNNING),
        ("finish", StepState.RUNNING),
        ("finish", StepState.NOT_RUNNING),
    ]
    assert result.event_types[StepStateChanged] == 4
    quiet = await WorkflowTestRunner(Pipeline()).run(StartEvent(n=4), expose_internal=False)
    assert [type(e) for e in quiet.collected] == [StopEvent]


class Base(BaseModel):
    count: int = 0


class Child(Base):
    label: str = ""


class Shared(Workflow):
    @step
    async def first(self, ev: StartEvent, ctx: Context[Base]) -> Half:
        async with ctx.store.edit_state() as state:
            state.count += 1
        return Half(n=1)

    @step
    async def second(self, ev: Half, ctx: Context[Child]) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state.label = f"count={state.count}"
        return StopEvent(result=(await ctx.store.get_state()).label)


async def test_context_of_a_base_and_of_its_child_share_the_childs_state() -> None:
    """Context[Base] in one step and Context[Child] in another: the run's state is a Child."""
    assert await Shared().run() == "count=1"


def helper_reading_the_step_context() -> str:
    return Context.get_step_context().run_id


class Helped(Workflow):
    @step
    async def work(self, ev: StartEvent, ctx: Context) -> StopEvent:
        return StopEvent(result=(helper_reading_the_step_context() == ctx.run_id, await ctx.running_steps()))


async def test_code_a_step_calls_finds_the_step_context() -> None:
    """Context.get_step_context() inside a step is that step's ctx; ctx.running_steps() names the busy steps."""
    assert await Helped().run() == (True, ["work"])
    with pytest.raises(Exception, match="may only be called from within a step function"):
        Context.get_step_context()


class Tick(Event):
    n: int


class Feeds(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Tick:
        return Tick(n=0)

    @step
    async def again(self, ev: Tick) -> Tick:  # feeds itself and never awaits
        return Tick(n=ev.n + 1)

    @step
    async def stop(self, ev: Tick) -> StopEvent:
        return StopEvent(result=ev.n)


async def test_a_step_that_feeds_itself_does_not_starve_the_others() -> None:
    """A worker that finishes a step looks at the other steps' events first, so `stop` gets the first Tick."""
    assert await asyncio.wait_for(Feeds().run(), 5) == 0


class Tally(Workflow):
    @step
    async def count(self, ev: StartEvent, ctx: Context) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state.total = state.get("total", 0) + 2
            state["seen"] = True
        async with ctx.store.edit_state() as state:
            del state.seen
        return StopEvent(result=dict(await ctx.store.get_state()))


async def test_untyped_state_reads_and_writes_as_attributes_and_keys() -> None:
    """edit_state() on untyped state gives a dict whose keys are attributes too."""
    assert await Tally().run() == {"total": 2}


class Merged(Workflow):
    @step
    async def first(self, ev: StartEvent, ctx: Context[Child]) -> Half:
        await ctx.store.set("label", "kept")
        return Half(n=1)

    @step
    async def second(self, ev: Half, ctx: Context[Base]) -> StopEvent:
        await ctx.store.set_state(Base(count=7))  # a Base: its fields replace the Child's, the rest stay
        state = await ctx.store.get_state()
        return StopEvent(result=(type(state).__name__, state.count, state.label))


async def test_set_state_with_a_base_instance_keeps_the_childs_other_fields() -> None:
    """set_state(Base(...)) on Child state updates Base's fields and keeps the others."""
    assert await Merged().run() == ("Child", 7, "kept")


class Asks(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(question="?")

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


async def test_a_restored_request_answered_before_anyone_reads_it_is_not_shown() -> None:
    """A restore puts the pending InputRequiredEvent back on the stream; answered at once, only the end shows."""
    handler = Asks().run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            saved = handler.ctx.to_dict()
            await handler.cancel_run()
            break
    resumed = Asks().run(ctx=Context.from_dict(Asks(), saved))
    resumed.ctx.send_event(HumanResponseEvent(response="yes"))
    assert [event async for event in resumed.stream_events()] == [StopEvent(result="yes")]


async def test_a_state_store_outside_a_run_starts_from_a_model_or_a_dict() -> None:
    """StateStore(Child(...)) is typed like ctx.store; a base model merges; a foreign one is refused."""
    from durableflow import DictState, SerializationError, StateStore, in_memory_state_store

    typed = StateStore(Child(count=2, label="x"))
    await typed.set_state(Base(count=5))
    assert (await typed.get_state()) == Child(count=5, label="x")
    with pytest.raises(ValueError, match="must be of type Child"):
        await typed.set_state(Settings(greeting="no"))  # type: ignore[arg-type]
    untyped = in_memory_state_store(DictState())
    async with untyped.edit_state() as state:
        state["counter"] = 1
    assert await untyped.get("counter") == 1
    assert isinstance(untyped, StateStore)
    assert issubclass(SerializationError, ValueError)


async def test_ctx_store_is_a_state_store_before_during_and_after_a_run() -> None:
    """ctx.store is a StateStore whether the run has not started, is running, or is over; what is set before
    the run is what its steps read."""
    from durableflow import StateStore

    class Reads(Workflow):
        @step
        async def read(self, ctx: Context, ev: StartEvent) -> StopEvent:
            assert isinstance(ctx.store, StateStore)
            return StopEvent(result=await ctx.store.get("seed"))

    wf = Reads()
    ctx = Context(wf)
    assert isinstance(ctx.store, StateStore)
    await ctx.store.set("seed", 3)
    handler = wf.run(ctx=ctx)
    assert await handler == 3
    assert isinstance(handler.ctx.store, StateStore)


async def test_num_concurrent_runs_makes_further_runs_wait_their_turn() -> None:
    """With num_concurrent_runs=2, at most two runs of the instance go at once; the others start, in order,
    as earlier ones end, and every run completes."""
    going: list[int] = []
    most = 0

    class Slow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            nonlocal most
            going.append(ev.n)
            most = max(most, len(going))
            await asyncio.sleep(0.01)
            going.remove(ev.n)
            return StopEvent(result=ev.n)

    wf = Slow(num_concurrent_runs=2)
    assert await asyncio.gather(*(wf.run(n=n) for n in range(5))) == [0, 1, 2, 3, 4]
    assert most == 2
    with pytest.raises(ValueError, match="num_concurrent_runs"):
        Slow(num_concurrent_runs=0)


async def test_run_refuses_a_start_event_that_is_not_one() -> None:
    """run(start_event=...) takes a StartEvent; anything else is a ValueError before the run starts."""

    class One(Workflow):
        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="done")

    with pytest.raises(ValueError, match="must be an instance of 'StartEvent'"):
        One().run(start_event={"topic": "x"})  # type: ignore[arg-type]


async def test_a_context_that_never_ran_says_it_needs_a_running_workflow() -> None:
    """Before its first run a context has nothing to stream, send to or ask about: each says so."""

    class One(Workflow):
        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="done")

    ctx = Context(One())
    for call in (ctx.stream_events, lambda: ctx.send_event(Event())):
        with pytest.raises(WorkflowRuntimeError, match="called before workflow started: it requires a running"):
            call()
    with pytest.raises(WorkflowRuntimeError, match="requires a running workflow"):
        await ctx.running_steps()


async def test_ctx_stream_events_reads_the_running_runs_stream() -> None:
    """ctx.stream_events() of a running context yields what handler.stream_events() would."""

    class Talks(Workflow):
        @step
        async def talk(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Event(word="hi"))
            return StopEvent(result="done")

    handler = Talks().run()
    seen = [ev async for ev in handler.ctx.stream_events()]
    assert [type(ev).__name__ for ev in seen] == ["Event", "StopEvent"] and seen[0].word == "hi"
    assert await handler == "done"


async def test_to_dict_lays_out_state_as_llama_index_workflows_does() -> None:
    """ctx.to_dict()["state"] holds untyped values as JSON texts under state_data._data, and a typed state as
    one JSON text wrapping the model's fields; from_dict reads it back either way."""
    import json

    from pydantic import BaseModel

    class Counts(BaseModel):
        n: int = 0

    class Untyped(Workflow):
        @step
        async def count(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.store.set("n", await ctx.store.get("n", default=0) + 1)
            return StopEvent(result=await ctx.store.get("n"))

    class Typed(Workflow):
        @step
        async def count(self, ctx: Context[Counts], ev: StartEvent) -> StopEvent:
            await ctx.store.set("n", await ctx.store.get("n") + 1)
            return StopEvent(result=await ctx.store.get("n"))

    untyped = Untyped()
    handler = untyped.run()
    await handler
    data = handler.ctx.to_dict()
    assert json.loads(data["state"]["state_data"]["_data"]["n"]) == 1
    assert await untyped.run(ctx=Context.from_dict(untyped, data)) == 2

    typed = Typed()
    handler = typed.run()
    await handler
    data = handler.ctx.to_dict()
    wrapped = json.loads(data["state"]["state_data"])
    assert wrapped["__is_pydantic"] is True and wrapped["value"] == {"n": 1}
    assert await typed.run(ctx=Context.from_dict(typed, data)) == 2
