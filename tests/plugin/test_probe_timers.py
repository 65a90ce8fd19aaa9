"""Correct workflows with timers of their own (durable sleeps, retry back-off, ``wait_for_event(timeout=)``, the
run's timeout) pass the second-worker check in both modes, and that check still sees a lease never renewed.

The check lets twice a lease's time pass at the first step start after the run is first stored. Under the
harness's frozen clock a durable sleep or a back-off jumps the clock to its deadline instead of arming a
timer, and ``wait_for_event`` times out on the loop's own clock, which the check does not move: the run's
timeout is the only other timer that can fall due meanwhile, and the check stops short of it.
"""

from __future__ import annotations

import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    retry_if_exception_type,
    retry_policy,
    step,
    stop_after_attempt,
    wait_fixed,
)
from durableflow.testing import explore

from .flows import Payments
from .test_planted_bugs import PAYMENTS, renew_once

SEED = 20261130


class Branch(Event):
    n: int


class Done(Event):
    n: int


class SleepInOneBranch(Workflow):
    """Right: of two branches charging at once, one first sleeps past two leases."""

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Branch | None:
        ctx.send_event(Branch(n=0))
        ctx.send_event(Branch(n=1))
        return None

    @step(num_workers=2)
    async def charge(self, ev: Branch, ctx: Context, payments: Payments) -> Done:
        if ev.n == 0:
            await ctx.sleep(70)
        await ctx.effect(f"charge-{ev.n}", payments.charge, f"order-{ev.n}", 500)
        return Done(n=ev.n)

    @step
    async def gather(self, ev: Done, ctx: Context) -> StopEvent | None:
        done = ctx.collect_events(ev, [Done, Done])
        return None if done is None else StopEvent(result=sorted(e.n for e in done))


class Busy(Exception):
    pass


class ChargeAfterBackoff(Workflow):
    """Right: the provider is busy twice; each retry waits 40 s, longer than a lease."""

    @step(
        retry_policy=retry_policy(retry=retry_if_exception_type(Busy), wait=wait_fixed(40), stop=stop_after_attempt(3))
    )
    async def pay(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        if ctx.attempt < 2:
            raise Busy("the provider is busy")
        return StopEvent(result=await ctx.effect("charge", payments.charge, "order-1", 500))


class ConfirmThenCharge(Workflow):
    """Right: asks for a go-ahead with a timeout, then charges, after a durable sleep, within its own timeout."""

    @step
    async def ask(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        reply = await ctx.wait_for_event(HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="go?"), timeout=100)
        await ctx.sleep(45)
        return StopEvent(result=[reply.response, await ctx.effect("charge", payments.charge, "order-1", 500)])


class Answer(Event):
    pass


class ChargeUnlessAnswered(Workflow):
    """Right: waits a moment for an answer nobody sends, then charges anyway."""

    @step
    async def pay(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        try:
            await ctx.wait_for_event(Answer, timeout=0.01)
            heard = "answered"
        except TimeoutError:
            heard = "timed out"
        return StopEvent(result=[heard, await ctx.effect("charge", payments.charge, "order-1", 500)])


def go(ev: InputRequiredEvent) -> HumanResponseEvent:
    return HumanResponseEvent(response="go")


TIMERS = {
    "sleep in a branch": (SleepInOneBranch, {}),
    "retry back-off": (ChargeAfterBackoff, {}),
    "wait with timeout, sleep, run timeout": (lambda: ConfirmThenCharge(timeout=1000), {"respond": go, "downtime": 0}),
    "wait that times out": (ChargeUnlessAnswered, {}),
}


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
@pytest.mark.parametrize("case", TIMERS)
def test_a_correct_workflow_with_timers_passes_and_a_lease_never_renewed_is_still_seen(
    case: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow, options = TIMERS[case]
    explore(workflow, {}, mode=mode, seed=SEED, **PAYMENTS, **options).assert_ok()

    renew_once(monkeypatch)
    report = explore(workflow, {}, mode=mode, seed=SEED, **PAYMENTS, **options)

    assert [o.kind for o in report.failures if o.id.startswith("second-worker@")] == ["stolen lease"]
