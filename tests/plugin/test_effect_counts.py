"""What a duplicated effect is: an effect's function completing more often than in the reference run.
An attempt that raised recorded nothing; the retry after it is one the workflow asked for."""

from __future__ import annotations

import uuid
from typing import Annotated

import pytest

from durableflow import Context, Resource, StartEvent, StopEvent, Workflow, retry_policy, step, stop_after_attempt
from durableflow.testing import explore
from durableflow.testing._judge import count_effects
from durableflow.testing._lives import Life

SEED = 20260301


class Client:
    """A client built anew by every process (every life): its first call times out, a retry goes through."""

    def __init__(self) -> None:
        self.timed_out = False

    def charge(self, amount: int, idempotency_key: str | None = None) -> str:
        if not self.timed_out:
            self.timed_out = True
            raise TimeoutError("gateway timed out")
        return f"rcpt-{idempotency_key}-{amount}"


def client() -> Client:
    return Client()


class RetriedCharge(Workflow):
    @step(retry_policy=retry_policy(stop=stop_after_attempt(3)))
    async def charge(self, ctx: Context, ev: StartEvent, gw: Annotated[Client, Resource(client)]) -> StopEvent:
        return StopEvent(result=await ctx.effect("charge", gw.charge, ev.amount))


class ChargeUnderAFreshKey(Workflow):
    """Bug: a new key on every attempt, so a resume charges again what was charged and recorded."""

    @step(retry_policy=retry_policy(stop=stop_after_attempt(5)))
    async def charge(self, ctx: Context, ev: StartEvent, gw: Annotated[Client, Resource(client)]) -> StopEvent:
        receipt = await ctx.effect(f"charge-{uuid.uuid4().hex}", gw.charge, ev.amount)
        return StopEvent(result=receipt[:4])


MODES = ["inprocess", "kill"]


@pytest.mark.parametrize("mode", MODES)
def test_an_effect_that_raises_once_then_succeeds_passes(mode: str) -> None:
    """Each resumed life's client times out once more: its failed attempt is no second charge."""
    explore(RetriedCharge, {"amount": 5}, mode=mode, seed=SEED).assert_ok()


@pytest.mark.parametrize("mode", MODES)
def test_an_effect_run_again_after_it_completed_is_a_duplicated_effect(mode: str) -> None:
    report = explore(ChargeUnderAFreshKey, {"amount": 5}, mode=mode, seed=SEED)

    assert report.failures, "a resume after the recorded charge charged again"
    assert {o.kind for o in report.failures} == {"duplicated effect"}, report.failure_text()


def test_a_raised_attempt_is_not_counted_and_one_open_at_a_crash_is_allowed_once() -> None:
    died_in_retry = Life(
        hits=["effect.charge.before#1", "step.charge.start#2", "effect.charge.before#2", "checkpoint.write.before#2"],
        ending="crashed",
    )
    resumed = Life(
        hits=["effect.charge.before#1", "effect.charge.before#2", "effect.charge.after#1"], ending="finished"
    )
    assert count_effects([died_in_retry, resumed]) == ({"charge": 2}, {"charge": 1})
    died_before_it_began = Life(hits=["effect.charge.before#1", "effect.charge.before#2"], ending="crashed")
    assert count_effects([died_before_it_began]) == ({}, {})
