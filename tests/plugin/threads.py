"""Workflows whose steps use threads: plain ``def`` steps, ``asyncio.to_thread``, ``num_workers``.

A killed process takes its threads with it; in-process they live on. These
workflows pin that every thread of a life that has ended is kept out of the
fake world, and that the harness says so when it cannot keep one out.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated

import redis

from durableflow import Context, Event, Resource, StartEvent, StopEvent, Workflow, step

from .flows import Payments


def get_redis() -> redis.Redis:
    return redis.Redis(host="redis.invalid", decode_responses=True)


Redis = Annotated[redis.Redis, Resource(get_redis)]


class Chunk(Event):
    n: int


class ChunkDone(Event):
    n: int


class PlainDefWorkers(Workflow):
    """Right: plain ``def`` steps, three workers at once, each writing Redis from its thread, idempotently."""

    @step
    def split(self, ev: StartEvent, ctx: Context) -> Chunk | None:
        for n in range(ev.chunks):
            ctx.send_event(Chunk(n=n))
        return None

    @step(num_workers=3)
    def work(self, ev: Chunk, ctx: Context, redis: Redis) -> ChunkDone:
        redis.hset("chunks", str(ev.n), "done")
        return ChunkDone(n=ev.n)

    @step
    async def gather(self, ev: ChunkDone, ctx: Context) -> StopEvent | None:
        ready = ctx.collect_events(ev, [ChunkDone] * 3)
        if ready is None:
            return None
        return StopEvent(result=sorted(e.n for e in ready))


class ToThreadEffects(Workflow):
    """Right: two workers charge through ``ctx.effect``, the charge itself run in a thread with its key."""

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Chunk | None:
        for n in range(2):
            ctx.send_event(Chunk(n=n))
        return None

    @step(num_workers=2)
    async def charge(self, ev: Chunk, ctx: Context, payments: Payments) -> ChunkDone:
        async def pay(order: str, idempotency_key: str | None = None) -> str:
            return await asyncio.to_thread(payments.charge, order, 100, idempotency_key=idempotency_key)

        await ctx.effect(f"charge-{ev.n}", pay, f"order-{ev.n}")
        return ChunkDone(n=ev.n)

    @step
    async def gather(self, ev: ChunkDone, ctx: Context) -> StopEvent | None:
        ready = ctx.collect_events(ev, [ChunkDone] * 2)
        if ready is None:
            return None
        return StopEvent(result=sorted(e.n for e in ready))


RELEASE = threading.Event()
"""Set by a test: the threads ``LeavesAThread`` left behind then reach for the world."""

REFUSED: list[str] = []
"""What each left-behind thread got when it reached for the world."""


class LeavesAThread(Workflow):
    """Starts a thread that writes Redis later and never joins it: the run ends (or dies) before it writes.

    In kill mode the thread dies with its process; in-process it must be refused the world.
    """

    @step
    async def start(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        def later() -> None:
            RELEASE.wait(10)
            try:
                redis.sadd("late", "written after the run")
            except Exception as exc:
                REFUSED.append(type(exc).__name__)
            else:
                REFUSED.append("written")

        threading.Thread(target=later, daemon=True).start()
        redis.sadd("on time", "written by the step")
        return StopEvent(result="done")


class SlowLedger:
    """A fake whose write takes a while: a thread can be inside it when its life ends."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def write(self, entry: str, seconds: float) -> None:
        time.sleep(seconds)
        self.entries.append(entry)


def get_ledger() -> SlowLedger:
    raise RuntimeError("the test serves a fake ledger")


Ledger = Annotated[SlowLedger, Resource(get_ledger)]


class InsideWhenItEnds(Workflow):
    """Starts a thread that is inside a slow fake call when the run ends, and never joins it."""

    @step
    async def start(self, ev: StartEvent, ctx: Context, ledger: Ledger) -> StopEvent:
        threading.Thread(target=ledger.write, args=("late", ev.seconds), daemon=True).start()
        await asyncio.sleep(0.01)  # the thread is inside the fake by now
        return StopEvent(result="done")
