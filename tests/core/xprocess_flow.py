"""A workflow driven from separate processes by test_cross_process.py.

Run as ``python -c "...; xprocess_flow.main(argv)"`` with this directory on
sys.path, so that every process imports it under the same module name:

    run                 finish a run uninterrupted and print {"result", "squared"} as JSON
    save PATH           start a run, write ctx.to_dict() to PATH from inside the step
                        squaring 3, then die on the spot (os._exit) with the run unfinished
    resume PATH         load PATH with Context.from_dict, finish the run, print like ``run``
"""

import asyncio
import json
import os
import sys
from typing import Any

from durableflow import Context, Event, StartEvent, StopEvent, Workflow, step

NUMBERS = [1, 2, 3, 4, 5]


class Item(Event):
    n: int


class Squared(Event):
    n: int
    value: int


class SumOfSquares(Workflow):
    def __init__(self, save_to: str | None = None) -> None:
        super().__init__(timeout=10)
        self.save_to = save_to
        self.squared: list[int] = []

    @step
    async def split(self, ev: StartEvent, ctx: Context) -> Item | None:
        await ctx.store.set("count", len(ev.numbers))
        for n in ev.numbers:
            ctx.send_event(Item(n=n))
        return None

    @step(num_workers=1)
    async def square(self, ev: Item, ctx: Context) -> Squared:
        self.squared.append(ev.n)
        if self.save_to is not None and ev.n == 3:
            with open(self.save_to, "w") as f:
                json.dump(ctx.to_dict(), f)
                f.flush()
                os.fsync(f.fileno())
            print("saved", flush=True)
            os._exit(0)  # the process dies mid-step: nothing after this point runs
        return Squared(n=ev.n, value=ev.n * ev.n)

    @step(num_workers=1)  # one collector: Squared events are buffered in the order they were accepted
    async def total(self, ev: Squared, ctx: Context) -> StopEvent | None:
        got = ctx.collect_events(ev, [Squared] * await ctx.store.get("count"))
        if got is None:
            return None
        return StopEvent(result={"sum": sum(s.value for s in got), "order": [s.n for s in got]})


async def _main(argv: list[str]) -> dict[str, Any] | None:
    mode = argv[0]
    if mode == "run":
        wf = SumOfSquares()
        result = await wf.run(numbers=NUMBERS)
    elif mode == "save":
        await SumOfSquares(save_to=argv[1]).run(numbers=NUMBERS)
        return None  # not reached: the run dies while saving
    elif mode == "resume":
        with open(argv[1]) as f:
            data = json.load(f)
        wf = SumOfSquares()
        result = await wf.run(ctx=Context.from_dict(wf, data))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return {"result": result, "squared": wf.squared}


def main(argv: list[str]) -> None:
    outcome = asyncio.run(_main(argv))
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
