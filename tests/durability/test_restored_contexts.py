"""A context restored with ``Context.from_dict`` and run on a durable workflow whose store already holds its run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durableflow import (
    Context,
    MemoryCheckpointer,
    RunExistsError,
    RunInfo,
    RunLeaseError,
    SnapshotError,
    WorkflowCancelledError,
)

from .conftest import Store
from .crashing import settle
from .workflows import Gated


async def _saved_at_the_gate(store: Store) -> tuple[Gated, Any, asyncio.Event, dict[str, Any]]:
    """Start a Gated run, let ``second`` wait at its gate, and save its context there."""
    gate = asyncio.Event()
    workflow = Gated(gate=gate, checkpointer=store.open())
    handler = workflow.run(run_id="restored", value=5)
    await settle(lambda: workflow.at_gate == 1)
    return workflow, handler, gate, handler.ctx.to_dict()


async def test_a_restored_context_continues_its_stored_run_from_the_saved_state(store: Store) -> None:
    """The saved state becomes the run's newest checkpoint: the run completes, and the store says so."""
    _, handler, _, saved = await _saved_at_the_gate(store)
    handler.cancel()
    with pytest.raises(WorkflowCancelledError):
        await handler
    cancelled_at = store.open().info("restored").last_seq

    again = Gated(checkpointer=store.open())
    assert await asyncio.wait_for(again.run(ctx=Context.from_dict(again, saved)), 5) == 11
    assert again.at_gate == 1  # the saved context had second's input in flight: delivered again

    checkpointer = store.open()
    info = checkpointer.info("restored")
    assert (info.status, info.result, info.lease_owner) == ("completed", "11", None)
    records = checkpointer.load("restored")
    assert records[0].full and records[0].seq == cancelled_at + 1  # the restored state, after what was there
    assert await Gated(checkpointer=store.open()).resume("restored") == 11


async def test_a_restored_context_of_a_completed_run_is_refused_and_the_run_kept(store: Store) -> None:
    _, handler, gate, saved = await _saved_at_the_gate(store)
    gate.set()
    assert await handler == 11
    before = store.open().info("restored")

    again = Gated(checkpointer=store.open())
    with pytest.raises(RunExistsError, match=r"wf\.resume\('restored'\)"):
        await again.run(ctx=Context.from_dict(again, saved))
    after = store.open().info("restored")
    assert (after.status, after.last_seq, after.lease_owner) == ("completed", before.last_seq, None)


async def test_a_restored_context_of_a_run_another_worker_drives_raises_run_lease_error(store: Store) -> None:
    workflow, handler, gate, saved = await _saved_at_the_gate(store)
    again = Gated(checkpointer=store.open())
    with pytest.raises(RunLeaseError):
        await again.run(ctx=Context.from_dict(again, saved))
    gate.set()
    assert await asyncio.wait_for(handler, 5) == 11
    assert (workflow.at_gate, again.at_gate) == (1, 0)


class AnswersForAnotherRun(MemoryCheckpointer):
    """Once ``confused``, asked about run ``restored`` it describes run ``other`` (an edited or broken store)."""

    confused = False

    def info(self, run_id: str) -> RunInfo:
        return super().info("other" if self.confused and run_id == "restored" else run_id)


async def test_a_store_that_describes_another_run_is_refused_with_a_snapshot_error() -> None:
    """Restoring a context onto a run whose metadata the store answers with another run's (one that completed) is
    refused with SnapshotError naming both, rather than acted on: the run is not taken for completed, nor written."""
    store = AnswersForAnotherRun()
    assert await asyncio.wait_for(Gated(checkpointer=store).run(run_id="other", value=1), 5) == 3
    gate = asyncio.Event()
    workflow = Gated(gate=gate, checkpointer=store)
    handler = workflow.run(run_id="restored", value=5)
    await settle(lambda: workflow.at_gate == 1)
    saved = handler.ctx.to_dict()
    handler.cancel()
    with pytest.raises(WorkflowCancelledError):
        await handler
    written = store.info("restored").last_seq

    store.confused = True
    again = Gated(checkpointer=store)
    with pytest.raises(SnapshotError, match="metadata of run 'other'"):
        await again.run(ctx=Context.from_dict(again, saved))
    store.confused = False
    assert store.info("restored").last_seq == written
