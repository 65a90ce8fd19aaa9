"""Crash tests for the checkout: the card is charged once at every crash point, and only through ctx.effect."""

from __future__ import annotations

from typing import Annotated, Any

import pytest

from durableflow import Checkpointer, Context, Resource, StopEvent, Workflow, step
from examples.payment import Charged, Checkout, FakePaymentClient, Order, PaymentClient, get_payment_client

ORDER: dict[str, Any] = {"order_id": "A-1001", "amount_cents": 1250}
RECEIPT = {"order_id": "A-1001", "amount_cents": 1250, "charge_id": "ch_1"}
MODES = ["inprocess", "kill"]


async def test_a_checkout_charges_once_with_the_runs_idempotency_key(
    fake_resources: Any, checkpointer: Checkpointer
) -> None:
    """The provider sees one charge, keyed ``<run id>:charge``; resuming the finished run charges nothing more."""
    provider = fake_resources.override(get_payment_client, FakePaymentClient, record=True)
    workflow = Checkout(checkpointer=checkpointer)
    handler = workflow.run(**ORDER)
    assert await handler == RECEIPT
    assert await workflow.resume(handler.run_id) == RECEIPT
    key = f"{handler.run_id}:charge"
    assert provider.charges == {key: {"id": "ch_1", "amount_cents": 1250}}
    assert fake_resources.calls == [f"get_payment_client.charge(1250, idempotency_key={key!r})"]


@pytest.mark.parametrize("mode", MODES)
def test_every_crash_point_charges_the_card_exactly_once(crash_harness: Any, fake_resources: Any, mode: str) -> None:
    """Killed anywhere, twice, the run charges once: every charge the provider saw carries the run's one key."""
    fake_resources.override(get_payment_client, FakePaymentClient, record=True)
    report = crash_harness.explore(Checkout, ORDER, depth=2, mode=mode)
    report.assert_ok()
    assert report.reference == RECEIPT
    assert len(report.scenarios) == report.space
    assert any(s.id.startswith("effect.charge.") for s in report.scenarios)


class ChargeOutsideEffect(Workflow):
    """The charge as a plain call: a step that re-runs after a crash charges again."""

    @step
    async def charge(
        self, ev: Order, ctx: Context, payments: Annotated[PaymentClient, Resource(get_payment_client)]
    ) -> Charged:
        charge_id = payments.charge(ev.amount_cents)
        return Charged(order_id=ev.order_id, amount_cents=ev.amount_cents, charge_id=charge_id)

    @step
    async def receipt(self, ev: Charged) -> StopEvent:
        return StopEvent(result=ev.charge_id)


@pytest.mark.parametrize("mode", MODES)
def test_charging_outside_ctx_effect_is_caught_as_a_duplicated_effect(
    crash_harness: Any, fake_resources: Any, mode: str
) -> None:
    """Without ctx.effect a crash after the charge charges the card again, and the harness reports it."""
    fake_resources.override(get_payment_client, FakePaymentClient, record=True)
    report = crash_harness.explore(ChargeOutsideEffect, ORDER, mode=mode)
    assert report.failures
    assert {o.kind for o in report.failures} == {"duplicated effect"}
    assert "step.charge.end#1" in {o.id for o in report.failures}
