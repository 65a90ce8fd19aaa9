"""Promise 4, effects: ctx.effect runs fn once per run and key, across crashes, with a stable idempotency key."""

from __future__ import annotations

import asyncio

import pytest

from durableflow import Context, MemoryCheckpointer, StartEvent, StopEvent, Workflow, step

from .conftest import Store
from .crashing import Crash, crash_at, points_reached
from .workflows import Bank, Charging

RUN_ID = "payment"
POINTS = points_reached(lambda: Charging(Bank(), checkpointer=MemoryCheckpointer()).run(run_id=RUN_ID, amount=5))


def _window(effect: str) -> str:
    """The one crash point where ``effect``'s fn has returned but its record is not durable yet."""
    after_call = POINTS.index(f"effect.{effect}.before#1")
    return next(p for p in POINTS[after_call:] if p.startswith("checkpoint.write.before#"))


@pytest.mark.parametrize("point", [p for p in POINTS if p != "checkpoint.write.before#1"])  # no run before it
async def test_an_effect_runs_once_across_a_crash_except_in_its_window(store: Store, point: str) -> None:
    """After a crash anywhere and a resume, each effect ran once (twice only if the crash fell between fn returning
    and its record becoming durable), every call got "<run_id>:<key>", and the run's result is the recorded one."""
    bank = Bank()
    with crash_at(point) as reached, pytest.raises(Crash):
        await asyncio.wait_for(Charging(bank, checkpointer=store.open()).run(run_id=RUN_ID, amount=5), 5)
    assert reached[-1] == point

    result = await asyncio.wait_for(Charging(bank, checkpointer=store.open()).resume(RUN_ID), 5)

    charges = 2 if point == _window("charge") else 1
    notices = 2 if point == _window("notify") else 1
    assert bank.charges == [(5, f"{RUN_ID}:charge")] * charges
    assert len(bank.notices) == notices
    assert result == f"receipt-{charges}"  # the second call's receipt was the one recorded


async def test_an_effect_result_is_served_from_the_record_when_the_step_runs_again(store: Store) -> None:
    """A step re-run after a crash past its effect gets the recorded result without calling fn again."""
    bank = Bank()
    with crash_at("step.pay.end#1"), pytest.raises(Crash):
        await Charging(bank, checkpointer=store.open()).run(run_id=RUN_ID, amount=7)
    assert len(bank.charges) == 1
    other_bank = Bank()  # were fn called again, this world would see it
    assert await Charging(other_bank, checkpointer=store.open()).resume(RUN_ID) == "receipt-1"
    assert other_bank.charges == [] and other_bank.notices == []


SEEN: list[dict[str, object]] = []
"""The keyword arguments each of KeyTaker's effect functions got."""


class KeyTaker(Workflow):
    """Effects whose fn names idempotency_key, takes **kwargs (as HTTP clients do), or takes nothing."""

    @step
    async def act(self, ev: StartEvent, ctx: Context) -> StopEvent:
        def keyed(*, idempotency_key: str) -> str:
            SEEN.append({"idempotency_key": idempotency_key})
            return "keyed"

        def flexible(**kwargs: object) -> str:  # like requests.post: an unknown keyword would reach the server
            SEEN.append(kwargs)
            return "flexible"

        def plain() -> str:
            SEEN.append({})
            return "plain"

        return StopEvent(
            result=[await ctx.effect(name, fn) for name, fn in (("key", keyed), ("flex", flexible), ("plain", plain))]
        )


async def test_idempotency_key_goes_only_to_functions_that_name_it() -> None:
    """fn gets idempotency_key="<run_id>:<key>" only when it has a parameter of that name, never through **kwargs."""
    SEEN.clear()
    assert await KeyTaker(checkpointer=MemoryCheckpointer()).run(run_id="keys") == ["keyed", "flexible", "plain"]
    assert SEEN == [{"idempotency_key": "keys:key"}, {}, {}]
