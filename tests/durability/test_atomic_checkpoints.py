"""Promise 1, atomic checkpoints: after a crash, loading gives the last completed checkpoint, never a mix."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durableflow import MemoryCheckpointer, RunNotFoundError

from .conftest import HookRecorder, Store
from .crashing import Crash, crash_at, points_reached, stored_document
from .workflows import Pipeline

RUN_ID = "atomic"
IDS = [3, 1, 2]


async def _reference(hooks: HookRecorder) -> tuple[dict[int, dict[str, Any]], Any]:
    """An uncrashed run: the stored document as of each checkpoint, by sequence number, and the result."""
    checkpointer = MemoryCheckpointer()
    documents: dict[int, dict[str, Any]] = {}
    hooks.on_checkpoint = lambda run_id, seq: documents.__setitem__(seq, stored_document(checkpointer, run_id))
    try:
        result = await Pipeline(checkpointer=checkpointer).run(run_id=RUN_ID, ids=IDS)
    finally:
        hooks.on_checkpoint = None
    return documents, result


WRITE_POINTS = [
    point
    for point in points_reached(lambda: Pipeline(checkpointer=MemoryCheckpointer()).run(run_id=RUN_ID, ids=IDS))
    if point.startswith("checkpoint.write.")
]


@pytest.mark.parametrize("point", WRITE_POINTS)
async def test_a_crash_at_a_checkpoint_write_leaves_the_last_complete_checkpoint(
    store: Store, hooks: HookRecorder, point: str
) -> None:
    """A crash just before or just after checkpoint k's write loads as exactly checkpoint k-1 or k, then resumes."""
    documents, expected = await _reference(hooks)
    k = int(point.rpartition("#")[2])
    last_complete = k - 1 if ".before#" in point else k
    with crash_at(point) as reached, pytest.raises(Crash):
        await Pipeline(checkpointer=store.open()).run(run_id=RUN_ID, ids=IDS)
    assert reached[-1] == point

    restarted = store.open()
    if last_complete == 0:
        with pytest.raises(RunNotFoundError):
            restarted.load(RUN_ID)
        with pytest.raises(RunNotFoundError):
            await Pipeline(checkpointer=restarted).resume(RUN_ID)
        return
    assert stored_document(restarted, RUN_ID) == documents[last_complete]
    handler = Pipeline(checkpointer=restarted).resume(RUN_ID)
    assert await asyncio.wait_for(handler, 5) == expected
    assert await handler.ctx.store.get("converted") == IDS
