"""Typed state: `ctx: Context[MyState]` makes the store a validated pydantic model."""

import asyncio

import pytest
from pydantic import BaseModel, Field

from durableflow import (
    Context,
    Event,
    SerializationError,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
    WorkflowValidationError,
    step,
)


class Address(BaseModel):
    city: str = ""
    zip: str = ""


class Profile(BaseModel):
    name: str = "anonymous"
    visits: int = 0
    tags: list[str] = []
    address: Address = Address()


class Tick(Event):
    pass


class Ticked(Event):
    pass


async def test_get_state_returns_a_model_with_defaults() -> None:
    """A fresh typed store reads as the model with its defaults."""

    class Reader(Workflow):
        @step
        async def read(self, ev: StartEvent, ctx: Context[Profile]) -> StopEvent:
            return StopEvent(result=await ctx.store.get_state())

    state = await Reader().run()
    assert isinstance(state, Profile)
    assert state == Profile()


async def test_set_and_get_fields_by_name_and_dotted_path() -> None:
    """Fields are set and read by name, nested models by dotted path, and come back typed."""

    class Writer(Workflow):
        @step
        async def write(self, ev: StartEvent, ctx: Context[Profile]) -> StopEvent:
            await ctx.store.set("name", "ada")
            await ctx.store.set("address", Address(city="London"))
            await ctx.store.set("address.zip", "N1")
            return StopEvent(
                result=[
                    await ctx.store.get("name"),
                    await ctx.store.get("address"),
                    await ctx.store.get("address.city"),
                    await ctx.store.get_state(),
                ]
            )

    name, address, city, state = await Writer().run()
    assert name == "ada"
    assert isinstance(address, Address) and address == Address(city="London", zip="N1")
    assert city == "London"
    assert state == Profile(name="ada", address=Address(city="London", zip="N1"))


async def test_set_validates_the_field_type() -> None:
    """Setting a field to a value of the wrong type raises SerializationError naming the field."""

    class Strict(Workflow):
        @step
        async def write(self, ev: StartEvent, ctx: Context[Profile]) -> StopEvent:
            with pytest.raises(SerializationError, match="'visits'"):
                await ctx.store.set("visits", "many")
            with pytest.raises(SerializationError, match="'tags'"):
                await ctx.store.set("tags", "not-a-list")
            return StopEvent(result=await ctx.store.get_state())

    assert await Strict().run() == Profile()


async def test_setting_an_unknown_field_is_an_error() -> None:
    """A key that is not a field of the state model is refused, naming the key and the model."""

    class Typo(Workflow):
        @step
        async def write(self, ev: StartEvent, ctx: Context[Profile]) -> StopEvent:
            with pytest.raises(WorkflowRuntimeError, match=r"Profile has no field 'vists'"):
                await ctx.store.set("vists", 1)
            with pytest.raises(KeyError, match="nick"):
                await ctx.store.get("nick")
            return StopEvent(result="refused")

    assert await Typo().run() == "refused"


# pydantic warns while the engine dumps the invalid model it is about to refuse
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_set_state_replaces_the_model_and_validates_it() -> None:
    """set_state takes a model instance; a wrong type or an invalid instance is refused."""

    class Replace(Workflow):
        @step
        async def write(self, ev: StartEvent, ctx: Context[Profile]) -> StopEvent:
            await ctx.store.set_state(Profile(name="bob", visits=3))
            with pytest.raises(SerializationError, match="Profile"):
                await ctx.store.set_state({"name": "eve"})
            broken = Profile.model_construct(name="mallory", visits="lots")
            with pytest.raises(SerializationError):
                await ctx.store.set_state(broken)
            return StopEvent(result=await ctx.store.get_state())

    assert await Replace().run() == Profile(name="bob", visits=3)


async def test_edit_state_yields_the_model_and_saves_changes(finish) -> None:
    """edit_state gives a model instance; changes made to it are saved, concurrently safe."""

    class Visits(Workflow):
        @step
        async def fan_out(self, ev: StartEvent, ctx: Context[Profile]) -> Tick:
            for _ in range(20):
                ctx.send_event(Tick())
            return None

        @step(num_workers=20)
        async def visit(self, ev: Tick, ctx: Context[Profile]) -> Ticked:
            async with ctx.store.edit_state() as state:
                visits = state.visits
                await asyncio.sleep(0.001)
                state.visits = visits + 1
                state.tags.append("v")
            return Ticked()

        @step
        async def done(self, ev: Ticked, ctx: Context[Profile]) -> StopEvent | None:
            if ctx.collect_events(ev, [Ticked] * 20) is None:
                return None
            return StopEvent(result=await ctx.store.get_state())

    state = await finish(Visits().run())
    assert state.visits == 20
    assert state.tags == ["v"] * 20


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_edit_state_rejects_an_invalid_assignment_at_the_end_of_the_block() -> None:
    """A field set to the wrong type inside edit_state fails when the block closes, and nothing is saved."""

    class BadEdit(Workflow):
        @step
        async def write(self, ev: StartEvent, ctx: Context[Profile]) -> StopEvent:
            with pytest.raises(SerializationError):
                async with ctx.store.edit_state() as state:
                    state.name = "changed"
                    state.visits = "many"  # pydantic does not validate assignment by default
            return StopEvent(result=await ctx.store.get_state())

    assert await BadEdit().run() == Profile()


async def test_delete_and_clear_reset_typed_fields_to_defaults() -> None:
    """In typed state, delete resets a field to its default and clear resets them all."""

    class Reset(Workflow):
        @step
        async def write(self, ev: StartEvent, ctx: Context[Profile]) -> StopEvent:
            await ctx.store.set_state(Profile(name="ada", visits=5, tags=["a"]))
            await ctx.store.delete("visits")
            after_delete = await ctx.store.get_state()
            await ctx.store.clear()
            return StopEvent(result=[after_delete, await ctx.store.get_state()])

    after_delete, after_clear = await Reset().run()
    assert after_delete == Profile(name="ada", visits=0, tags=["a"])
    assert after_clear == Profile()


async def test_typed_state_is_a_copy() -> None:
    """Mutating the model get_state returned does not change the store."""

    class Copy(Workflow):
        @step
        async def write(self, ev: StartEvent, ctx: Context[Profile]) -> StopEvent:
            state = await ctx.store.get_state()
            state.name = "changed"
            state.tags.append("x")
            return StopEvent(result=await ctx.store.get_state())

    assert await Copy().run() == Profile()


async def test_steps_may_mix_plain_context_with_one_state_type() -> None:
    """A step annotated plain `Context` shares the typed store declared by another step."""

    class Mixed(Workflow):
        @step
        async def typed(self, ev: StartEvent, ctx: Context[Profile]) -> Tick:
            await ctx.store.set("visits", 4)
            return Tick()

        @step
        async def plain(self, ev: Tick, ctx: Context) -> StopEvent:
            return StopEvent(result=await ctx.store.get_state())

    assert await Mixed().run() == Profile(visits=4)


def test_state_model_without_defaults_is_refused() -> None:
    """A state model with a required field cannot start empty, so it is rejected with a clear error."""

    class NeedsName(BaseModel):
        name: str

    class Bad(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context[NeedsName]) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match=r"NeedsName needs a default for every field"):
        Context(Bad())


class Bounded(BaseModel):
    count: int = Field(0, ge=0)


class KeepsCount(Workflow):
    @step
    async def count(self, ev: StartEvent, ctx: Context[Bounded]) -> StopEvent:
        await ctx.store.set("count", ev.value)
        return StopEvent(result=(await ctx.store.get_state()).count)


async def test_set_enforces_the_fields_constraints() -> None:
    """A value the state model's Field constraints reject fails at set(), as SerializationError, not later."""
    assert await KeepsCount().run(value=3) == 3
    with pytest.raises(SerializationError, match="count"):
        await KeepsCount().run(value=-1)
