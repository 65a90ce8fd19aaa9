"""Workflows the plugin's tests crash: some wrong on purpose, each next to its correct twin.

The pytester-generated test files import this module as ``flows`` (it is copied
next to them), the direct tests as ``tests.plugin.flows``. Every workflow is
small, so that a kill-mode exploration (one fork per life) stays quick.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

import redis

from durableflow import Context, Event, Resource, StartEvent, StopEvent, Workflow, step


def get_redis() -> redis.Redis:
    """The production Redis client; the crash harness serves fakeredis in its place."""
    return redis.Redis(host="redis.invalid", decode_responses=True)


Redis = Annotated[redis.Redis, Resource(get_redis)]


# -- (a) progress kept on the workflow instance ---------------------------------------------------


class InstanceProgress(Workflow):
    """WRONG: remembers converted ids in ``self.done``, which dies with the process; a resume pushes them again."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.done: list[int] = []

    @step
    async def convert(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        for doc_id in ev.ids:
            if doc_id in self.done:
                continue
            redis.rpush("converted", doc_id)
            self.done.append(doc_id)
            await ctx.checkpoint()
        return StopEvent(result=len(ev.ids))


# -- (b) a non-idempotent Redis write with progress recorded after it ----------------------------


class PushThenRecord(Workflow):
    """WRONG: RPUSH, then record progress; a crash between the two pushes the document again on resume."""

    @step
    async def convert(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        done = await ctx.store.get("done", default=[])
        for doc_id in ev.ids:
            if doc_id in done:
                continue
            redis.rpush("converted", doc_id)
            done.append(doc_id)
            await ctx.store.set("done", done)
            await ctx.checkpoint()
        return StopEvent(result=len(done))


def untyped_redis():  # type: ignore[no-untyped-def]  # says nothing of what it builds, as ported code may not
    return redis.Redis(port=1, decode_responses=True)  # nothing listens there: the harness must serve a fake


class PushThenRecordLoosely(Workflow):
    """WRONG as PushThenRecord, its client annotated ``Any``: the harness still fakes it, and sees the push twice."""

    @step
    async def convert(self, ev: StartEvent, ctx: Context, client: Annotated[Any, Resource(untyped_redis)]) -> StopEvent:
        return await PushThenRecord.convert(self, ev, ctx, client)  # type: ignore[arg-type]  # the same body


class TakeThenRecord(Workflow):
    """WRONG: DECR the stock, then record progress; a crash between the two takes a second item."""

    @step
    async def reserve(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        redis.setnx("stock", 10)
        done = await ctx.store.get("done", default=[])
        for order in ev.orders:
            if order in done:
                continue
            redis.decr("stock")
            done.append(order)
            await ctx.store.set("done", done)
            await ctx.checkpoint()
        return StopEvent(result=len(done))


class CountThenRecord(Workflow):
    """WRONG: INCR a counter, then record progress; a crash between the two counts the document twice."""

    @step
    async def convert(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        done = await ctx.store.get("done", default=[])
        for doc_id in ev.ids:
            if doc_id in done:
                continue
            redis.incr("converted_count")
            done.append(doc_id)
            await ctx.store.set("done", done)
            await ctx.checkpoint()
        return StopEvent(result=len(done))


class AddThenRecord(Workflow):
    """Right: SADD and HSET are idempotent, so doing one again after a crash changes nothing."""

    @step
    async def convert(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        done = await ctx.store.get("done", default=[])
        for doc_id in ev.ids:
            if doc_id in done:
                continue
            redis.sadd("converted", doc_id)
            redis.hset("pages", str(doc_id), doc_id * 10)
            done.append(doc_id)
            await ctx.store.set("done", done)
            await ctx.checkpoint()
        return StopEvent(result=len(done))


class Fetched(Event):
    ids: list[int]


class Pipeline(Workflow):
    """Right, in two steps: ``fetch`` hands the ids on, ``convert`` writes each with SADD and records it after."""

    @step
    async def fetch(self, ev: StartEvent, ctx: Context) -> Fetched:
        return Fetched(ids=list(ev.ids))

    @step
    async def convert(self, ev: Fetched, ctx: Context, redis: Redis) -> StopEvent:
        done = await ctx.store.get("done", default=[])
        for doc_id in ev.ids:
            if doc_id in done:
                continue
            redis.sadd("converted", doc_id)
            done.append(doc_id)
            await ctx.store.set("done", done)
            await ctx.checkpoint()
        return StopEvent(result=sorted(done))


# -- (c) progress recorded before the side effect it stands for ----------------------------------


class RecordThenAdd(Workflow):
    """WRONG: records a document as done and checkpoints, then writes it; a crash in between loses it."""

    @step
    async def convert(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        done = await ctx.store.get("done", default=[])
        for doc_id in ev.ids:
            if doc_id in done:
                continue
            done.append(doc_id)
            await ctx.store.set("done", done)
            await ctx.checkpoint()
            redis.sadd("converted", doc_id)
        return StopEvent(result=len(done))


# -- (d) a payment outside ctx.effect ------------------------------------------------------------


class PaymentsClient:
    """The production payment client: it refuses to run in tests."""

    def charge(self, order: str, cents: int, idempotency_key: str | None = None) -> str:
        raise RuntimeError("the real payment provider is not reachable from tests")


def get_payments() -> PaymentsClient:
    return PaymentsClient()


class FakePayments:
    """A payment provider that, like a real one, charges once per idempotency key."""

    def __init__(self) -> None:
        self.charges: dict[str, tuple[str, int]] = {}

    def charge(self, order: str, cents: int, idempotency_key: str | None = None) -> str:
        key = idempotency_key or f"no-key-{len(self.charges)}"
        self.charges.setdefault(key, (order, cents))
        return f"receipt-{list(self.charges).index(key) + 1}"


Payments = Annotated[PaymentsClient, Resource(get_payments)]


class ChargeDirectly(Workflow):
    """WRONG: charges the card straight from the step; a crash before the step's checkpoint charges again."""

    @step
    async def pay(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        return StopEvent(result=payments.charge(ev.order, ev.cents))


class ChargeWithNoKey(Workflow):
    """WRONG: charges straight from the step, passing ``idempotency_key=None``: no key, so nothing dedupes it."""

    @step
    async def pay(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        return StopEvent(result=payments.charge(ev.order, ev.cents, idempotency_key=None))


class ChargeAsEffect(Workflow):
    """Right: the charge is a ``ctx.effect``, and its idempotency key reaches the provider."""

    @step
    async def pay(self, ev: StartEvent, ctx: Context, payments: Payments) -> StopEvent:
        return StopEvent(result=await ctx.effect("charge", payments.charge, ev.order, ev.cents))


class Order(Event):
    order: str


class Charged(Event):
    receipt: str


class ChargeInParallel(Workflow):
    """Right: two workers charge one order each at the same time, each a ``ctx.effect`` under the order's own key."""

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Order | None:
        await ctx.store.set("orders", len(ev.orders))
        for order in ev.orders:
            ctx.send_event(Order(order=order))
        return None

    @step(num_workers=2)
    async def charge(self, ev: Order, ctx: Context, payments: Payments) -> Charged:
        async def pay(order: str, cents: int, idempotency_key: str | None = None) -> str:
            for _ in range(5):  # the provider answers later: meanwhile the other worker's charge begins
                await asyncio.sleep(0)
            return payments.charge(order, cents, idempotency_key=idempotency_key)

        return Charged(receipt=await ctx.effect(f"charge-{ev.order}", pay, ev.order, 500))

    @step
    async def gather(self, ev: Charged, ctx: Context) -> StopEvent | None:
        ready = ctx.collect_events(ev, [Charged] * await ctx.store.get("orders"))
        if ready is None:
            return None
        return StopEvent(result=sorted(e.receipt for e in ready))


# -- fan-out / fan-in ------------------------------------------------------------------------------


class Page(Event):
    n: int


class Rendered(Event):
    n: int


class RenderPages(Workflow):
    """Right: one event per page, two workers SADD them, and ``collect_events`` gathers them all."""

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Page | None:
        await ctx.store.set("pages", ev.pages)
        for n in range(ev.pages):
            ctx.send_event(Page(n=n))
        return None

    @step(num_workers=2)
    async def render(self, ev: Page, ctx: Context, redis: Redis) -> Rendered:
        redis.sadd("rendered", ev.n)
        return Rendered(n=ev.n)

    @step
    async def gather(self, ev: Rendered, ctx: Context) -> StopEvent | None:
        ready = ctx.collect_events(ev, [Rendered] * await ctx.store.get("pages"))
        if ready is None:
            return None
        return StopEvent(result=sorted(e.n for e in ready))


# -- hangs -------------------------------------------------------------------------------------------


class Produced(Event):
    pass


class WaitsForInstanceSignal(Workflow):
    """WRONG: ``consume`` waits for a signal that ``produce`` set on the instance; after a restart nobody sets it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.signal = asyncio.Event()

    @step
    async def produce(self, ev: StartEvent, ctx: Context) -> Produced:
        self.signal.set()
        return Produced()

    @step
    async def consume(self, ev: Produced, ctx: Context) -> StopEvent:
        await self.signal.wait()
        return StopEvent(result="consumed")


class NeverFinishes(Workflow):
    """WRONG: its step waits for an event nobody sets, so not even an uninterrupted run finishes."""

    @step
    async def wait(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await asyncio.Event().wait()
        return StopEvent(result="never")


class OrderIdAsEffect(Workflow):
    """Right: the order id is random, minted in a ``ctx.effect``, so a resumed run keeps the one it recorded."""

    @step
    async def place(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        order_id = await ctx.effect("order-id", lambda: uuid.uuid4().hex)
        redis.set(f"order:{order_id}", ev.item)
        await ctx.store.set("order", order_id)
        return StopEvent(result=order_id)


class OrderIdInTheStep(Workflow):
    """WRONG: the random order id is minted in the step itself, so a rerun of the step places a second order."""

    @step
    async def place(self, ev: StartEvent, ctx: Context, redis: Redis) -> StopEvent:
        order_id = uuid.uuid4().hex
        redis.set(f"order:{order_id}", ev.item)
        await ctx.store.set("order", order_id)
        return StopEvent(result=order_id)


class AlwaysFails(Workflow):
    """WRONG: its step raises, so every run fails the same way, crashed or not."""

    @step
    async def boom(self, ev: StartEvent, ctx: Context) -> StopEvent:
        raise RuntimeError("broken")


WRONG = {
    "instance state": (InstanceProgress, {"ids": [1, 2]}, "duplicated effect"),
    "rpush before progress": (PushThenRecord, {"ids": [1, 2]}, "duplicated effect"),
    "incr before progress": (CountThenRecord, {"ids": [1, 2]}, "duplicated effect"),
    "progress before effect": (RecordThenAdd, {"ids": [1, 2]}, "lost work"),
    "charge outside ctx.effect": (ChargeDirectly, {"order": "A-1", "cents": 500}, "duplicated effect"),
}
"""Each wrong workflow, a start for it, and the one failure kind the harness must give its failing scenarios."""

RIGHT = {
    "idempotent writes": (AddThenRecord, {"ids": [1, 2]}),
    "charge as effect": (ChargeAsEffect, {"order": "A-1", "cents": 500}),
    "concurrent effects": (ChargeInParallel, {"orders": ["A-1", "B-2"]}),
    "fan-out and collect": (RenderPages, {"pages": 2}),
}
"""The correct twins: every scenario of these must pass."""

PAYMENT_FAKES = {"fakes": {get_payments: FakePayments}, "record": frozenset({get_payments})}
"""``explore`` options that serve a recorded FakePayments, as ``fake_resources.override(..., record=True)`` does."""


# -- a Redis client the test fakes itself ----------------------------------------------------------


class Cache:
    """The project's own cache client (a redis-py client inside), which tests replace with fakeredis."""


def get_cache() -> Cache:
    raise RuntimeError("the cache is not reachable from tests")


class LogToCache(Workflow):
    """WRONG (with ``rpush``), right with ``hset``: writes each page to a cache, then records it."""

    @step
    async def log(self, ev: StartEvent, ctx: Context, cache: Annotated[Cache, Resource(get_cache)]) -> StopEvent:
        for page in ev.pages:
            getattr(cache, ev.write)("log", *([page] if ev.write == "rpush" else [page, "done"]))
            await ctx.store.set("last", page)
            await ctx.checkpoint()
        return StopEvent(result=len(ev.pages))


class Sku(Event):
    sku: str


class ShipInSetOrder(Workflow):
    """WRONG: sends one event per item of a set, checkpointing between: a resume under another hash seed
    iterates the set otherwise, so sends matched by order ship one item twice and another never."""

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Sku | None:
        for sku in set(ev.skus):
            ctx.send_event(Sku(sku=sku))
            await ctx.checkpoint()
        return None

    @step
    async def ship(self, ev: Sku, ctx: Context, redis: Redis) -> StopEvent | None:
        redis.sadd("shipped", ev.sku)
        shipped = [*await ctx.store.get("shipped", default=[]), ev.sku]
        await ctx.store.set("shipped", shipped)
        return StopEvent(result=sorted(shipped)) if len(shipped) == 4 else None
