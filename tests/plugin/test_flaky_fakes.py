"""A fake that fails once, under a retried effect: every life of a scenario (the reference, the twins kill
mode forks from it, their takeovers, the resumes) meets the fake as the world holds it at that instant."""

from __future__ import annotations

from typing import Annotated

import pytest

from durableflow import Context, Resource, StartEvent, StopEvent, Workflow, retry_policy, step, stop_after_attempt
from durableflow.testing import explore

SEED = 20260301


class Gateway:
    """A payment gateway whose first call times out: a retry succeeds, deduplicated by its key."""

    def __init__(self) -> None:
        self.failures_left = 1

    def charge(self, amount: int, idempotency_key: str | None = None) -> str:
        if self.failures_left:
            self.failures_left -= 1
            raise TimeoutError("gateway timed out")
        return f"rcpt-{idempotency_key}-{amount}"


def gateway() -> Gateway:
    return Gateway()


class FlakyPay(Workflow):
    @step(retry_policy=retry_policy(stop=stop_after_attempt(3)))
    async def charge(self, ctx: Context, ev: StartEvent, gw: Annotated[Gateway, Resource(gateway)]) -> StopEvent:
        return StopEvent(result=await ctx.effect("charge", gw.charge, ev.amount))


class FlakyPayOutsideEffect(Workflow):
    """Bug: the charge is not an effect, so a resume after it charges again (with no key to dedupe by)."""

    @step(retry_policy=retry_policy(stop=stop_after_attempt(3)))
    async def charge(self, ctx: Context, ev: StartEvent, gw: Annotated[Gateway, Resource(gateway)]) -> StopEvent:
        receipt = gw.charge(ev.amount)
        await ctx.store.set("receipt", receipt)
        return StopEvent(result=receipt)


FAKES = {"fakes": {gateway: Gateway}, "record": frozenset({gateway})}


def test_a_retried_effect_on_a_fake_that_fails_once_passes_alike_in_both_modes() -> None:
    """Kill mode forks twins of the reference life at its crash points; each changes the shared fake, which
    is put back before the reference goes on. The reference must still meet the failure (and retry), so
    both modes explore the same crash points and pass."""
    inprocess = explore(FlakyPay, {"amount": 5}, seed=SEED, **FAKES)
    kill = explore(FlakyPay, {"amount": 5}, mode="kill", seed=SEED, **FAKES)

    kill.assert_ok()
    inprocess.assert_ok()
    assert [o.id for o in kill.scenarios] == [o.id for o in inprocess.scenarios]
    assert "effect.charge.before#2" in [o.id for o in kill.scenarios]  # the reference retried


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_charge_outside_an_effect_on_a_fake_that_fails_once_fails_in_both_modes(mode: str) -> None:
    report = explore(FlakyPayOutsideEffect, {"amount": 5}, mode=mode, seed=SEED, **FAKES)

    assert report.failures, "a resume after the charge charged again"
    assert {o.kind for o in report.failures} == {"duplicated effect"}, report.failure_text()
