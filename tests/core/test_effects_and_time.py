"""ctx.effect, ctx.sleep, ctx.checkpoint and the run deadline: once-only effects and durable time."""

import asyncio
import json
from typing import Any

import pytest

from durableflow import (
    Context,
    Event,
    MemoryCheckpointer,
    SerializationError,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    get_clock,
    hookimpl,
    plugin_manager,
    step,
)


class Charge(Event):
    cents: int


class Payments(Workflow):
    """Charges a card through an effect, snapshots right after, then waits at an optional gate."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        super().__init__(timeout=5)
        self.gate = gate
        self.charges: list[tuple[int, str]] = []
        self.snapshot: dict[str, Any] | None = None

    def charge_card(self, cents: int, idempotency_key: str) -> dict[str, Any]:
        self.charges.append((cents, idempotency_key))
        return {"charge_id": f"ch_{len(self.charges)}", "cents": cents}

    @step
    async def pay(self, ev: StartEvent, ctx: Context) -> StopEvent:
        receipt = await ctx.effect("charge", self.charge_card, ev.cents)
        again = await ctx.effect("charge", self.charge_card, ev.cents)
        if self.snapshot is None:
            self.snapshot = json.loads(json.dumps(ctx.to_dict()))
        if self.gate is not None:
            await self.gate.wait()
        return StopEvent(result={"first": receipt, "again": again})


async def test_effect_runs_once_per_key_and_gets_an_idempotency_key() -> None:
    """ctx.effect runs fn once per run and key, passes "<run_id>:<key>", and serves the record after."""
    wf = Payments()
    handler = wf.run(cents=500)
    result = await handler
    assert result == {"first": {"charge_id": "ch_1", "cents": 500}, "again": {"charge_id": "ch_1", "cents": 500}}
    assert wf.charges == [(500, f"{handler.run_id}:charge")]


async def test_effect_recorded_before_a_snapshot_is_not_run_again_after_restore() -> None:
    """A step re-run from a snapshot gets the recorded effect result instead of calling fn again."""
    first = Payments()
    await first.run(cents=700)
    assert first.snapshot is not None

    wf = Payments()
    result = await wf.run(ctx=Context.from_dict(wf, first.snapshot))
    assert result["first"] == {"charge_id": "ch_1", "cents": 700}
    assert wf.charges == []


async def test_effect_shared_by_concurrent_steps_runs_once(finish) -> None:
    """Two concurrent invocations asking for the same effect key share one call."""
    calls: list[int] = []

    async def slow_lookup() -> int:
        calls.append(1)
        await asyncio.sleep(0.01)
        return 42

    class Both(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> Charge:
            ctx.send_event(Charge(cents=1))
            ctx.send_event(Charge(cents=2))
            return None

        @step(num_workers=2)
        async def work(self, ev: Charge, ctx: Context) -> Charge | StopEvent | None:
            value = await ctx.effect("lookup", slow_lookup)
            got = await ctx.store.get("got", default=[])
            got.append(value)
            await ctx.store.set("got", got)
            return StopEvent(result=got) if len(got) == 2 else None

    assert await finish(Both().run()) == [42, 42]
    assert calls == [1]


async def test_effect_result_must_be_storable() -> None:
    """An effect whose result is not JSON fails with SerializationError naming the effect."""

    class Bad(Workflow):
        @step
        async def go(self, ev: StartEvent, ctx: Context) -> StopEvent:
            await ctx.effect("conn", object)
            return StopEvent()

    with pytest.raises(SerializationError, match="'conn'"):
        await Bad().run()


async def test_context_effect_and_sleep_outside_a_step_are_errors() -> None:
    """ctx.effect, ctx.sleep and ctx.checkpoint only work inside a step."""
    ctx = Context(Payments())
    with pytest.raises(WorkflowRuntimeError, match="within a step"):
        await ctx.effect("x", int)
    with pytest.raises(WorkflowRuntimeError, match="within a step"):
        await ctx.sleep(1)
    with pytest.raises(WorkflowRuntimeError, match="within a step"):
        await ctx.checkpoint()


async def test_checkpoint_mid_step_writes_a_checkpoint() -> None:
    """await ctx.checkpoint() writes one more checkpoint with a checkpointer, and is harmless without one."""
    written: list[int] = []

    class Spy:
        @hookimpl
        def durableflow_checkpoint_written(self, run_id: str, seq: int, full: bool) -> None:
            written.append(seq)

    class Steps(Workflow):
        def __init__(self, mid: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.mid = mid

        @step
        async def go(self, ev: StartEvent, ctx: Context) -> StopEvent:
            for _ in range(self.mid):
                await ctx.checkpoint()
            return StopEvent(result="ok")

    spy = Spy()
    plugin_manager.register(spy)
    try:
        assert await Steps(0, checkpointer=MemoryCheckpointer()).run() == "ok"
        without = len(written)
        written.clear()
        assert await Steps(2, checkpointer=MemoryCheckpointer()).run() == "ok"
        assert len(written) == without + 2
        written.clear()
        assert await Steps(2).run() == "ok"
        assert written == []
    finally:
        plugin_manager.unregister(spy)


async def test_sleep_waits_for_the_clock(manual_clock) -> None:
    """ctx.sleep(seconds) returns once the clock has moved that far, not before."""

    class Napper(Workflow):
        @step
        async def nap(self, ev: StartEvent, ctx: Context) -> StopEvent:
            await ctx.sleep(60)
            return StopEvent(result=get_clock().now())

    start = manual_clock.now()
    handler = Napper().run()
    await asyncio.sleep(0.02)
    assert not handler.done()
    manual_clock.advance(59)
    await asyncio.sleep(0.02)
    assert not handler.done()
    manual_clock.advance(1)
    assert await asyncio.wait_for(asyncio.ensure_future(handler), 2) == start + 60


async def test_sleep_after_restore_sleeps_only_the_rest(manual_clock, until) -> None:
    """A restored run whose step was sleeping wakes at the original deadline: downtime counts as slept."""

    class Napper(Workflow):
        def __init__(self) -> None:
            super().__init__()
            self.sleeping = False

        @step
        async def nap(self, ev: StartEvent, ctx: Context) -> StopEvent:
            self.sleeping = True
            await ctx.sleep(60)
            return StopEvent(result=get_clock().now())

    start = manual_clock.now()
    original = Napper()
    handler = original.run()
    await until(lambda: original.sleeping)
    await asyncio.sleep(0.01)
    data = json.loads(json.dumps(handler.ctx.to_dict()))
    handler.cancel()
    with pytest.raises(WorkflowCancelledError):
        await handler

    manual_clock.advance(50)  # the process was down for 50 of the 60 seconds
    wf = Napper()
    resumed = wf.run(ctx=Context.from_dict(wf, data))
    await until(lambda: wf.sleeping)
    await asyncio.sleep(0.02)
    assert not resumed.done()
    manual_clock.advance(10)
    assert await asyncio.wait_for(asyncio.ensure_future(resumed), 2) == start + 60


async def test_timeout_is_a_deadline_that_survives_a_restore(manual_clock, until) -> None:
    """A restored run keeps its original deadline: time spent stopped counts against the timeout."""
    gate = asyncio.Event()

    class Slow(Workflow):
        def __init__(self) -> None:
            super().__init__(timeout=30)
            self.waiting = False

        @step
        async def wait(self, ev: StartEvent) -> StopEvent:
            self.waiting = True
            await gate.wait()
            return StopEvent(result="made it")

    original = Slow()
    handler = original.run()
    await until(lambda: original.waiting)
    data = json.loads(json.dumps(handler.ctx.to_dict()))
    handler.cancel()
    with pytest.raises(WorkflowCancelledError):
        await handler

    manual_clock.advance(31)
    wf = Slow()
    with pytest.raises(WorkflowTimeoutError):
        await asyncio.wait_for(asyncio.ensure_future(wf.run(ctx=Context.from_dict(wf, data))), 2)


async def test_retry_delays_read_the_clock(manual_clock) -> None:
    """A retry waits its delay on durableflow's clock, so a moved clock releases it."""
    from durableflow import retry_policy, stop_after_attempt, wait_fixed

    attempts: list[int] = []

    class Retry(Workflow):
        @step(retry=retry_policy(wait=wait_fixed(3600), stop=stop_after_attempt(2)))
        async def go(self, ev: StartEvent, ctx: Context) -> StopEvent:
            attempts.append(ctx.attempt)
            if ctx.attempt == 1:
                raise RuntimeError("first try fails")
            return StopEvent(result="second try")

    handler = Retry().run()
    await asyncio.sleep(0.02)
    assert attempts == [1] and not handler.done()
    manual_clock.advance(3600)
    assert await asyncio.wait_for(asyncio.ensure_future(handler), 2) == "second try"
