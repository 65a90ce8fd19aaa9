"""Crash tests for the expense approval: every crash point, the wait for the human included, both modes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from durableflow import RunLeaseError, SQLiteCheckpointer
from examples.approval import ApprovalRequested, Decision, ExpenseApproval, next_request

CLAIM: dict[str, Any] = {"employee": "Ada", "amount": 120}
APPROVED = {"employee": "Ada", "amount": 120, "approved": True, "approver": "Grace"}


def approve(request: ApprovalRequested) -> Decision:
    """The human, as the harness plays them: asked in any life of the run, they approve."""
    return Decision(approved=True, approver="Grace")


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_every_crash_point_ends_with_the_human_decision(crash_harness: Any, mode: str) -> None:
    """Killed anywhere, waiting for the human included, the run asks again after the restart and ends decided."""
    report = crash_harness.explore(ExpenseApproval, CLAIM, depth=2, mode=mode, respond=approve)
    report.assert_ok()
    assert report.reference == APPROVED
    assert len(report.scenarios) == report.space


def test_a_run_that_dies_while_waiting_asks_again_after_the_restart(tmp_path: Path, frozen_clock: Any) -> None:
    """Driven by hand: the question is re-sent to the new process, and its answer finishes the run."""
    db = tmp_path / "runs.db"

    async def first_process() -> str:
        handler = ExpenseApproval(checkpointer=SQLiteCheckpointer(db)).run(**CLAIM)
        request = await next_request(handler)
        assert request is not None and request.question == "Approve 120 EUR claimed by Ada?"
        return handler.run_id  # ...and the process dies here, the run waiting, nobody having answered

    run_id = asyncio.run(first_process())  # its event loop, engine and workflow are gone after this line
    assert SQLiteCheckpointer(db).info(run_id).status == "waiting"  # durably waiting for the human

    async def second_process() -> Any:
        workflow = ExpenseApproval(checkpointer=SQLiteCheckpointer(db))
        # The dead engine lived in this very process, so its lease cannot be told from a live one's:
        # it holds the run until the lease expires, as it would for a worker on a machine that vanished.
        with pytest.raises(RunLeaseError):
            workflow.resume(run_id)
        frozen_clock.advance(workflow.checkpointer.lease_ttl)  # type: ignore[union-attr]
        handler = workflow.resume(run_id)
        request = await next_request(handler)
        assert request == ApprovalRequested(question="Approve 120 EUR claimed by Ada?")
        handler.send_event(Decision(approved=False, approver="Grace"))
        return await handler

    assert asyncio.run(second_process()) == {"employee": "Ada", "amount": 120, "approved": False, "approver": "Grace"}
