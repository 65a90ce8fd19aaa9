"""ctx.store: get/set/delete/clear, dotted paths, copies, edit_state, and values that cannot be stored."""

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from durableflow import (
    Context,
    DurableflowError,
    Event,
    SerializationError,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


class Probe(Workflow):
    """Runs one coroutine inside a step and returns what it returns, so each test reads as step code."""

    def __init__(self, body: Callable[[Context], Awaitable[Any]]) -> None:
        super().__init__(timeout=5)
        self.body = body

    @step
    async def probe(self, ev: StartEvent, ctx: Context) -> StopEvent:
        return StopEvent(result=await self.body(ctx))


async def in_step(body: Callable[[Context], Awaitable[Any]]) -> Any:
    return await Probe(body).run()


async def test_set_then_get_returns_the_value() -> None:
    """A value set in the store is what get returns."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("user", {"name": "ada", "tags": ["x", "y"], "age": 36, "ok": True, "none": None})
        return await ctx.store.get("user")

    assert await in_step(body) == {"name": "ada", "tags": ["x", "y"], "age": 36, "ok": True, "none": None}


async def test_get_missing_key_raises_key_error_unless_default_given() -> None:
    """get of an absent key raises KeyError naming it, or returns default= when given (even None). It is the
    ValueError llama-index-workflows raises too, with its message, so a ported ``except ValueError`` holds."""

    async def body(ctx: Context) -> Any:
        with pytest.raises(KeyError, match="missing"):
            await ctx.store.get("missing")
        with pytest.raises(ValueError, match=r"^Path 'missing' not found in state$"):
            await ctx.store.get("missing")
        with pytest.raises(ValueError, match=r"^Path 'a\.b' not found in state$"):
            await ctx.store.get("a.b")
        return [await ctx.store.get("missing", default=[]), await ctx.store.get("missing", default=None)]

    assert await in_step(body) == [[], None]


async def test_dotted_paths_read_into_dicts_and_lists() -> None:
    """get("a.b.0") walks nested dicts and list indexes."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("doc", {"pages": [{"n": 1}, {"n": 2}], "meta": {"title": "t"}})
        return [
            await ctx.store.get("doc.meta.title"),
            await ctx.store.get("doc.pages.1.n"),
            await ctx.store.get("doc.pages.5", default="none"),
            await ctx.store.get("doc.meta.author", default="anon"),
        ]

    assert await in_step(body) == ["t", 2, "none", "anon"]


async def test_dotted_path_missing_inside_a_value_raises_key_error() -> None:
    """A dotted path that leads nowhere raises KeyError with the full path."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("doc", {"meta": {}})
        with pytest.raises(KeyError, match=r"doc\.meta\.title"):
            await ctx.store.get("doc.meta.title")
        with pytest.raises(KeyError, match=r"doc\.0"):
            await ctx.store.get("doc.0")
        return "ok"

    assert await in_step(body) == "ok"


async def test_dotted_set_creates_and_updates_nested_values() -> None:
    """set("a.b.c", v) creates the missing dicts and keeps the siblings."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("config.db.host", "localhost")
        await ctx.store.set("config.db.port", 5432)
        await ctx.store.set("config.name", "prod")
        await ctx.store.set("items", [1, 2, 3])
        await ctx.store.set("items.1", 20)
        return [await ctx.store.get("config"), await ctx.store.get("items")]

    assert await in_step(body) == [{"db": {"host": "localhost", "port": 5432}, "name": "prod"}, [1, 20, 3]]


async def test_delete_and_clear_remove_keys() -> None:
    """delete removes one key and clear removes them all."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("a", 1)
        await ctx.store.set("b", 2)
        await ctx.store.set("c", 3)
        await ctx.store.delete("a")
        after_delete = await ctx.store.get_state()
        await ctx.store.delete("never-set")  # deleting an absent key is harmless
        await ctx.store.clear()
        return [after_delete, await ctx.store.get_state(), await ctx.store.get("b", default="gone")]

    assert await in_step(body) == [{"b": 2, "c": 3}, {}, "gone"]


async def test_mutating_a_value_from_get_does_not_change_the_store() -> None:
    """get returns a copy: changing it changes nothing until it is set back."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("ids", [1, 2])
        ids = await ctx.store.get("ids")
        ids.append(3)
        unchanged = await ctx.store.get("ids")
        await ctx.store.set("ids", ids)
        return [unchanged, await ctx.store.get("ids")]

    assert await in_step(body) == [[1, 2], [1, 2, 3]]


async def test_mutating_a_value_after_set_does_not_change_the_store() -> None:
    """set stores a copy: mutating the original object afterwards changes nothing."""

    async def body(ctx: Context) -> Any:
        profile = {"name": "ada", "langs": ["en"]}
        await ctx.store.set("profile", profile)
        profile["langs"].append("fr")
        profile["name"] = "bob"
        state = await ctx.store.get_state()
        state["profile"]["name"] = "eve"  # get_state is a copy too
        return await ctx.store.get("profile")

    assert await in_step(body) == {"name": "ada", "langs": ["en"]}


async def test_edit_state_is_safe_under_concurrent_steps(finish) -> None:
    """Fifty concurrent read-modify-write edits through edit_state lose no increment."""

    class Tick(Event):
        pass

    class Ticked(Event):
        pass

    class Counter(Workflow):
        @step
        async def fan_out(self, ev: StartEvent, ctx: Context) -> Tick:
            for _ in range(50):
                ctx.send_event(Tick())
            return None

        @step(num_workers=50)
        async def bump(self, ev: Tick, ctx: Context) -> Ticked:
            async with ctx.store.edit_state() as state:
                current = state.get("count", 0)
                await asyncio.sleep(0.001)  # yield mid-edit: an unserialised writer would lose updates
                state["count"] = current + 1
            return Ticked()

        @step
        async def done(self, ev: Ticked, ctx: Context) -> StopEvent | None:
            if ctx.collect_events(ev, [Ticked] * 50) is None:
                return None
            return StopEvent(result=await ctx.store.get("count"))

    assert await finish(Counter().run()) == 50


async def test_set_waits_for_a_concurrent_edit_state(finish) -> None:
    """A set from another step while edit_state is open lands after the edit, not inside it."""
    order: list[str] = []

    class Go(Event):
        pass

    class Went(Event):
        pass

    class Race(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> Go:
            ctx.send_event(Go(), step="editor")
            ctx.send_event(Go(), step="setter")
            return None

        @step
        async def editor(self, ev: Go, ctx: Context) -> Went:
            async with ctx.store.edit_state() as state:
                order.append("edit-open")
                await asyncio.sleep(0.02)
                state["owner"] = "editor"
                order.append("edit-close")
            return Went()

        @step
        async def setter(self, ev: Go, ctx: Context) -> Went:
            await asyncio.sleep(0.005)  # the editor holds the state by now
            await ctx.store.set("owner", "setter")
            order.append("set")
            return Went()

        @step
        async def end(self, ev: Went, ctx: Context) -> StopEvent | None:
            if ctx.collect_events(ev, [Went, Went]) is None:
                return None
            return StopEvent(result=await ctx.store.get("owner"))

    assert await finish(Race().run()) == "setter"
    assert order == ["edit-open", "edit-close", "set"]


async def test_nested_edit_state_in_one_step_does_not_deadlock(finish) -> None:
    """A step may open edit_state inside its own edit: no deadlock, and both edits land."""

    async def body(ctx: Context) -> Any:
        async with ctx.store.edit_state() as outer:
            outer["a"] = 1
            async with ctx.store.edit_state() as inner:
                seen_by_inner = dict(inner)
                inner["b"] = 2
        return [seen_by_inner, await ctx.store.get_state()]

    seen_by_inner, final = await finish(in_step(body), timeout=2)
    assert seen_by_inner == {"a": 1}
    assert final == {"a": 1, "b": 2}


async def test_edit_state_that_raises_leaves_the_state_unchanged() -> None:
    """An edit block that raises writes nothing back."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("n", 1)
        with pytest.raises(RuntimeError):
            async with ctx.store.edit_state() as state:
                state["n"] = 99
                raise RuntimeError("abort the edit")
        async with ctx.store.edit_state() as state:  # and the lock was released
            state["m"] = 2
        return await ctx.store.get_state()

    assert await in_step(body) == {"n": 1, "m": 2}


async def test_set_state_replaces_the_whole_untyped_state() -> None:
    """set_state swaps the whole store for a mapping; get_state returns it as a dict."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("old", 1)
        await ctx.store.set_state({"new": [1, 2]})
        return await ctx.store.get_state()

    assert await in_step(body) == {"new": [1, 2]}


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        ({1, 2}, "set"),
        (datetime.date(2024, 1, 1), "date"),
        (b"raw", "bytes"),
        ({1: "a", "1": "b"}, "key 1 of type int"),
        ({"rows": [{"ok": 1}, {2.5: "half"}]}, "key 2.5 of type float"),
    ],
)
async def test_unserialisable_value_fails_at_set_naming_key_and_type(value: object, type_name: str) -> None:
    """set() of a value that is not JSON raises SerializationError then and there, naming the key and the type."""

    async def body(ctx: Context) -> Any:
        with pytest.raises(SerializationError) as caught:
            await ctx.store.set("payload", value)
        assert "'payload'" in str(caught.value)
        assert type_name in str(caught.value)
        return await ctx.store.get("payload", default="nothing stored")

    assert await in_step(body) == "nothing stored"


async def test_tuples_come_back_as_lists_and_string_keyed_dicts_as_they_were() -> None:
    """JSON has arrays, not tuples: what comes back is the JSON reading, in a run and after a restore alike."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("pair", {"span": (1, 2), "by_name": {"a": [(3, 4)]}})
        return await ctx.store.get("pair")

    assert await in_step(body) == {"span": [1, 2], "by_name": {"a": [[3, 4]]}}


async def test_unserialisable_value_nested_in_a_container_fails_at_set() -> None:
    """A bad value deep inside a dict is caught at set() too, naming the top-level key."""

    async def body(ctx: Context) -> Any:
        with pytest.raises(SerializationError, match=r"'report'.*dict"):
            await ctx.store.set("report", {"rows": [1, 2, object()]})
        with pytest.raises(SerializationError, match="'ratio'"):
            await ctx.store.set("ratio", float("nan"))
        return sorted((await ctx.store.get_state()).keys())

    assert await in_step(body) == []


async def test_unserialisable_value_in_set_state_is_refused() -> None:
    """set_state checks every value too, and names the offending key."""

    async def body(ctx: Context) -> Any:
        await ctx.store.set("keep", 1)
        with pytest.raises(SerializationError, match="'conn'"):
            await ctx.store.set_state({"fine": 1, "conn": object()})
        return await ctx.store.get_state()

    assert await in_step(body) == {"keep": 1}


class Invoice(Event):
    number: int
    lines: list[str]


class Receipt(Event):
    invoice: int


class Unknown(Event):
    pass


class Billing(Workflow):
    @step
    async def bill(self, ev: StartEvent, ctx: Context) -> Invoice:
        invoice = Invoice(number=7, lines=["tea"])
        await ctx.store.set("last", invoice)
        await ctx.store.set("history", {"all": [invoice, invoice]})
        try:
            await ctx.store.set("stranger", Unknown())
        except SerializationError as exc:
            await ctx.store.set("refused", str(exc))
        return invoice

    @step
    async def pay(self, ev: Invoice, ctx: Context) -> StopEvent:
        return StopEvent(
            result=[
                await ctx.store.get("last"),
                await ctx.store.get("history.all.1"),
                await ctx.store.get("refused"),
            ]
        )


async def test_declared_events_can_be_stored_and_come_back_as_events() -> None:
    """An event of a type the workflow declares is stored and read back as that event type."""
    last, nested, refused = await Billing().run()
    assert isinstance(last, Invoice) and last == Invoice(number=7, lines=["tea"])
    assert isinstance(nested, Invoice) and nested.number == 7
    assert "Unknown" in refused  # an undeclared event type is refused at set()


async def test_store_of_a_finished_run_is_readable_from_handler_ctx() -> None:
    """After a run, handler.ctx.store gives the final state."""
    handler = Billing().run()
    await handler
    assert await handler.ctx.store.get("last.number") == 7


async def test_store_errors_are_durableflow_errors() -> None:
    """SerializationError belongs to the DurableflowError family, so one except clause catches it."""

    async def body(ctx: Context) -> Any:
        with pytest.raises(DurableflowError):
            await ctx.store.set("x", object())
        return True

    assert await in_step(body) is True
