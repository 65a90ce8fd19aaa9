"""The workflows the durability tests crash, and the worker processes that run them.

The external world a run talks to (``World``, ``Bank``, the journal file) is
passed into the workflow's constructor, so it outlives a crashed engine the way
a real database would. ``python -c "...; main()" start|resume ...`` runs
``Tally`` in a separate process (see ``main``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from durableflow import (
    Context,
    Event,
    RunLeaseError,
    StartEvent,
    StopEvent,
    Workflow,
    open_checkpointer,
    step,
)


class World:
    """A log of what steps did, kept outside the engine; ``life`` counts the process lives of a run."""

    def __init__(self) -> None:
        self.life = 1
        self.log: list[tuple[int, str, Any]] = []

    def note(self, what: str, key: Any) -> None:
        self.log.append((self.life, what, key))

    def count(self, what: str, key: Any = None, life: int | None = None) -> int:
        return sum(
            1 for lived, did, on in self.log if did == what and (key is None or on == key) and life in (None, lived)
        )


# -- a linear pipeline ----------------------------------------------------------------------


class Fetched(Event):
    ids: list[int]


class Converted(Event):
    count: int


class Pipeline(Workflow):
    """fetch -> convert (a checkpoint after each document) -> publish."""

    @step
    async def fetch(self, ev: StartEvent, ctx: Context) -> Fetched:
        await ctx.store.set("fetched", list(ev.ids))
        return Fetched(ids=list(ev.ids))

    @step
    async def convert(self, ev: Fetched, ctx: Context) -> Converted:
        done = await ctx.store.get("converted", default=[])
        for doc_id in ev.ids:
            if doc_id in done:
                continue
            done.append(doc_id)
            await ctx.store.set("converted", done)
            await ctx.checkpoint()
        return Converted(count=len(done))

    @step
    async def publish(self, ev: Converted, ctx: Context) -> StopEvent:
        await ctx.store.set("published", ev.count)
        return StopEvent(result={"published": ev.count, "converted": await ctx.store.get("converted", default=[])})


# -- fan-out, concurrent workers, collect ---------------------------------------------------


class Item(Event):
    n: int


class Squared(Event):
    n: int
    square: int


class FanOut(Workflow):
    """split sends ``count`` items; square (two workers) squares each; gather collects them all."""

    def __init__(self, world: World, **options: Any) -> None:
        super().__init__(**options)
        self.world = world

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Item | None:
        self.world.note("split", "start")
        await ctx.store.set("count", ev.count)
        for n in range(ev.count):
            ctx.send_event(Item(n=n))
        return None

    @step(num_workers=2)
    async def square(self, ev: Item, ctx: Context) -> Squared:
        self.world.note("square", ev.n)
        await asyncio.sleep(0)  # let the other worker interleave
        self.world.note("square returned", ev.n)
        return Squared(n=ev.n, square=ev.n**2)

    @step
    async def gather(self, ev: Squared, ctx: Context) -> StopEvent | None:
        self.world.note("gather", ev.n)
        count = await ctx.store.get("count")
        ready = ctx.collect_events(ev, [Squared] * count)
        if ready is None:
            return None
        return StopEvent(result=sorted(event.square for event in ready))


# -- effects ----------------------------------------------------------------------------------


class Charged(Event):
    receipt: str


class Bank:
    """The outside world of a payment: it records every call it gets."""

    def __init__(self) -> None:
        self.charges: list[tuple[int, str]] = []
        self.notices: list[str] = []

    def charge(self, amount: int, idempotency_key: str) -> str:
        self.charges.append((amount, idempotency_key))
        return f"receipt-{len(self.charges)}"

    async def notify(self, receipt: str) -> bool:
        self.notices.append(receipt)
        return True


class Charging(Workflow):
    """pay charges once (through effects), then confirm returns the receipt."""

    def __init__(self, bank: Bank, **options: Any) -> None:
        super().__init__(**options)
        self.bank = bank

    @step
    async def pay(self, ev: StartEvent, ctx: Context) -> Charged:
        receipt = await ctx.effect("charge", self.bank.charge, ev.amount)
        again = await ctx.effect("charge", self.bank.charge, ev.amount)
        if again != receipt:
            raise AssertionError(f"the second call of effect 'charge' gave {again!r}, not the recorded {receipt!r}")
        await ctx.effect("notify", self.bank.notify, receipt)
        return Charged(receipt=receipt)

    @step
    async def confirm(self, ev: Charged, ctx: Context) -> StopEvent:
        return StopEvent(result=ev.receipt)


# -- time -----------------------------------------------------------------------------------


class Sleeper(Workflow):
    """One step that naps ``seconds`` with a durable sleep."""

    @step
    async def nap(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.sleep(ev.seconds)
        return StopEvent(result="rested")


# -- a run that waits at a gate ---------------------------------------------------------------


class Half(Event):
    value: int


class Gated(Workflow):
    """first doubles the value; second waits for the gate (if any), then adds one."""

    def __init__(self, gate: asyncio.Event | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.gate = gate
        self.at_gate = 0

    @step
    async def first(self, ev: StartEvent, ctx: Context) -> Half:
        await ctx.store.set("first", ev.value)
        return Half(value=ev.value * 2)

    @step
    async def second(self, ev: Half, ctx: Context) -> StopEvent:
        self.at_gate += 1
        if self.gate is not None:
            await self.gate.wait()
        return StopEvent(result=ev.value + 1)


# -- a run for separate processes -------------------------------------------------------------


class Count(Event):
    n: int


class Tally(Workflow):
    """Counts to ``total`` one step at a time, journaling each step's start and return to a file.

    With ``kill_at`` the process SIGKILLs itself inside step ``n == kill_at``,
    after changing the state and before returning. With ``hold_until`` each
    count waits until that file exists, so the run stays leased until then.
    """

    def __init__(self, journal: str, kill_at: int | None = None, hold_until: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.journal = journal
        self.kill_at = kill_at
        self.hold_until = hold_until

    def _write(self, line: str) -> None:
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{line} {os.getpid()}\n".encode())
        finally:
            os.close(fd)

    @step
    async def begin(self, ev: StartEvent, ctx: Context) -> Count:
        await ctx.store.set("total", ev.total)
        return Count(n=0)

    @step
    async def count(self, ev: Count, ctx: Context) -> Count | StopEvent:
        self._write(f"start {ev.n}")
        if self.hold_until:
            give_up = time.monotonic() + 30
            while not Path(self.hold_until).exists() and time.monotonic() < give_up:
                await asyncio.sleep(0.005)
        counted = await ctx.store.get("counted", default=[])
        counted.append(ev.n)
        await ctx.store.set("counted", counted)
        if ev.n == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self._write(f"return {ev.n}")
        if ev.n + 1 == await ctx.store.get("total"):
            return StopEvent(result=counted)
        return Count(n=ev.n + 1)


def read_journal(path: str | Path) -> list[tuple[str, int, int]]:
    """The journal's lines as (start|return, n, pid)."""
    lines = Path(path).read_text().split("\n") if Path(path).exists() else []
    return [(what, int(n), int(pid)) for what, n, pid in (line.split() for line in lines if line)]


def main(argv: list[str] | None = None) -> None:
    """``start --store URL --run-id ID --journal PATH --total N [--kill-at K]``: run Tally (and die at K);
    ``resume --store URL --run-id ID --journal PATH --ready PATH --go PATH --out PATH [--hold-until PATH]``:
    once the go file exists, resume the run and write {"outcome": ...} as JSON to the out file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["start", "resume"])
    parser.add_argument("--store", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--total", type=int, default=4)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--hold-until")
    parser.add_argument("--ready")
    parser.add_argument("--go")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    asyncio.run(_work(args))


async def _work(args: argparse.Namespace) -> None:
    workflow = Tally(
        args.journal, kill_at=args.kill_at, hold_until=args.hold_until, checkpointer=open_checkpointer(args.store)
    )
    if args.command == "start":
        await workflow.run(run_id=args.run_id, total=args.total)
        return
    Path(args.ready).touch()
    give_up = time.monotonic() + 30
    while not Path(args.go).exists():
        if time.monotonic() > give_up:
            raise SystemExit("no go signal")
        await asyncio.sleep(0.002)
    try:
        outcome = {"outcome": "completed", "result": await workflow.resume(args.run_id)}
    except RunLeaseError as exc:
        outcome = {"outcome": "RunLeaseError", "holder": exc.holder}
    Path(args.out).write_text(json.dumps(outcome))
