"""Human in the loop: an expense claim waits for a manager's decision, across restarts of the process.

The run asks with an ``InputRequiredEvent`` and continues when a ``HumanResponseEvent`` arrives; a process
that dies while waiting loses nothing, because the resumed run asks again on its event stream.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from durableflow import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowHandler,
    step,
)


class ExpenseClaim(StartEvent):
    employee: str
    amount: int
    """Whole euros."""


class ApprovalRequested(InputRequiredEvent):
    """Shown to the approver; re-sent on the event stream by every resume until the decision arrives."""

    question: str


class Decision(HumanResponseEvent):
    """The approver's answer, sent with ``handler.send_event``."""

    approved: bool
    approver: str


class ExpenseApproval(Workflow):
    """Asks for approval of a claim and returns the claim with the decision."""

    @step
    async def request_approval(self, ev: ExpenseClaim, ctx: Context) -> ApprovalRequested:
        # Keep the claim in state: the step that gets the decision runs maybe days later, in another process.
        await ctx.store.set("claim", {"employee": ev.employee, "amount": ev.amount})
        return ApprovalRequested(question=f"Approve {ev.amount} EUR claimed by {ev.employee}?")

    @step
    async def decide(self, ev: Decision, ctx: Context) -> StopEvent:
        claim: dict[str, Any] = await ctx.store.get("claim")
        return StopEvent(result={**claim, "approved": ev.approved, "approver": ev.approver})


async def next_request(handler: WorkflowHandler) -> ApprovalRequested | None:
    """Read the run's event stream until it asks for approval; ``None`` if it ends first (decided already)."""
    async for event in handler.stream_events():
        if isinstance(event, ApprovalRequested):
            return event
    return None


async def ask(db: Path, run_id: str | None, employee: str, amount: int) -> None:
    """Start a claim's run and print its question; the process may then exit: the run waits in the store."""
    workflow = ExpenseApproval(checkpointer=SQLiteCheckpointer(db))
    handler = workflow.run(run_id=run_id, employee=employee, amount=amount)
    request = await next_request(handler)
    assert request is not None, "a new claim always asks"
    print(f"run {handler.run_id} asks: {request.question}")


async def answer(db: Path, run_id: str, approved: bool, approver: str) -> dict[str, Any]:
    """Resume a waiting run in this process, answer its question, and return the result."""
    handler = ExpenseApproval(checkpointer=SQLiteCheckpointer(db)).resume(run_id)
    request = await next_request(handler)  # asked again: the process that first asked is gone
    if request is None:  # someone decided already: the stored run just gives its result
        print(f"run {run_id} was decided already")
    else:
        print(f"run {run_id} asks again after the restart: {request.question}")
        handler.send_event(Decision(approved=approved, approver=approver))
    result: dict[str, Any] = await handler
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.approval", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    ask_command = commands.add_parser("ask", help="start a claim and exit while it waits")
    ask_command.add_argument("db", type=Path)
    ask_command.add_argument("--run-id")
    ask_command.add_argument("--employee", default="Ada")
    ask_command.add_argument("--amount", type=int, default=120)
    answer_command = commands.add_parser("answer", help="resume a waiting claim and decide it")
    answer_command.add_argument("db", type=Path)
    answer_command.add_argument("run_id")
    answer_command.add_argument("decision", choices=["approve", "reject"])
    answer_command.add_argument("--approver", default="Grace")
    args = parser.parse_args()
    if args.command == "ask":
        asyncio.run(ask(args.db, args.run_id, args.employee, args.amount))
    elif args.command == "answer":
        print(asyncio.run(answer(args.db, args.run_id, args.decision == "approve", args.approver)))
    else:  # the whole story: one process asks and exits, this one answers
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "runs.db"
            command = [sys.executable, "-m", "examples.approval", "ask", str(db), "--run-id", "claim-1"]
            subprocess.run(command, check=True)
            print(asyncio.run(answer(db, "claim-1", approved=True, approver="Grace")))


if __name__ == "__main__":
    main()
