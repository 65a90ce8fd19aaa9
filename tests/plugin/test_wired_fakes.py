"""A fake that keeps another fake it was handed (a client wired to its collaborator): the harness copies the
world at every crash point and lets lives meet it paused, taken over or ended, and must still reach a verdict.

Each test has a short timeout: a hang is the failure these guard against."""

from __future__ import annotations

from typing import Annotated, Any

import pytest

from durableflow import Context, Event, Resource, StartEvent, StopEvent, Workflow, step
from durableflow.testing import explore

SEED = 20261130


class Ledger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)


class Bank:
    """Pays through the ledger it was handed, once per idempotency key."""

    def __init__(self) -> None:
        self.ledger: Any = None
        self.paid: dict[str, str] = {}

    def use_ledger(self, ledger: Any) -> None:
        self.ledger = ledger

    def pay(self, who: str, idempotency_key: str | None = None) -> str:
        if idempotency_key not in self.paid:
            self.ledger.add(f"paid {who}")
            self.paid[str(idempotency_key)] = "ok"
        return "ok"


def bank() -> Bank:
    raise RuntimeError("the real bank")


def ledger() -> Ledger:
    raise RuntimeError("the real ledger")


class PayWired(Workflow):
    """Wires the bank to the ledger in the step that pays."""

    @step
    async def pay(
        self,
        ev: StartEvent,
        ctx: Context,
        bank: Annotated[Bank, Resource(bank)],
        ledger: Annotated[Ledger, Resource(ledger)],
    ) -> StopEvent:
        bank.use_ledger(ledger)
        return StopEvent(result=await ctx.effect("pay", bank.pay, "alice"))


class Wired(Event):
    pass


class PayWiredBefore(Workflow):
    """Wires the bank to the ledger one step before paying: a later life pays through the wiring of an earlier."""

    @step
    async def wire(
        self, ev: StartEvent, bank: Annotated[Bank, Resource(bank)], ledger: Annotated[Ledger, Resource(ledger)]
    ) -> Wired:
        bank.use_ledger(ledger)
        return Wired()

    @step
    async def pay(self, ev: Wired, ctx: Context, bank: Annotated[Bank, Resource(bank)]) -> StopEvent:
        return StopEvent(result=await ctx.effect("pay", bank.pay, "alice"))


class ForgetfulBank(Bank):
    """Wrong on purpose: pays again whatever the idempotency key says."""

    def pay(self, who: str, idempotency_key: str | None = None) -> str:
        self.ledger.add(f"paid {who}")
        return "ok"


FAKES = {"fakes": {bank: Bank, ledger: Ledger}, "record": frozenset({ledger})}
MODES = pytest.mark.parametrize("mode", ["inprocess", "kill"])


@pytest.mark.timeout(60)
@MODES
def test_a_fake_that_keeps_another_is_copied_at_each_crash_point(mode: str) -> None:
    """In-process, copying the bank meets the ledger it keeps: copied as the world's ledger, it used to wait for
    the lock the copy held, and the exploration never ended. In kill mode the ledger handed to the bank travels
    to the test's process, where it must arrive as the ledger itself: its handle failed to unpickle there, and
    the reference run failed."""
    report = explore(PayWired, {}, seed=SEED, mode=mode, **FAKES)

    report.assert_ok()
    assert any(outcome.id.startswith("effect.pay") for outcome in report.scenarios)


@pytest.mark.timeout(60)
@MODES
def test_a_fake_keeps_another_across_lives(mode: str) -> None:
    """The ledger the bank keeps was served to an earlier life: a later life's payment reaches it whether that
    life is over, paused while another takes over, or was put back from a copy."""
    report = explore(PayWiredBefore, {}, seed=SEED, mode=mode, **FAKES)

    report.assert_ok()
    assert any(outcome.id.startswith("zombie@") for outcome in report.scenarios)
    assert any(outcome.id.startswith("effect.pay") for outcome in report.scenarios)


@pytest.mark.timeout(60)
@MODES
def test_a_payment_repeated_through_a_kept_fake_is_caught(mode: str) -> None:
    """The ledger's lines written by the bank it was handed are the world's: a bank that pays again on resume
    shows there as a duplicated effect, in both modes."""
    fakes = {**FAKES, "fakes": {bank: ForgetfulBank, ledger: Ledger}}
    report = explore(PayWired, {}, seed=SEED, mode=mode, **fakes)

    assert not report.ok
    assert any(outcome.kind == "duplicated effect" for outcome in report.failures)
