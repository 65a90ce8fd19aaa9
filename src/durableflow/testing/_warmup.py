"""A run of the harness's own, lived in the zygote so that every life forked from it starts warm.

What an engine builds on first use (its caches, SQLite's and asyncio's
lazily made parts, the modules imported inside functions) would otherwise be
built again in every forked life, and each page it writes copied from the
zygote's memory: a cold life costs about twice a warm one. The user's
workflow never runs here — only this one, on a scratch store, touching no
world.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path

from durableflow import (
    Context,
    DurableflowError,
    Event,
    MemoryCheckpointer,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


class _Start(StartEvent):
    n: int


class _Halfway(Event):
    n: int


class _WarmUp(Workflow):
    """Two steps, a state key each, an effect and a mid-step checkpoint: the paths a resumed life takes."""

    @step
    async def first(self, ev: _Start, ctx: Context) -> _Halfway:
        await ctx.store.set("first", ev.n)
        n = await ctx.effect("double", lambda: ev.n * 2)
        await ctx.checkpoint()
        return _Halfway(n=n)

    @step
    async def second(self, ev: _Halfway, ctx: Context) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state["second"] = ev.n
        return StopEvent(result=ev.n)


def warm_up(workflow: type[Workflow], run: bool = True) -> None:
    """Build ``workflow``'s step graph; with ``run``, also run ``_WarmUp`` from start to end and resume it,
    on SQLite and in memory, then forget them."""
    from durableflow._graph import graph_of

    graph_of(workflow)  # built once here, read by every life
    if not run:
        return
    scratch = Path(tempfile.mkdtemp(prefix="durableflow-warmup-"))
    loop = asyncio.new_event_loop()
    try:
        for store in (SQLiteCheckpointer(scratch / "warm.db"), MemoryCheckpointer()):
            try:
                loop.run_until_complete(_live_twice(store))
            finally:
                store.close()
    finally:
        loop.close()
        shutil.rmtree(scratch, ignore_errors=True)


async def _live_twice(store: MemoryCheckpointer | SQLiteCheckpointer) -> None:
    await _WarmUp(checkpointer=store).run(run_id="warm-up", n=1)
    with contextlib.suppress(DurableflowError):  # a completed run refuses to resume: that path warms too
        await _WarmUp(checkpointer=store).resume("warm-up")
    store.load("warm-up")
