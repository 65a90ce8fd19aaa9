"""Wrong-on-purpose workflows of kinds met in payments, agents and document pipelines, each next to a correct
one, explored in both modes: each wrong one fails with a verdict that names what to fix, each right one passes.

(Two kinds stay out: an idempotency key holding ``os.getpid()`` passes in-process, which one interpreter
cannot vary, as the README says; a fan-in joined in the order threads of differing length finish is told
apart only by the noise in their timing, which no harness can make repeatable.)
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Annotated

import pytest

from durableflow import (
    Context,
    Event,
    Resource,
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

from .flows import FakePayments, Payments, get_payments

SEED = 20261130
MODES = ["inprocess", "kill"]


class Mailer:
    def send(self, to: str, body: str) -> str:
        raise RuntimeError("no mail from tests")


def get_mailer() -> Mailer:
    return Mailer()


class FakeMailer:
    """Like a real mail API, sends once per idempotency key when given one."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[str, str]] = {}

    def send(self, to: str, body: str, idempotency_key: str | None = None) -> str:
        key = idempotency_key or f"no-key-{len(self.sent)}"
        self.sent.setdefault(key, (to, body))
        return f"msg-{list(self.sent).index(key) + 1}"


Mail = Annotated[Mailer, Resource(get_mailer)]
FAKES = {"fakes": {get_payments: FakePayments, get_mailer: FakeMailer}, "record": frozenset({get_payments, get_mailer})}


class AgentToolCalls(Workflow):
    """WRONG (agent): each tool call (an e-mail) goes out, then the step records it; no checkpoint between
    the call and the state write, so a crash after the send and before the next checkpoint sends again."""

    @step
    async def act(self, ev: StartEvent, ctx: Context, mail: Mail) -> StopEvent:
        done = await ctx.store.get("done", default=0)
        for i in range(done, len(ev.plan)):
            mail.send(ev.plan[i], f"step {i}")
            await ctx.store.set("done", i + 1)
            await ctx.checkpoint()
        return StopEvent(result=len(ev.plan))


SENT: set[str] = set()


class GlobalDedupe(Workflow):
    """WRONG (document pipeline): remembers notified documents in a module global, which a restart empties."""

    @step
    async def notify(self, ev: StartEvent, ctx: Context, mail: Mail) -> StopEvent:
        for doc in ev.docs:
            if doc in SENT:
                continue
            mail.send("owner", f"{doc} converted")
            SENT.add(doc)
        await ctx.checkpoint()
        return StopEvent(result=sorted(ev.docs))


class Busy(Exception):
    pass


class RetryResends(Workflow):
    """WRONG (payments): each attempt e-mails 'charging' before the flaky charge; a crash re-runs an attempt."""

    @step(
        retry_policy=retry_policy(retry=retry_if_exception_type(Busy), wait=wait_fixed(5), stop=stop_after_attempt(4))
    )
    async def pay(self, ev: StartEvent, ctx: Context, payments: Payments, mail: Mail) -> StopEvent:
        mail.send("buyer", "we are charging your card")
        if ctx.attempt < 2:
            raise Busy()
        return StopEvent(result=await ctx.effect("charge", payments.charge, ev.order, 500))


class Chunk(Event):
    n: int


class Summary(Event):
    n: int
    text: str


class Chunks(Workflow):
    """Three workers summarise chunks in threads of differing length (joined by a subclass's ``join``)."""

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Chunk | None:
        for n in range(3):
            ctx.send_event(Chunk(n=n))
        return None

    @step(num_workers=3)
    async def summarise(self, ev: Chunk, ctx: Context) -> Summary:
        await asyncio.to_thread(time.sleep, [0.03, 0.005, 0.015][ev.n])
        return Summary(n=ev.n, text=f"part {ev.n}")


PATTERN = re.compile(r"^[A-Z]-\d+$")  # read-only module state: fine


class AgentToolsAsEffects(Workflow):
    """Right (agent): each tool call is a ctx.effect keyed by its index in the plan."""

    @step
    async def act(self, ev: StartEvent, ctx: Context, mail: Mail) -> StopEvent:
        for i, to in enumerate(ev.plan):
            await ctx.effect(f"mail-{i}", mail.send, to, f"step {i}")
        return StopEvent(result=len(ev.plan))


class ValidatedCharge(Workflow):
    """Right (payments): a module-level compiled pattern (read only) checks the order, and the charge is an effect."""

    @step
    async def pay(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        if not PATTERN.match(ev.order):
            raise ValueError(ev.order)
        return StopEvent(result=await ctx.effect("charge", payments.charge, ev.order, 500))


class SortedFanIn(Chunks):
    """Right (document pipeline): the summaries joined in chunk order, whatever order they finished in."""

    @step
    async def join(self, ev: Summary, ctx: Context) -> StopEvent | None:
        got = ctx.collect_events(ev, [Summary] * 3)
        if got is None:
            return None
        return StopEvent(result=" / ".join(e.text for e in sorted(got, key=lambda e: e.n)))


@pytest.fixture(autouse=True)
def _no_sent() -> Iterator[None]:
    SENT.clear()  # GlobalDedupe's, left by an earlier in-process exploration
    yield
    SENT.clear()


WRONG = {
    "tool call before its record": (AgentToolCalls, {"plan": ["a", "b", "c"]}),
    "retry e-mails again": (RetryResends, {"order": "A-1"}),
}
RIGHT = {
    "tool calls as effects": (AgentToolsAsEffects, {"plan": ["a", "b", "c"]}),
    "read-only module global": (ValidatedCharge, {"order": "A-1"}),
    "fan-in sorted by chunk": (SortedFanIn, {}),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", WRONG)
def test_a_wrong_workflow_sends_twice_in_both_modes(case: str, mode: str) -> None:
    workflow, start = WRONG[case]
    report = explore(workflow, start, mode=mode, seed=SEED, **FAKES)

    assert "duplicated effect" in {o.kind for o in report.failures}, report.summary()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", RIGHT)
def test_a_correct_workflow_passes_in_both_modes(case: str, mode: str) -> None:
    workflow, start = RIGHT[case]
    explore(workflow, start, mode=mode, seed=SEED, **FAKES).assert_ok()


def test_a_module_global_that_dedupes_sends_twice_after_a_real_restart() -> None:
    """Kill mode: a resumed life imports the module anew, its set empty, and mails the owner again."""
    report = explore(GlobalDedupe, {"docs": ["d1", "d2"]}, mode="kill", seed=SEED, **FAKES)

    assert "duplicated effect" in {o.kind for o in report.failures}, report.summary()


def test_a_module_global_that_dedupes_is_named_in_process() -> None:
    """In-process the set outlives each run into the next, so two uninterrupted runs differ: the error says
    that a module global may be why, not only a random id or the time."""
    with pytest.raises(AssertionError, match="ended differently") as raised:
        explore(GlobalDedupe, {"docs": ["d1", "d2"]}, seed=SEED, **FAKES)

    assert "in-process, a module global or a class attribute outlives each run" in str(raised.value)
