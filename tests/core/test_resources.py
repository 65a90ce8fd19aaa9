"""Resources: factories injected with Annotated[T, Resource(...)], cached per run or not, and overridable."""

import asyncio
import itertools
from typing import Annotated, Any

import pytest

from durableflow import Context, Event, Resource, StartEvent, StopEvent, Workflow, override_resources, step

_ids = itertools.count(1)


class Client:
    """A stand-in for a connection: every instance has its own id."""

    def __init__(self, label: str = "real") -> None:
        self.id = next(_ids)
        self.label = label


class SqlClient(Client):
    pass


built: list[str] = []


def make_client() -> Client:
    built.append("client")
    return Client("real")


async def make_async_client() -> Client:
    built.append("async-client")
    await asyncio.sleep(0.001)
    return Client("async")


def make_sql() -> SqlClient:
    built.append("sql")
    return SqlClient("sql")


def fresh_session() -> Client:
    built.append("session")
    return Client("session")


@pytest.fixture(autouse=True)
def _reset_built() -> None:
    built.clear()


class Hop(Event):
    pass


class Shared(Workflow):
    """Two steps that each declare the same cached factory in their own annotation."""

    @step
    async def first(self, ev: StartEvent, client: Annotated[Client, Resource(make_client)]) -> Hop:
        self.first_client = client
        return Hop()

    @step
    async def second(self, ev: Hop, client: Annotated[Client, Resource(make_client)]) -> StopEvent:
        return StopEvent(result=(self.first_client, client))


async def test_sync_factory_is_injected() -> None:
    """A plain function factory builds the object the step receives."""

    class Uses(Workflow):
        @step
        async def use(self, ev: StartEvent, client: Annotated[Client, Resource(make_client)]) -> StopEvent:
            return StopEvent(result=client)

    client = await Uses().run()
    assert isinstance(client, Client) and client.label == "real"
    assert built == ["client"]


async def test_async_factory_is_awaited_and_injected() -> None:
    """An async factory is awaited; the step receives its result, not a coroutine."""

    class Uses(Workflow):
        @step
        async def use(self, ev: StartEvent, client: Annotated[Client, Resource(make_async_client)]) -> StopEvent:
            return StopEvent(result=client)

    client = await Uses().run()
    assert isinstance(client, Client) and client.label == "async"


async def test_plain_def_step_receives_resources() -> None:
    """A thread-run `def` step gets its resources too, async factories included."""

    class Uses(Workflow):
        @step
        def use(
            self,
            ev: StartEvent,
            a: Annotated[Client, Resource(make_client)],
            b: Annotated[Client, Resource(make_async_client)],
        ) -> StopEvent:
            return StopEvent(result=(a.label, b.label))

    assert await Uses().run() == ("real", "async")


async def test_keyword_only_resource_parameter_is_injected() -> None:
    """A resource may be a keyword-only parameter after the event and ctx."""

    class Uses(Workflow):
        @step
        async def use(
            self, ev: StartEvent, ctx: Context, *, client: Annotated[Client, Resource(make_client)]
        ) -> StopEvent:
            return StopEvent(result=(client.label, isinstance(ctx, Context)))

    assert await Uses().run() == ("real", True)


async def test_cached_resource_is_shared_by_every_step_of_a_run() -> None:
    """With cache=True (the default) the steps of one run share one instance, even if each names the factory."""
    first, second = await Shared().run()
    assert first is second
    assert built == ["client"]


async def test_cached_resource_is_built_again_for_each_run() -> None:
    """A cached resource lives for one run; the next run builds its own."""
    wf = Shared()
    first_run, _ = await wf.run()
    second_run, _ = await wf.run()
    assert first_run is not second_run
    assert built == ["client", "client"]


async def test_cached_resource_is_built_once_when_steps_ask_concurrently(finish) -> None:
    """Concurrent invocations asking for a cached async resource at once all get the same instance."""

    class Job(Event):
        n: int

    class Done(Event):
        client_id: int

    class Parallel(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> Job:
            for n in range(4):
                ctx.send_event(Job(n=n))
            return None

        @step(num_workers=4)
        async def work(self, ev: Job, client: Annotated[Client, Resource(make_async_client)]) -> Done:
            return Done(client_id=client.id)

        @step
        async def end(self, ev: Done, ctx: Context) -> StopEvent | None:
            done = ctx.collect_events(ev, [Done] * 4)
            return None if done is None else StopEvent(result={d.client_id for d in done})

    ids = await finish(Parallel().run())
    assert len(ids) == 1
    assert built == ["async-client"]


async def test_uncached_resource_is_new_for_every_invocation() -> None:
    """With cache=False every step invocation gets a fresh instance."""

    class Job(Event):
        pass

    class PerCall(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> Job:
            ctx.send_event(Job())
            ctx.send_event(Job())
            return None

        @step(num_workers=1)
        async def work(
            self, ev: Job, ctx: Context, s: Annotated[Client, Resource(fresh_session, cache=False)]
        ) -> StopEvent | None:
            ids = await ctx.store.get("ids", default=[])
            ids.append(s.id)
            await ctx.store.set("ids", ids)
            return StopEvent(result=ids) if len(ids) == 2 else None

    ids = await PerCall().run()
    assert len(set(ids)) == 2
    assert built == ["session", "session"]


async def test_uncached_and_cached_uses_of_one_factory_stay_distinct() -> None:
    """cache=False gives a fresh instance even when another step caches the same factory."""

    class Mixed(Workflow):
        @step
        async def first(self, ev: StartEvent, shared: Annotated[Client, Resource(make_client)]) -> Hop:
            self.shared = shared
            return Hop()

        @step
        async def second(
            self,
            ev: Hop,
            shared: Annotated[Client, Resource(make_client)],
            fresh: Annotated[Client, Resource(make_client, cache=False)],
        ) -> StopEvent:
            return StopEvent(result=(self.shared is shared, fresh is shared))

    assert await Mixed().run() == (True, False)
    assert built == ["client", "client"]


async def test_override_by_factory_replaces_it_for_the_block() -> None:
    """override_resources({factory: other}) serves the other factory inside the block only."""
    with override_resources({make_client: lambda: Client("fake")}):
        inside, _ = await Shared().run()
    outside, _ = await Shared().run()
    assert inside.label == "fake"
    assert outside.label == "real"


async def test_override_may_use_an_async_factory() -> None:
    """An override factory may be async."""

    async def fake() -> Client:
        return Client("async-fake")

    with override_resources({make_client: fake}):
        client, _ = await Shared().run()
    assert client.label == "async-fake"


async def test_override_by_type_matches_subclasses() -> None:
    """A type key replaces every resource annotated with that type or a subclass of it."""

    class Db(Workflow):
        @step
        async def use(
            self,
            ev: StartEvent,
            sql: Annotated[SqlClient, Resource(make_sql)],
            plain: Annotated[Client, Resource(make_client)],
        ) -> StopEvent:
            return StopEvent(result=(sql.label, plain.label))

    with override_resources({SqlClient: lambda: SqlClient("fake-sql")}):
        assert await Db().run() == ("fake-sql", "real")
    with override_resources({Client: lambda: Client("fake-any")}):
        assert await Db().run() == ("fake-any", "fake-any")
    assert built == ["client"]  # only the un-overridden make_client ran


async def test_override_by_type_replaces_what_a_loosely_typed_factory_built() -> None:
    """A resource annotated ``Any`` (or not at all) gets a type's override when its factory built that type:
    a test faking every such client must not reach the real service through a loose annotation."""

    def make_untyped():  # type: ignore[no-untyped-def]  # no return annotation, as much ported code has
        return SqlClient("real-sql")

    class Loose(Workflow):
        @step
        async def use(
            self,
            ev: StartEvent,
            sql: Annotated[Any, Resource(make_untyped)],
            plain: Annotated[object, Resource(make_client)],
        ) -> StopEvent:
            return StopEvent(result=(sql.label, plain.label))

    with override_resources({SqlClient: lambda: SqlClient("fake-sql")}):
        assert await Loose().run() == ("fake-sql", "real")
    assert await Loose().run() == ("real-sql", "real")


async def test_overrides_nest_and_the_inner_one_wins() -> None:
    """Nested blocks combine; the inner override wins and the outer one is back after it."""
    with override_resources({make_client: lambda: Client("outer")}):
        with override_resources({make_client: lambda: Client("inner")}):
            inner, _ = await Shared().run()
        outer, _ = await Shared().run()
    assert (inner.label, outer.label) == ("inner", "outer")


async def test_a_run_keeps_the_overrides_it_started_with() -> None:
    """A run started inside an override block keeps the override after the block has closed."""
    gate = asyncio.Event()

    class Late(Workflow):
        @step
        async def wait(self, ev: StartEvent) -> Hop:
            await gate.wait()
            return Hop()

        @step
        async def use(self, ev: Hop, client: Annotated[Client, Resource(make_client)]) -> StopEvent:
            return StopEvent(result=client.label)

    with override_resources({make_client: lambda: Client("fake")}):
        handler = Late().run()
    gate.set()
    assert await handler == "fake"


async def test_a_failed_build_is_not_cached_so_a_retry_builds_again() -> None:
    """A cached factory that raised is called again by the next attempt instead of replaying the error."""
    from durableflow import retry_policy, stop_after_attempt, wait_fixed

    calls = []

    def flaky() -> Client:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("not yet")
        return Client("second try")

    class Retrying(Workflow):
        @step(retry=retry_policy(wait=wait_fixed(0.001), stop=stop_after_attempt(2)))
        async def use(self, ev: StartEvent, client: Annotated[Client, Resource(flaky)]) -> StopEvent:
            return StopEvent(result=client.label)

    assert await Retrying().run() == "second try"
    assert len(calls) == 2
