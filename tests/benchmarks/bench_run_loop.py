"""Run-loop overhead: durableflow (no checkpointer) against llama-index-workflows, in one process.

Two workloads, each written the same way on both sides:

* a trivial 3-step linear run, StartEvent -> A -> B -> StopEvent;
* a fan-out of 100 events: a start step sends 100 ``Item`` events with ``ctx.send_event``, a step with
  ``num_workers=4`` maps each to ``Done``, and a gather step returns ``StopEvent`` once
  ``ctx.collect_events(ev, [Done] * 100)`` has them all.

Batches of each side alternate for several rounds; the table shows the median µs per run and the ratio
peer / durableflow. Target (issue 2): the 3-step run at least 20x faster than the peer (goal 30x).

    python tests/benchmarks/bench_run_loop.py [--quick] [--rounds R] [--batch-seconds S] [--clock wall|process]

``--clock process`` times batches by the process's CPU time (all threads, system calls included): steadier than
the wall clock on a busy machine, where the wall clock charges other processes' time to whoever was running.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import platform
import time
from collections.abc import Callable
from typing import Any

from _timing import calibrated, interleave, print_table, require_peer, us

from durableflow import Context, Event, StartEvent, StopEvent, Workflow, step

TARGET, GOAL = 20.0, 30.0
FAN_OUT = 100


# -- durableflow ------------------------------------------------------------------------------


class A(Event):
    pass


class B(Event):
    pass


class Item(Event):
    n: int


class Done(Event):
    n: int


class ThreeSteps(Workflow):
    @step
    async def first(self, ev: StartEvent) -> A:
        return A()

    @step
    async def second(self, ev: A) -> B:
        return B()

    @step
    async def third(self, ev: B) -> StopEvent:
        return StopEvent(result="done")


class FanOut(Workflow):
    @step
    async def scatter(self, ev: StartEvent, ctx: Context) -> Item | None:
        for n in range(FAN_OUT):
            ctx.send_event(Item(n=n))
        return None

    @step(num_workers=4)
    async def work(self, ev: Item) -> Done:
        return Done(n=ev.n * 2)

    @step
    async def gather(self, ev: Done, ctx: Context) -> StopEvent | None:
        done = ctx.collect_events(ev, [Done] * FAN_OUT)
        if done is None:
            return None
        return StopEvent(result=sum(d.n for d in done))


# -- llama-index-workflows, the same two workflows ----------------------------------------------


def peer_workflows() -> tuple[type[Any], type[Any]]:
    """The peer's versions of ThreeSteps and FanOut (imported here: the peer is optional)."""
    from workflows import Context as PeerContext
    from workflows import Workflow as PeerWorkflow
    from workflows import step as peer_step
    from workflows.events import Event as PeerEvent
    from workflows.events import StartEvent as PeerStart
    from workflows.events import StopEvent as PeerStop

    class PA(PeerEvent):
        pass

    class PB(PeerEvent):
        pass

    class PItem(PeerEvent):
        n: int

    class PDone(PeerEvent):
        n: int

    class PeerThreeSteps(PeerWorkflow):
        @peer_step
        async def first(self, ev: PeerStart) -> PA:
            return PA()

        @peer_step
        async def second(self, ev: PA) -> PB:
            return PB()

        @peer_step
        async def third(self, ev: PB) -> PeerStop:
            return PeerStop(result="done")

    class PeerFanOut(PeerWorkflow):
        @peer_step
        async def scatter(self, ev: PeerStart, ctx: PeerContext) -> PItem | None:
            for n in range(FAN_OUT):
                ctx.send_event(PItem(n=n))
            return None

        @peer_step(num_workers=4)
        async def work(self, ev: PItem) -> PDone:
            return PDone(n=ev.n * 2)

        @peer_step
        async def gather(self, ev: PDone, ctx: PeerContext) -> PeerStop | None:
            done = ctx.collect_events(ev, [PDone] * FAN_OUT)
            if done is None:
                return None
            return PeerStop(result=sum(d.n for d in done))

    return PeerThreeSteps, PeerFanOut


# -- measuring --------------------------------------------------------------------------------


async def measure(rounds: int, batch_seconds: float, clock: Callable[[], float]) -> dict[str, dict[str, float]]:
    PeerThreeSteps, PeerFanOut = peer_workflows()
    ours_three, peer_three = ThreeSteps(), PeerThreeSteps(timeout=None)
    ours_fan, peer_fan = FanOut(), PeerFanOut(timeout=None)
    assert await ours_three.run() == await peer_three.run() == "done"
    assert await ours_fan.run() == await peer_fan.run() == sum(2 * n for n in range(FAN_OUT))

    results = {}
    for workload, ours, peer in (("3-step run", ours_three, peer_three), (f"fan-out of {FAN_OUT}", ours_fan, peer_fan)):
        results[workload] = await interleave(
            {
                "durableflow": await calibrated(ours.run, batch_seconds, clock),
                "peer": await calibrated(peer.run, batch_seconds, clock),
            },
            rounds,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="alternating batches of each side (default 11, quick 3)")
    parser.add_argument("--batch-seconds", type=float, help="length of one batch (default 0.3, quick 0.1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: the quick defaults above")
    parser.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="time batches by the wall clock (default) or by the process's CPU time, steadier on a busy machine",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 11)
    args.batch_seconds = args.batch_seconds or (0.1 if args.quick else 0.3)
    peer_version = require_peer()

    print(
        f"durableflow {importlib.metadata.version('durableflow')} vs llama-index-workflows {peer_version};"
        f" Python {platform.python_version()}; {args.rounds} rounds of {args.batch_seconds} s batches per side,"
        f" {args.clock} clock"
    )
    clock = time.process_time if args.clock == "process" else time.perf_counter
    results = asyncio.run(measure(args.rounds, args.batch_seconds, clock))

    rows = [
        [workload, us(r["durableflow"]), us(r["peer"]), f"{r['peer'] / r['durableflow']:.1f}x"]
        for workload, r in results.items()
    ]
    print_table("µs per run (median)", ["workload", "durableflow", "llama-index-workflows", "peer/ours"], rows)

    three = results["3-step run"]
    ratio = three["peer"] / three["durableflow"]
    verdict = "meets" if ratio >= TARGET else "MISSES"
    print(
        f"\n3-step run: {ratio:.1f}x faster than llama-index-workflows"
        f" (target {TARGET:.0f}x, goal {GOAL:.0f}x): {verdict} the target"
    )
    fan = results[f"fan-out of {FAN_OUT}"]
    print(f"fan-out of {FAN_OUT}: {fan['peer'] / fan['durableflow']:.1f}x faster than llama-index-workflows")


if __name__ == "__main__":
    main()
