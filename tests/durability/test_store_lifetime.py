"""The engine keeps no checkpointer alive: one the program drops is freed once its runs are done."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from durableflow import Context, MemoryCheckpointer, SQLiteCheckpointer, StartEvent, StopEvent, Workflow, step


class Once(Workflow):
    @step
    async def only(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.store.set("n", 1)
        return StopEvent(result=1)


async def test_a_dropped_checkpointer_is_freed_after_its_runs(tmp_path: Path) -> None:
    """Run, resume (a completed run answers) and drop: each store, and what it holds, can be collected."""
    gone = []
    for store in (MemoryCheckpointer(), SQLiteCheckpointer(tmp_path / "runs.db")):
        assert await Once(checkpointer=store).run(run_id="r") == 1
        assert await Once(checkpointer=store).resume("r") == 1
        store.close()
        gone.append(weakref.ref(store))
    del store
    gc.collect()

    assert [ref() for ref in gone] == [None, None]
