"""Runs put in a store for workers to take: started, then handed back before their first step ran."""

from __future__ import annotations

import asyncio
from typing import Any

from durableflow import Checkpointer, RunNotFoundError, Workflow


async def hand_over(workflow: Workflow, checkpointer: Checkpointer, run_id: str, **fields: Any) -> None:
    """Start ``run_id`` on ``workflow`` and hand it back at once: stored, unleased, so listed as interrupted.

    Waits until the store shows it so, since a network store's writes happen off the event loop."""
    workflow.checkpointer = checkpointer
    handler = workflow.run(run_id=run_id, **fields)
    assert handler._runner is not None
    handler._runner.hand_back()
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 10
    while True:
        try:
            info = checkpointer.info(run_id)
            if info.lease_owner is None:  # released: every process sees it interrupted, not only this one
                assert info.status == "interrupted", info
                return
        except RunNotFoundError:
            pass
        if loop.time() > give_up:
            raise AssertionError(f"run {run_id} was not stored and released within 10s")
        await asyncio.sleep(0.002)
