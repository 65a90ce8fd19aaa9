"""Events keep the fields nobody declared: attribute and dict access, in the stream, in checkpoints, after resume."""

import asyncio

from durableflow import Context, Event, MemoryCheckpointer, StartEvent, StopEvent, Workflow, step


class Note(Event):
    author: str = "ada"


class Finished(StopEvent):
    pages: int


def test_undeclared_fields_read_as_attributes_items_and_get() -> None:
    """Event(msg="x") keeps msg: ev.msg, ev["msg"] and ev.get("msg") all read it, and writes go both ways."""
    ev = Note(msg="x", n=2)
    assert (ev.msg, ev["msg"], ev.get("msg"), ev.get("absent", 0)) == ("x", "x", "x", 0)
    assert ev.author == "ada" and ev.get("author") == "ada"
    ev.msg = "y"
    ev["extra"] = True
    assert dict(ev.items()) == {"msg": "y", "n": 2, "extra": True}
    assert "msg" in ev and len(ev) == 3
    assert ev.model_dump() == {"author": "ada", "msg": "y", "n": 2, "extra": True}
    assert ev._data == {"msg": "y", "n": 2, "extra": True}


def test_stop_event_dumps_and_prints_like_its_fields() -> None:
    """StopEvent's dump holds result only when set; its repr lists undeclared fields and the result."""
    assert StopEvent(result="foo").model_dump() == {"result": "foo"}
    assert Finished(pages=3).model_dump() == {"pages": 3}
    assert repr(StopEvent(foo="foo", result=42)) == "StopEvent(foo='foo', result=42)"
    assert repr(Finished(pages=3)) == "Finished(pages=3)"
    assert str(StopEvent(result=42)) == "42"


class Relay(Workflow):
    @step
    async def forward(self, ev: StartEvent, ctx: Context) -> Note:
        ctx.write_event_to_stream(Note(msg=ev.msg, shown=True))
        return Note(msg=ev["msg"], hops=1)

    @step
    async def finish(self, ev: Note) -> Finished:
        return Finished(pages=ev.hops, msg=ev.msg)


async def test_undeclared_fields_survive_the_stream_and_the_result() -> None:
    """What a step writes to the stream and what the run returns keep their undeclared fields."""
    handler = Relay().run(msg="hello")
    streamed = [ev async for ev in handler.stream_events()]
    result = await handler
    assert streamed[0].msg == "hello" and streamed[0].shown is True
    assert (result.pages, result.msg) == (1, "hello")


class Gated(Workflow):
    gate: asyncio.Event | None = None

    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        if self.gate is not None:
            await self.gate.wait()
        return StopEvent(result=f"{ev.msg}/{ev['n']}/{ev.get('tags')}")


async def test_undeclared_fields_survive_to_dict_and_from_dict() -> None:
    """A start event's undeclared fields are in ctx.to_dict(), so the restored run's step reads them again."""
    first = Gated()
    first.gate = asyncio.Event()
    handler = first.run(msg="hi", n=3, tags=["a"])
    await asyncio.sleep(0.01)
    saved = handler.ctx.to_dict()
    handler.cancel()
    restored = Context.from_dict(Gated(), saved)
    assert await Gated().run(ctx=restored) == "hi/3/['a']"


async def test_undeclared_fields_survive_a_checkpointed_resume() -> None:
    """A run resumed from its checkpoints delivers the stored event with its undeclared fields."""
    store = MemoryCheckpointer()
    first = Gated(checkpointer=store)
    first.gate = asyncio.Event()
    handler = first.run(msg="hey", n=7, tags=None)
    await asyncio.sleep(0.01)
    handler.cancel()
    assert await Gated(checkpointer=store).resume(handler.run_id) == "hey/7/None"


def test_a_private_attribute_given_to_the_constructor_is_set_not_kept_as_a_field() -> None:
    """Event(_secret=...) on a class declaring _secret as a PrivateAttr sets it; it is not an undeclared field
    and is not in the dump; other undeclared fields are kept."""
    from pydantic import PrivateAttr

    from durableflow import Event

    class Signed(Event):
        body: str
        _secret: str = PrivateAttr(default="")

    ev = Signed(body="hi", _secret="k", note="n")
    assert ev._secret == "k"
    assert ev._data == {"note": "n"}
    assert ev.model_dump() == {"body": "hi", "note": "n"}
