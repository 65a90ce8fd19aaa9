"""The plugin's fixtures, used as a downstream test suite uses them, from synchronous and async tests."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from typing import Annotated

import pytest
import redis

from durableflow import (
    Context,
    Event,
    Resource,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowTimeoutError,
    _crashpoints,
    get_clock,
    retry_policy,
    step,
    stop_after_attempt,
    wait_fixed,
)
from durableflow.testing import explore
from pytest_durableflow import FrozenClock, ManualClock

from .downstream import printed
from .flows import (
    AddThenRecord,
    ChargeAsEffect,
    ChargeDirectly,
    FakePayments,
    Fetched,
    LogToCache,
    PaymentsClient,
    Pipeline,
    Redis,
    get_cache,
    get_payments,
)


class Died(BaseException):
    """The process dies here: a BaseException, which no ``except Exception`` in a step or the engine swallows."""


def die_at(point: str, hit: int) -> Callable[[str], None]:
    """A crash point listener that kills the run the ``hit``-th time it reaches ``point``."""
    hits: Counter[str] = Counter()

    def listener(reached: str) -> None:
        hits[reached] += 1
        if (reached, hits[reached]) == (point, hit):
            raise Died(f"{point}#{hit}")

    return listener


# -- durable_context -------------------------------------------------------------------------------


async def test_durable_context_runs_on_from_preset_state_and_pending_events(durable_context, fake_redis) -> None:
    """A context holding ``done=[1]`` and a pending Fetched event skips fetch and converts only documents 2 and 3."""
    wf = Pipeline()
    ctx = durable_context(wf, state={"done": [1]}, events=[Fetched(ids=[1, 2, 3])])

    assert await wf.run(ctx=ctx) == [1, 2, 3]
    assert fake_redis.smembers("converted") == {"2", "3"}


def test_durable_context_serves_a_plain_synchronous_test(durable_context, fake_redis) -> None:
    """The context builder needs no event loop: a synchronous test builds it and drives the run with asyncio.run."""
    wf = Pipeline()
    ctx = durable_context(wf, state={"done": [1, 2]}, events=[Fetched(ids=[1, 2, 3])])

    async def run() -> list[int]:
        return await wf.run(ctx=ctx)

    assert asyncio.run(run()) == [1, 2, 3]
    assert fake_redis.smembers("converted") == {"3"}


# -- fake_resources --------------------------------------------------------------------------------


async def test_override_by_factory_serves_the_fake_and_returns_it(fake_resources) -> None:
    """``override(get_payments, FakePayments)`` serves a FakePayments to the run and hands the test that same one."""
    payments = fake_resources.override(get_payments, FakePayments)
    handler = ChargeAsEffect().run(order="A-1", cents=500)

    assert await handler == "receipt-1"
    assert payments.charges == {f"{handler.run_id}:charge": ("A-1", 500)}


async def test_override_by_type_serves_every_resource_annotated_with_it(fake_resources) -> None:
    """A type as the key replaces every resource annotated with that type, whatever its factory."""
    payments = fake_resources.override(PaymentsClient, FakePayments)

    assert await ChargeDirectly().run(order="B-2", cents=700) == "receipt-1"
    assert list(payments.charges.values()) == [("B-2", 700)]


def test_a_recorded_fake_lists_its_calls(fake_resources) -> None:
    """With ``record=True`` every method call on the fake shows in ``fake_resources.calls``, arguments included."""
    fake_resources.override(get_payments, FakePayments, record=True)

    async def run() -> str:
        return await ChargeDirectly().run(order="A-1", cents=500)

    asyncio.run(run())

    assert fake_resources.calls == ["get_payments.charge('A-1', 500)"]


async def test_an_instance_is_itself_what_the_tests_runs_get(fake_resources) -> None:
    """An instance passed to ``override`` is returned and served as is, so the test sees what the run did to it."""
    mine = FakePayments()

    assert fake_resources.override(get_payments, mine) is mine
    await ChargeDirectly().run(order="A-1", cents=500)
    assert list(mine.charges.values()) == [("A-1", 500)]


def test_each_scenario_gets_a_deep_copy_of_an_instance(fake_resources, crash_harness) -> None:
    """An instance's preset state reaches every scenario as a fresh copy; the test's own instance stays as it was."""
    mine = FakePayments()
    mine.charge("old", 100, idempotency_key="earlier")
    fake_resources.override(get_payments, mine)

    report = crash_harness.explore(ChargeAsEffect, {"order": "A-1", "cents": 500})

    report.assert_ok()  # a shared instance would give receipt-3, receipt-4... to later scenarios
    assert report.reference == "receipt-2"
    assert mine.charges == {"earlier": ("old", 100)}


def test_each_scenario_gets_a_fresh_fake_from_a_factory(fake_resources, crash_harness) -> None:
    """A factory builds a new fake for every scenario; the one ``override`` returned is the test's own."""
    ours = fake_resources.override(get_payments, FakePayments)

    report = crash_harness.explore(ChargeAsEffect, {"order": "A-1", "cents": 500})

    report.assert_ok()
    assert report.reference == "receipt-1"
    assert ours.charges == {}


# -- fake_redis ------------------------------------------------------------------------------------


async def test_a_workflows_redis_writes_land_in_fake_redis(fake_redis) -> None:
    """A resource annotated ``redis.Redis`` is served by the test's fakeredis server, where the test reads it back."""
    assert await AddThenRecord().run(ids=[1, 2]) == 2

    assert fake_redis.smembers("converted") == {"1", "2"}
    assert fake_redis.hgetall("pages") == {"1": "10", "2": "20"}


async def test_fake_redis_outlives_a_crash_and_the_resume_finishes_the_rest(fake_redis, checkpointer) -> None:
    """Killed after document 1's checkpoint, the run leaves it in Redis; a new engine resumes and writes document 2."""
    wf = AddThenRecord(checkpointer=checkpointer)
    with _crashpoints.armed(die_at("checkpoint.write.after", 2)):
        handler = wf.run(ids=[1, 2])
        with pytest.raises(Died):
            await handler

    assert fake_redis.smembers("converted") == {"1"}
    assert await AddThenRecord(checkpointer=checkpointer).resume(handler.run_id) == 2
    assert fake_redis.smembers("converted") == {"1", "2"}


class ReadBack(Workflow):
    """Writes a greeting and returns what Redis gives back."""

    @step
    async def greet(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        redis.set("greeting", "hello")
        return StopEvent(result=redis.get("greeting"))


async def test_fake_redis_decodes_like_the_production_client(fake_redis, crash_harness) -> None:
    """The test's own runs get text back from a client whose factory sets decode_responses=True, as explorations do."""
    assert crash_harness.explore(ReadBack, {}).reference == "hello"
    assert await ReadBack().run() == "hello"


class RedisClassAsFactory(Workflow):
    """Builds its client with the Redis class itself: ``Resource(redis.Redis)``."""

    @step
    async def visit(
        self, ev: StartEvent, ctx: Context, client: Annotated[redis.Redis, Resource(redis.Redis)]
    ) -> StopEvent:
        client.sadd("visitors", "me")
        return StopEvent(result=client.scard("visitors"))


async def test_a_resource_built_by_the_redis_class_itself_gets_fake_redis(fake_redis, crash_harness) -> None:
    """``Resource(redis.Redis)`` meets the Redis override as its factory, not its type, and still gets fakeredis."""
    report = crash_harness.explore(RedisClassAsFactory, {})

    report.assert_ok()
    assert report.reference == 1
    assert await RedisClassAsFactory().run() == 1
    assert fake_redis.smembers("visitors") == {b"me"}


# -- checkpointer ----------------------------------------------------------------------------------

STORES = """
import pytest
from collections import Counter

from durableflow import _crashpoints
import flows


class Died(BaseException):
    pass


def die_after_first_document(point, hits=Counter()):
    hits[point] += 1
    if (point, hits[point]) == ("checkpoint.write.after", 2):
        raise Died(point)


async def test_a_run_crashes_and_resumes_from_the_store(checkpointer, fake_redis):
    print("STORE", type(checkpointer).__name__)
    assert checkpointer.runs() == []
    with _crashpoints.armed(die_after_first_document):
        handler = flows.AddThenRecord(checkpointer=checkpointer).run(ids=[1, 2])
        with pytest.raises(Died):
            await handler
    assert await flows.AddThenRecord(checkpointer=checkpointer).resume(handler.run_id) == 2
    assert [run.run_id for run in checkpointer.runs()] == [handler.run_id]
    assert fake_redis.smembers("converted") == {"1", "2"}


def test_the_next_test_gets_an_empty_store(checkpointer):
    assert checkpointer.runs() == []
"""


@pytest.mark.parametrize(
    ("store", "cls"),
    [
        ("memory", "MemoryCheckpointer"),
        ("sqlite", "SQLiteCheckpointer"),
        ("fakeredis", "RedisCheckpointer"),
        ("redis", "RedisCheckpointer"),
    ],
)
def test_the_checkpointer_is_the_chosen_store_and_empty_for_every_test(
    project: pytest.Pytester, request: pytest.FixtureRequest, store: str, cls: str
) -> None:
    """``--durableflow-store`` picks the ``checkpointer``; a run survives a crash in it; the next finds it empty."""
    args = [f"--durableflow-store={store}"]
    if store == "redis":
        args.append(f"--durableflow-redis-url={request.getfixturevalue('redis_url')}")
    project.makepyfile(test_stores=STORES)

    result = project.runpytest("-s", *args)

    result.assert_outcomes(passed=2)
    assert printed(result, "STORE") == [cls]


# -- frozen_clock ----------------------------------------------------------------------------------


class Nap(Workflow):
    """Sleeps durably for ``seconds``."""

    @step
    async def nap(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.sleep(ev.seconds)
        return StopEvent(result="rested")


async def test_an_hour_long_sleep_takes_no_real_time(frozen_clock: FrozenClock) -> None:
    """Under frozen time ``ctx.sleep(3600)`` jumps to its deadline: the run ends within a real second, an hour later."""
    before = frozen_clock.now()

    assert await asyncio.wait_for(Nap().run(seconds=3600), timeout=1.0) == "rested"
    assert frozen_clock.now() - before >= 3600


@pytest.mark.parametrize("kind", ["frozen", "manual"])
async def test_a_cancelled_timeout_is_forgotten_at_once(frozen_clock: FrozenClock, kind: str) -> None:
    """A timeout cancelled before its deadline leaves nothing behind (a long run arms and cancels one at every
    step), and never fires."""
    clock: FrozenClock | ManualClock = frozen_clock if kind == "frozen" else ManualClock()
    fired: list[int] = []
    kept = clock.call_at(clock.now() + 10, lambda: fired.append(0))
    for n in range(1, 1001):
        clock.call_at(clock.now() + 3600, lambda n=n: fired.append(n))()  # type: ignore[misc]
    assert len(clock._timers) == 1
    clock.advance(7200)
    await asyncio.sleep(0)
    assert fired == [0]
    kept()  # cancelling one that fired already changes nothing


class Flaky(Workflow):
    """Fails twice, retrying after an hour each time, then succeeds."""

    @step(retry=retry_policy(wait=wait_fixed(3600), stop=stop_after_attempt(3)))
    async def call(self, ev: StartEvent, ctx: Context) -> StopEvent:
        if ctx.attempt < 3:
            raise ConnectionError("the service is down")
        return StopEvent(result=ctx.attempt)


async def test_hour_long_retry_delays_cost_nothing(frozen_clock: FrozenClock) -> None:
    """Two retry delays of an hour pass in frozen time, not real time."""
    before = frozen_clock.now()

    assert await asyncio.wait_for(Flaky().run(), timeout=1.0) == 3
    assert frozen_clock.now() - before >= 7200


class Stuck(Workflow):
    """Waits for something that never comes."""

    @step
    async def wait(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await asyncio.Event().wait()
        return StopEvent(result="never")


async def test_a_workflow_timeout_fires_when_the_clock_passes_its_deadline(frozen_clock: FrozenClock) -> None:
    """``Workflow(timeout=60)`` holds at 59 seconds and fails with WorkflowTimeoutError once advanced past 60."""
    handler = Stuck(timeout=60).run()
    await asyncio.sleep(0.01)  # the run is under way
    frozen_clock.advance(59)
    await asyncio.sleep(0.05)
    assert not handler.done()

    frozen_clock.advance(2)
    with pytest.raises(WorkflowTimeoutError):
        await asyncio.wait_for(handler, timeout=1.0)


def test_pytest_still_measures_real_time_for_a_frozen_clock_test(project: pytest.Pytester) -> None:
    """A test that moves frozen time by an hour is reported by ``--durations`` with its real, tiny duration."""
    project.makepyfile(test_frozen="def test_an_hour_passes(frozen_clock):\n    frozen_clock.advance(3600)\n")
    result = project.runpytest("--durations=0", "-vv")

    result.assert_outcomes(passed=1)
    durations = [float(s) for s in re.findall(r"^([\d.]+)s (?:setup|call|teardown) ", result.stdout.str(), re.M)]
    assert len(durations) == 3
    assert max(durations) < 60


class Rested(Event):
    began: float


class TwoNaps(Workflow):
    """Sleeps an hour in each of two steps and returns how many hours passed since the first nap began."""

    @step
    async def first(self, ev: StartEvent, ctx: Context) -> Rested:
        began = get_clock().now()
        await ctx.sleep(3600)
        return Rested(began=began)

    @step
    async def second(self, ev: Rested, ctx: Context) -> StopEvent:
        await ctx.sleep(3600)
        return StopEvent(result=round((get_clock().now() - ev.began) / 3600))


def test_frozen_time_keeps_going_across_a_kill_and_resume(frozen_clock: FrozenClock, crash_harness) -> None:
    """A SIGKILLed child's frozen hour still counts in the process that resumes it: the run sees two hours, not one."""
    before = frozen_clock.now()

    outcome = crash_harness.run_scenario(TwoNaps, {}, "step.second.start#1", mode="kill")

    assert outcome.ok, outcome.diff
    assert outcome.result == 2
    assert frozen_clock.now() - before >= 2 * 3600


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_fakeredis_client_served_through_fake_resources_is_compared_like_redis(mode: str) -> None:
    """A fake that is a fakeredis client of a server of its own joins the world's Redis: its keys are
    compared (an append made twice fails), and recording it does not count its idempotent writes."""
    import fakeredis

    def fake() -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(decode_responses=True)

    pages = {"pages": ["a", "b"]}
    wrong = explore(LogToCache, {**pages, "write": "rpush"}, mode=mode, seed=7, fakes={get_cache: fake})
    right = explore(
        LogToCache,
        {**pages, "write": "hset"},
        mode=mode,
        seed=7,
        fakes={get_cache: fake},
        record=frozenset({get_cache}),
    )

    assert {o.kind for o in wrong.failures} == {"duplicated effect"}
    assert "redis key 'log'" in wrong.failures[0].diff
    right.assert_ok()


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_the_fake_redis_fixture_served_as_a_fake_is_compared_like_redis(
    mode: str, crash_harness, fake_resources, fake_redis
) -> None:
    """The ``fake_redis`` fixture handed to ``override`` stands for a fakeredis client too: each scenario gets
    the world's, whose keys are compared, and kill mode's resumed lives still get another hash seed."""
    fake_resources.override(get_cache, lambda: fake_redis)

    report = crash_harness.explore(LogToCache, {"pages": ["a", "b"], "write": "rpush"}, mode=mode)

    assert {o.kind for o in report.failures} == {"duplicated effect"}
    assert not [note for note in report.notes if "cannot be pickled" in note]
