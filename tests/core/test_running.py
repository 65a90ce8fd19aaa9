"""Running a workflow: timeouts, subclasses with their own __init__, and the handler wf.run returns."""

import asyncio
from typing import Any

import pytest

from durableflow import (
    Context,
    DurableflowError,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    WorkflowFailedEvent,
    WorkflowHandler,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    step,
)


class Progress(Event):
    percent: int


class Unwanted(Event):
    pass


class Sleepy(Workflow):
    @step
    async def nap(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(ev.seconds)
        return StopEvent(result="rested")


class Boom(Exception):
    pass


async def test_timeout_fails_the_run_with_workflow_timeout_error() -> None:
    """A run that outlives Workflow(timeout=...) fails with WorkflowTimeoutError, itself a TimeoutError."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WorkflowTimeoutError) as caught:
        await Sleepy(timeout=0.05).run(seconds=2)
    assert loop.time() - started < 1.0
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, WorkflowRuntimeError)


async def test_timeout_none_means_no_limit() -> None:
    """The same slow run that a short timeout kills finishes when timeout is None (the default)."""
    assert Sleepy().timeout is None
    assert await Sleepy(timeout=None).run(seconds=0.1) == "rested"
    assert await Sleepy().run(seconds=0.1) == "rested"


async def test_run_within_its_timeout_succeeds() -> None:
    """A timeout that is not reached changes nothing."""
    assert await Sleepy(timeout=5).run(seconds=0.01) == "rested"


class Client:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.calls: list[str] = []

    def greet(self, name: str) -> str:
        self.calls.append(name)
        return f"{self.prefix} {name}"


class Greeter(Workflow):
    def __init__(self, client: Client, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.client = client

    @step
    async def greet(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=self.client.greet(ev.name))


async def test_subclass_with_its_own_init_keeps_its_client() -> None:
    """A workflow subclass can take its own constructor arguments and use them in steps."""
    client = Client("hello")
    wf = Greeter(client, timeout=5)
    assert wf.timeout == 5
    assert await wf.run(name="ada") == "hello ada"
    assert await wf.run(name="bob") == "hello bob"
    assert client.calls == ["ada", "bob"]


async def test_run_returns_an_awaitable_handler_with_a_run_id_and_ctx() -> None:
    """wf.run gives a WorkflowHandler: awaitable, with a unique run_id and the run's context."""

    class Counter(Workflow):
        @step
        async def count(self, ev: StartEvent, ctx: Context) -> StopEvent:
            await ctx.store.set("seen", ev.n)
            return StopEvent(result=ev.n + 1)

    wf = Counter()
    first, second = wf.run(n=1), wf.run(n=2)
    assert isinstance(first, WorkflowHandler)
    assert first.run_id and second.run_id and first.run_id != second.run_id
    assert (await first, await second) == (2, 3)
    assert first.ctx.run_id == first.run_id
    assert await first.ctx.store.get("seen") == 1
    assert await second.ctx.store.get("seen") == 2
    assert first.done() and first.result() == 2


async def test_run_id_can_be_chosen() -> None:
    """wf.run(run_id=...) names the run."""
    handler = Sleepy().run(run_id="nightly-42", seconds=0)
    assert handler.run_id == "nightly-42"
    assert await handler == "rested"
    assert handler.ctx.run_id == "nightly-42"


@pytest.mark.parametrize("run_id", ["", 42])
async def test_a_run_id_that_is_not_a_non_empty_string_is_refused(run_id: Any) -> None:
    with pytest.raises(ValueError, match="run_id must be a non-empty string"):
        Sleepy().run(run_id=run_id, seconds=0)


async def test_concurrent_runs_of_one_instance_do_not_share_state() -> None:
    """Two runs of the same workflow instance each have their own store."""

    class Accumulate(Workflow):
        @step
        async def add(self, ev: StartEvent, ctx: Context) -> StopEvent:
            for _ in range(3):
                await ctx.store.set("total", await ctx.store.get("total", default=0) + ev.step)
                await asyncio.sleep(0)
            return StopEvent(result=await ctx.store.get("total"))

    wf = Accumulate()
    assert await asyncio.gather(wf.run(step=1), wf.run(step=10)) == [3, 30]


async def test_context_from_a_finished_run_carries_state_into_a_new_run() -> None:
    """wf.run(ctx=handler.ctx) of a finished run starts a new run that sees the old state."""

    class Visits(Workflow):
        @step
        async def visit(self, ev: StartEvent, ctx: Context) -> StopEvent:
            visits = await ctx.store.get("visits", default=0) + 1
            await ctx.store.set("visits", visits)
            return StopEvent(result=visits)

    wf = Visits()
    first = wf.run()
    assert await first == 1
    second = wf.run(ctx=first.ctx)
    assert await second == 2
    assert second.run_id != first.run_id


async def test_context_of_another_workflow_is_refused() -> None:
    """A context built for one workflow class cannot drive another."""
    other = Context(Greeter(Client("hi")))
    with pytest.raises(WorkflowRuntimeError, match="belongs to"):
        Sleepy().run(ctx=other, seconds=0)


async def test_a_failing_step_fails_the_run_with_the_original_exception() -> None:
    """Awaiting a run whose step raised re-raises that very exception."""
    raised = Boom("disk on fire")

    class Fragile(Workflow):
        @step
        async def explode(self, ev: StartEvent) -> StopEvent:
            raise raised

    with pytest.raises(Boom) as caught:
        await Fragile().run()
    assert caught.value is raised


async def test_a_step_returning_a_non_event_fails_the_run() -> None:
    """A step that returns something other than an Event or None fails the run, naming the step."""

    class Sloppy(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> StopEvent:
            return "done"  # type: ignore[return-value]

    with pytest.raises(WorkflowRuntimeError, match=r"Step function begin returned str instead of an Event instance"):
        await Sloppy().run()


async def test_stream_events_yields_written_events_in_order_then_the_stop_event() -> None:
    """stream_events gives every event written to the stream, in order, ending with the StopEvent."""

    class Reporter(Workflow):
        @step
        async def work(self, ev: StartEvent, ctx: Context) -> StopEvent:
            for percent in (25, 50, 100):
                ctx.write_event_to_stream(Progress(percent=percent))
                await asyncio.sleep(0)
            return StopEvent(result="ok")

    handler = Reporter().run()
    streamed = [ev async for ev in handler.stream_events()]
    assert [ev.percent for ev in streamed[:-1]] == [25, 50, 100]
    assert isinstance(streamed[-1], StopEvent) and streamed[-1].result == "ok"
    assert await handler == "ok"


async def test_stream_events_of_a_failed_run_ends_with_a_workflow_failed_event() -> None:
    """A stream of a failed run yields what was written, then a WorkflowFailedEvent naming the step and error;
    awaiting the handler raises the error."""

    class HalfWay(Workflow):
        @step
        async def work(self, ev: StartEvent, ctx: Context) -> StopEvent:
            ctx.write_event_to_stream(Progress(percent=50))
            await asyncio.sleep(0)
            raise Boom("half way")

    handler = HalfWay().run()
    seen = [ev async for ev in handler.stream_events()]
    assert [ev.percent for ev in seen[:-1]] == [50]
    assert isinstance(seen[-1], WorkflowFailedEvent)
    assert (seen[-1].step_name, seen[-1].attempts, str(seen[-1].exception)) == ("work", 1, "half way")
    with pytest.raises(Boom):
        await handler
    with pytest.raises(WorkflowRuntimeError, match="already been consumed"):
        await handler.stream_events().__anext__()


async def test_send_event_delivers_an_event_from_outside(finish) -> None:
    """handler.send_event hands a HumanResponseEvent to the step that accepts it."""

    class Approval(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(prompt=f"approve {ev.amount}?")

        @step
        async def decide(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent(result=ev.response)

    handler = Approval().run(amount=10)
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            assert ev.prompt == "approve 10?"
            handler.send_event(HumanResponseEvent(response="yes"))
    assert await finish(handler) == "yes"


async def test_send_event_nobody_accepts_is_refused() -> None:
    """handler.send_event of an event no step accepts raises WorkflowRuntimeError."""
    gate = asyncio.Event()

    class Waiting(Workflow):
        @step
        async def wait(self, ev: StartEvent) -> StopEvent:
            await gate.wait()
            return StopEvent(result="ok")

    handler = Waiting().run()
    with pytest.raises(WorkflowRuntimeError, match="Unwanted"):
        handler.send_event(Unwanted())
    gate.set()
    assert await handler == "ok"


async def test_send_event_to_a_finished_run_is_refused() -> None:
    """A run that has ended takes no more events."""
    handler = Sleepy().run(seconds=0)
    await handler
    with pytest.raises(WorkflowRuntimeError):
        handler.send_event(HumanResponseEvent(response="late"))


async def test_cancel_fails_the_run_with_workflow_cancelled_error() -> None:
    """handler.cancel() stops a running step and awaiting the handler raises WorkflowCancelledError."""
    started = asyncio.Event()
    finished = []

    class Long(Workflow):
        @step
        async def long(self, ev: StartEvent) -> StopEvent:
            started.set()
            await asyncio.sleep(10)
            finished.append(True)
            return StopEvent(result="too late")

    handler = Long().run()
    await asyncio.wait_for(started.wait(), 2)
    handler.cancel()
    with pytest.raises(WorkflowCancelledError) as caught:
        await asyncio.wait_for(asyncio.ensure_future(handler), 2)
    assert isinstance(caught.value, DurableflowError)
    await asyncio.sleep(0.01)
    assert finished == []


async def test_cancel_after_the_run_ended_changes_nothing() -> None:
    """Cancelling a finished run keeps its result."""
    handler = Sleepy().run(seconds=0)
    assert await handler == "rested"
    handler.cancel()
    assert await handler == "rested"


class Query(StartEvent):
    text: str


class TakesAnyStart(Workflow):
    @step
    async def echo(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=type(ev).__name__)


async def test_a_start_event_class_set_on_the_instance_is_what_run_fields_build() -> None:
    """Ported code sets ``wf._start_event_class``; ``run(**fields)`` then builds (and checks) that class."""
    wf = TakesAnyStart()
    wf._start_event_class = Query
    assert wf.start_event_class is Query
    assert await wf.run(text="hi") == "Query"
    with pytest.raises(WorkflowRuntimeError, match="Failed creating a start event of type 'Query'"):
        wf.run(wrong="x")
    assert TakesAnyStart().start_event_class is StartEvent  # one instance's choice only
    with pytest.raises(TypeError, match="StartEvent subclass"):
        wf.start_event_class = StopEvent  # type: ignore[assignment]
