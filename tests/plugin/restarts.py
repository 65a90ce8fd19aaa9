"""Workflows that a crash which is not a real restart would let pass: each wrong one next to its correct twin.

A real restart changes more than "the engine's memory is gone": the process
comes back later (downtime), under another hash seed, without the threads the
dead one had, and a paused process may wake after another worker took its run.
Each wrong workflow here passes a harness that forgets one of those.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import datetime
from typing import Annotated

import redis

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    Resource,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)

from .flows import Payments


def get_redis() -> redis.Redis:
    return redis.Redis(host="redis.invalid", decode_responses=True)


Redis = Annotated[redis.Redis, Resource(get_redis)]


# -- downtime ---------------------------------------------------------------------------------------


class MinuteKeyedBilling(Workflow):
    """WRONG: the charge's effect key is the current minute, so a resume minutes later charges again."""

    @step
    async def bill(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        minute = int(time.time() // 60)
        receipt = await ctx.effect(f"bill-{minute}", payments.charge, ev.order, ev.cents)
        await ctx.store.set("receipt", receipt)
        return StopEvent(result="billed")


class MinuteKeyedByName(Workflow):
    """WRONG as ``MinuteKeyedBilling``, reading the minute through a name imported from ``datetime``."""

    @step
    async def bill(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        minute = datetime.now().strftime("%Y%m%d%H%M")
        receipt = await ctx.effect(f"bill-{minute}", payments.charge, ev.order, ev.cents)
        await ctx.store.set("receipt", receipt)
        return StopEvent(result="billed")


class RunKeyedBilling(Workflow):
    """Right: the charge's key is fixed, so every resume finds its record, whenever it comes."""

    @step
    async def bill(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        receipt = await ctx.effect("bill", payments.charge, ev.order, ev.cents)
        await ctx.store.set("receipt", receipt)
        return StopEvent(result="billed")


class RandomEffectKey(Workflow):
    """WRONG: the effect's key is random, so a re-run step never finds the record of the one before."""

    @step
    async def go(self, ev: StartEvent, ctx: Context) -> StopEvent:
        value = await ctx.effect(f"answer-{uuid.uuid4().hex}", lambda: 42)
        await ctx.store.set("answer", value)
        return StopEvent(result=value)


class FixedEffectKey(Workflow):
    """Right: the same effect with a fixed key."""

    @step
    async def go(self, ev: StartEvent, ctx: Context) -> StopEvent:
        value = await ctx.effect("answer", lambda: 42)
        await ctx.store.set("answer", value)
        return StopEvent(result=value)


# -- threads ------------------------------------------------------------------------------------------


class Part(Event):
    n: int


class PartDone(Event):
    n: int


class ThreadedParts(Workflow):
    """Right: a plain ``def`` step fans out, two workers write from threads (``asyncio.to_thread``), one gathers."""

    @step
    def split(self, ev: StartEvent, ctx: Context) -> Part | None:
        for n in range(ev.parts):
            ctx.send_event(Part(n=n))
        return None

    @step(num_workers=2)
    async def work(self, ev: Part, ctx: Context, redis: Redis) -> PartDone:
        await asyncio.to_thread(redis.sadd, "done", ev.n)
        return PartDone(n=ev.n)

    @step
    async def gather(self, ev: PartDone, ctx: Context) -> StopEvent | None:
        ready = ctx.collect_events(ev, [PartDone] * ev_count(ctx))
        if ready is None:
            return None
        return StopEvent(result=sorted(e.n for e in ready))


def ev_count(ctx: Context) -> int:
    return 2


# -- hash seed ------------------------------------------------------------------------------------------


class Region(Event):
    name: str


class Notified(Event):
    name: str


class _Regions(Workflow):
    """Sends one event per region, checkpointing after each send, and gathers the notifications."""

    def regions(self, names: list[str]) -> list[str]:
        raise NotImplementedError

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Region | None:
        regions = self.regions(ev.regions)
        await ctx.store.set("regions", len(regions))
        for name in regions:
            ctx.send_event(Region(name=name))  # a restart skips as many sends as were durable, by count
            await ctx.checkpoint()
        return None

    @step
    async def notify(self, ev: Region, ctx: Context, redis: Redis) -> Notified:
        redis.sadd("notified", ev.name)
        return Notified(name=ev.name)

    @step
    async def gather(self, ev: Notified, ctx: Context) -> StopEvent | None:
        ready = ctx.collect_events(ev, [Notified] * await ctx.store.get("regions"))
        if ready is None:
            return None
        return StopEvent(result=sorted(e.name for e in ready))


class SetOrderSends(_Regions):
    """WRONG: sends in ``set`` order, which a restart's new hash seed changes: one region twice, another never."""

    def regions(self, names: list[str]) -> list[str]:
        return list(set(names))


class SortedSends(_Regions):
    """Right: the same sends in sorted order, the same in every process."""

    def regions(self, names: list[str]) -> list[str]:
        return sorted(set(names))


REGIONS = {"regions": ["eu-west", "us-east", "ap-south", "af-north", "sa-east"]}


# -- verdicts a user can act on -------------------------------------------------------------------------


class AskOnTheStream(Workflow):
    """WRONG: asks its question with ``write_event_to_stream``, which a restart does not send again."""

    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> None:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="ship it?"))
        return None

    @step
    async def answer(self, ev: HumanResponseEvent, ctx: Context) -> StopEvent:
        return StopEvent(result=ev.response)


class Asked(Event):
    pass


class AskThenAwait(Workflow):
    """WRONG: one step asks on the stream, the next awaits the answer in ``ctx.wait_for_event``: a crash
    between them leaves a step waiting for an answer to a question nobody asks again."""

    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> Asked:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="refund it?"))
        return Asked()

    @step
    async def decide(self, ev: Asked, ctx: Context) -> StopEvent:
        return StopEvent(result=(await ctx.wait_for_event(HumanResponseEvent)).response)


class AskDurably(Workflow):
    """Right: returns the question, which the run records and a resume asks again."""

    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="ship it?")

    @step
    async def answer(self, ev: HumanResponseEvent, ctx: Context) -> StopEvent:
        return StopEvent(result=ev.response)


class HashCounterThenRecord(Workflow):
    """WRONG: takes stock with HINCRBY on a hash field, then records progress: a crash between takes twice."""

    @step
    async def take(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        redis.hsetnx("stock", "apples", 10)
        done = await ctx.store.get("done", default=[])
        for order in ev.orders:
            if order in done:
                continue
            redis.hincrby("stock", "apples", -1)
            done.append(order)
            await ctx.store.set("done", done)
            await ctx.checkpoint()
        return StopEvent(result=len(done))


class StampedInvoice(Workflow):
    """Right: reads the time once, inside an effect, and keys the invoice by its minute; a run that crashed
    before the stamp was recorded reads a later minute, and still charges once."""

    @step
    async def bill(self, ev: StartEvent, ctx: Context, payments: Payments, redis: Redis) -> StopEvent:
        minute = int(await ctx.effect("stamp", time.time) // 60)
        receipt = await ctx.effect(f"invoice-{minute}", payments.charge, ev.order, ev.cents)
        redis.hset("invoices", str(minute), receipt)
        return StopEvent(result="billed")


class RestartedReminder(Workflow):
    """WRONG: its deadline is computed anew by each attempt, so a resume waits the whole hour again and
    reminds later than the reference by more than any downtime (read through an effect, all the same)."""

    @step
    async def remind(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        until = time.time() + 3600
        while time.time() < until:
            await ctx.sleep(600)
        redis.set("reminded at", int(await ctx.effect("sent", time.time)))
        return StopEvent(result="reminded")


class Opened(Event):
    at: float


class ClockEscalation(Workflow):
    """WRONG: escalates a ticket when the clock says it waited over two minutes since it was opened, read
    anew by the step that decides: a resume after the downtime escalates where the uninterrupted run did not."""

    @step
    async def open(self, ev: StartEvent) -> Opened:
        return Opened(at=time.time())

    @step
    async def triage(self, ev: Opened, redis: Redis) -> StopEvent:
        if time.time() - ev.at > 120:
            redis.sadd("escalated", "ticket-1")
            return StopEvent(result="escalated")
        return StopEvent(result="normal")


def yes(request: InputRequiredEvent) -> HumanResponseEvent:
    return HumanResponseEvent(response="yes")


WRONG = {
    "minute-keyed billing": (MinuteKeyedBilling, {"order": "A-1", "cents": 500}, "duplicated effect"),
    "random effect key": (RandomEffectKey, {}, "duplicated effect"),
    "hash counter taken twice": (HashCounterThenRecord, {"orders": [1, 2]}, "duplicated effect"),
    "restarted reminder": (RestartedReminder, {}, "divergent write"),
    "escalation on the clock": (ClockEscalation, {}, "divergent write"),
}
"""Wrong on purpose: each fails in both modes, with this kind."""

RIGHT = {
    "run-keyed billing": (RunKeyedBilling, {"order": "A-1", "cents": 500}),
    "fixed effect key": (FixedEffectKey, {}),
    "threaded parts": (ThreadedParts, {"parts": 2}),
    "sorted sends": (SortedSends, REGIONS),
    "time-stamped invoice": (StampedInvoice, {"order": "A-1", "cents": 500}),
}
"""The correct twins: every scenario passes, in both modes."""


# -- one hash seed per life ------------------------------------------------------------------------------

SEEN: list[tuple[int, int]] = []
"""(pid, hash of a fixed text) as each life saw it; filled in the test's process, where kill mode's fakes live."""


class Seeds:
    """A fake that notes which process called it and how that process hashes a fixed text."""

    def saw(self, pid: int, hashed: int) -> None:
        SEEN.append((pid, hashed))


def get_seeds() -> Seeds:
    raise RuntimeError("the test serves the fake")


class HashSeeds(Workflow):
    """Two steps, each noting its process's hash of a fixed text."""

    @step
    async def first(self, ev: StartEvent, ctx: Context, seeds: Annotated[Seeds, Resource(get_seeds)]) -> Region:
        seeds.saw(os.getpid(), hash("durableflow"))
        return Region(name="x")

    @step
    async def second(self, ev: Region, ctx: Context, seeds: Annotated[Seeds, Resource(get_seeds)]) -> StopEvent:
        seeds.saw(os.getpid(), hash("durableflow"))
        return StopEvent(result="seen")
