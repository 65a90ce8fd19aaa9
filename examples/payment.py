"""A checkout that charges a card exactly once, however often the process dies, with ``ctx.effect``.

The charge runs inside ``ctx.effect``, whose recorded result later calls reuse, and it passes the
idempotency key the effect hands it to the payment provider, which closes the one window left.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import urllib.request
from pathlib import Path
from typing import Annotated, Any

from durableflow import (
    Context,
    Event,
    Resource,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    override_resources,
    step,
)


class Order(StartEvent):
    order_id: str
    amount_cents: int


class Charged(Event):
    order_id: str
    amount_cents: int
    charge_id: str


class PaymentClient:
    """A payment provider's HTTP client, reduced to the one call this example makes."""

    def __init__(self, base_url: str = "https://payments.example/v1") -> None:
        self.base_url = base_url

    def charge(self, amount_cents: int, idempotency_key: str | None = None) -> str:
        """Charge the card on file; the provider answers a repeated key with the first charge's id."""
        request = urllib.request.Request(
            f"{self.base_url}/charges",
            data=json.dumps({"amount": amount_cents}).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Idempotency-Key": idempotency_key} if idempotency_key else {}),
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            charge_id: str = json.load(response)["id"]
        return charge_id


class FakePaymentClient:
    """The provider, in memory, for tests and the demo: a repeated idempotency key is not charged again."""

    def __init__(self) -> None:
        self.charges: dict[str, dict[str, Any]] = {}
        """Charges made, by idempotency key (an id of their own when none was given)."""

    def charge(self, amount_cents: int, idempotency_key: str | None = None) -> str:
        if idempotency_key is not None and idempotency_key in self.charges:
            return str(self.charges[idempotency_key]["id"])
        charge_id = f"ch_{len(self.charges) + 1}"
        self.charges[idempotency_key or charge_id] = {"id": charge_id, "amount_cents": amount_cents}
        return charge_id


def get_payment_client() -> PaymentClient:
    return PaymentClient()


class Checkout(Workflow):
    """Charges an order, then issues its receipt; the result is the receipt."""

    @step
    async def charge(
        self, ev: Order, ctx: Context, payments: Annotated[PaymentClient, Resource(get_payment_client)]
    ) -> Charged:
        # ctx.effect runs payments.charge once per run: its result is checkpointed as soon as it
        # returns, and a step that re-runs after a crash gets that result instead of charging again.
        # The one window left is a crash after the charge and before that checkpoint; for it, charge()
        # gets idempotency_key="<run id>:charge", the same in every life of the run, which the provider
        # uses to refuse a second charge. The key is per run: if one order can start two runs, key the
        # charge by order instead, with ctx.effect("charge", lambda: payments.charge(amount, idempotency_key=order_id)).
        charge_id: str = await ctx.effect("charge", payments.charge, ev.amount_cents)
        return Charged(order_id=ev.order_id, amount_cents=ev.amount_cents, charge_id=charge_id)

    @step
    async def receipt(self, ev: Charged) -> StopEvent:
        return StopEvent(result={"order_id": ev.order_id, "amount_cents": ev.amount_cents, "charge_id": ev.charge_id})


async def main() -> None:
    """Check out one order end to end, against the in-memory provider, with a SQLite checkpointer."""
    provider = FakePaymentClient()
    with tempfile.TemporaryDirectory() as tmp, override_resources({get_payment_client: lambda: provider}):
        workflow = Checkout(checkpointer=SQLiteCheckpointer(Path(tmp) / "runs.db"))
        handler = workflow.run(order_id="A-1001", amount_cents=1250)
        print(f"run {handler.run_id}: receipt {await handler}")
        again = await workflow.resume(handler.run_id)  # a finished run answers from its record
        print(f"resumed: receipt {again}; the provider holds {len(provider.charges)} charge(s): {provider.charges}")


if __name__ == "__main__":
    asyncio.run(main())
