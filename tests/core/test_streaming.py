"""The event stream and human-in-the-loop: write_event_to_stream, InputRequiredEvent, handler.send_event."""

import asyncio

import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


class Token(Event):
    text: str


class Approved(HumanResponseEvent):
    """A typed human answer: HumanResponseEvent subclasses may be sent from outside."""

    by: str


class Writer(Workflow):
    @step
    async def write(self, ev: StartEvent, ctx: Context) -> StopEvent:
        for word in ev.text.split():
            ctx.write_event_to_stream(Token(text=word))
            await asyncio.sleep(0)
        return StopEvent(result=len(ev.text.split()))


async def test_stream_gives_written_events_then_the_stop_event() -> None:
    """Events written to the stream arrive in order, and the StopEvent ends the stream."""
    handler = Writer().run(text="the quick brown fox")
    events = [ev async for ev in handler.stream_events()]
    assert [ev.text for ev in events[:-1]] == ["the", "quick", "brown", "fox"]
    assert type(events[-1]) is StopEvent and events[-1].result == 4
    assert await handler == 4


async def test_stream_read_after_the_run_finished_still_has_every_event() -> None:
    """Events written before anyone listened are kept for the first reader."""
    handler = Writer().run(text="a b")
    assert await handler == 2
    events = [ev async for ev in handler.stream_events()]
    assert [type(ev).__name__ for ev in events] == ["Token", "Token", "StopEvent"]


async def test_stream_events_written_from_several_steps() -> None:
    """Every step of the run writes to the same stream."""

    class Relay(Workflow):
        @step
        async def first(self, ev: StartEvent, ctx: Context) -> Token:
            ctx.write_event_to_stream(Token(text="first"))
            return Token(text="hand-over")

        @step
        async def second(self, ev: Token, ctx: Context) -> StopEvent:
            ctx.write_event_to_stream(Token(text="second"))
            return StopEvent(result=ev.text)

    handler = Relay().run()
    events = [ev async for ev in handler.stream_events()]
    assert [getattr(ev, "text", None) for ev in events] == ["first", "second", None]


class Approval(Workflow):
    @step
    async def request(self, ev: StartEvent, ctx: Context) -> InputRequiredEvent:
        await ctx.store.set("amount", ev.amount)
        return InputRequiredEvent(prompt=f"approve {ev.amount}?")

    @step
    async def decide(self, ev: HumanResponseEvent, ctx: Context) -> StopEvent:
        amount = await ctx.store.get("amount")
        return StopEvent(result=f"{ev.response}: {amount} by {ev.get('by', 'someone')}")


async def test_human_in_the_loop_round_trip(finish) -> None:
    """An InputRequiredEvent appears on the stream; answering with handler.send_event finishes the run."""
    handler = Approval().run(amount=250)
    prompts = []
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            prompts.append(ev.prompt)
            handler.send_event(HumanResponseEvent(response="approved", by="ann"))
    assert prompts == ["approve 250?"]
    assert await finish(handler) == "approved: 250 by ann"


async def test_run_waits_for_the_human_as_long_as_needed(finish) -> None:
    """A run waiting for input does not finish or fail on its own."""
    handler = Approval().run(amount=1)
    await asyncio.sleep(0.05)
    assert not handler.done()
    handler.send_event(HumanResponseEvent(response="ok"))
    assert await finish(handler) == "ok: 1 by someone"


async def test_typed_human_response_subclass_is_routed(finish) -> None:
    """A step accepting a HumanResponseEvent subclass receives it from handler.send_event."""

    class Typed(Workflow):
        @step
        async def request(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(prompt="who approves?")

        @step
        async def decide(self, ev: Approved) -> StopEvent:
            return StopEvent(result=ev.by)

    handler = Typed().run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            handler.send_event(Approved(by="carol"))
    assert await finish(handler) == "carol"


async def test_input_requested_with_ctx_send_event_reaches_the_stream(finish) -> None:
    """An InputRequiredEvent sent with ctx.send_event also shows up on the stream."""

    class Sent(Workflow):
        @step
        async def request(self, ev: StartEvent, ctx: Context) -> InputRequiredEvent:
            ctx.send_event(InputRequiredEvent(prompt="name?"))
            return None

        @step
        async def greet(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent(result=f"hi {ev.response}")

    handler = Sent().run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            assert ev.prompt == "name?"
            handler.send_event(HumanResponseEvent(response="dan"))
    assert await finish(handler) == "hi dan"


async def test_a_second_reader_of_the_stream_is_refused_rather_than_left_waiting() -> None:
    """While one coroutine waits on handler.stream_events(), another reader gets a WorkflowRuntimeError at once."""
    from durableflow import (
        HumanResponseEvent,
        InputRequiredEvent,
        StartEvent,
        StopEvent,
        Workflow,
        WorkflowRuntimeError,
    )

    class Waits(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(question="?")

        @step
        async def answer(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent(result=ev.response)

    handler = Waits().run()
    first = handler.stream_events()
    assert isinstance(await first.__anext__(), InputRequiredEvent)
    waiting = asyncio.ensure_future(first.__anext__())  # the first reader now waits for more
    await asyncio.sleep(0)
    with pytest.raises(WorkflowRuntimeError, match="one reader"):
        await handler.stream_events().__anext__()
    handler.send_event(HumanResponseEvent(response="ok"))
    assert (await asyncio.wait_for(waiting, timeout=2)).result == "ok"
