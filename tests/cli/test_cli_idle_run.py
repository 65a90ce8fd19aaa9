"""A run that can make no progress on its own (nothing to run, nothing timed, nothing to ask at the terminal)
ends ``run`` and ``resume`` with exit 9 and what it waits for, and is kept as it stands; before, both waited
for ever."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durableflow import SQLiteCheckpointer
from durableflow._framing import HEADER_SIZE, seal
from durableflow.cli import EXIT_CODES

IDLE_FLOWS = """
from durableflow import Context, Event, HumanResponseEvent, StartEvent, StopEvent, Workflow, step


class Shipped(Event):
    order_id: int


class AwaitsShipment(Workflow):
    @step
    async def wait(self, ev: StartEvent, ctx: Context) -> StopEvent:
        shipped = await ctx.wait_for_event(Shipped, requirements={"order_id": 7})
        return StopEvent(result=shipped.order_id)


def awaits_shipment() -> AwaitsShipment:
    return AwaitsShipment(timeout=3600)  # a run's own timeout is no progress to wait for


class Parks(Workflow):
    @step
    async def note(self, ev: StartEvent) -> StopEvent | None:
        return None  # nothing left to run, and nothing waits


class SilentApproval(Workflow):
    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent)  # asks nothing
        return StopEvent(result=answer.response)


class TimedShipment(Workflow):
    @step
    async def wait(self, ev: StartEvent, ctx: Context) -> StopEvent:
        try:
            await ctx.wait_for_event(Shipped, timeout=0.2)  # soon: waited for
        except TimeoutError:
            pass
        await ctx.wait_for_event(Shipped, timeout=None)  # never: idle
        return StopEvent(result="shipped")
"""

IDLE = 9


@pytest.fixture
def cli(cli: Callable[..., Any], project: Path) -> Iterator[Callable[..., Any]]:
    """The CLI in the project, with ``idleflows.py`` beside ``cliflows.py``; a command still running after
    30 s fails the test instead of hanging it."""
    (project / "idleflows.py").write_text(IDLE_FLOWS)

    def invoke(*argv: str) -> Any:
        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(cli(*argv)), daemon=True)
        thread.start()
        thread.join(30)
        if thread.is_alive():
            pytest.fail(f"`durableflow {' '.join(argv)}` still runs after 30 s")
        return outcome[0]

    yield invoke
    sys.modules.pop("idleflows", None)


def test_exit_code_9_is_listed() -> None:
    assert any(code == IDLE and "idle" in meaning for code, meaning, _ in EXIT_CODES)


def test_a_step_waiting_for_an_event_nobody_sends(cli: Callable[..., Any]) -> None:
    started = cli("run", "idleflows:awaits_shipment")
    assert started.code == IDLE, started.err
    run_id = started.lines[0]
    assert "step wait waits for Shipped with order_id=7 (ctx.wait_for_event; it times out in 2000 s" in started.err
    assert "lists it as interrupted" in started.err
    assert "handler.send_event(Shipped(...))" in started.err
    assert "Traceback" not in started.err

    resumed = cli("resume", run_id, "--workflow", "idleflows:awaits_shipment")
    assert resumed.code == IDLE, resumed.err
    assert resumed.lines == [run_id]

    async def ship() -> Any:  # nothing was lost: the event the message names continues the run
        import idleflows  # type: ignore[import-not-found]

        store = SQLiteCheckpointer("durableflow.db")
        try:
            handler = idleflows.AwaitsShipment(checkpointer=store).resume(run_id)
            await handler.claimed()
            handler.send_event(idleflows.Shipped(order_id=7))
            return await handler
        finally:
            store.close()

    assert asyncio.run(ship()) == 7


def test_a_run_with_nothing_left_to_run(cli: Callable[..., Any]) -> None:
    outcome = cli("run", "idleflows:Parks")
    assert outcome.code == IDLE, outcome.err
    assert "no step has an event to take, and none waits for one" in outcome.err
    assert "lists it as waiting" in outcome.err
    listed = cli("runs", "--status", "waiting")
    assert outcome.lines[0] in listed.out


def test_a_step_waiting_for_an_answer_it_never_asked_for(cli: Callable[..., Any]) -> None:
    """``--respond`` sends the HumanResponseEvent a silent step waits for; without it the message says so."""
    outcome = cli("run", "idleflows:SilentApproval")
    assert outcome.code == IDLE, outcome.err
    run_id = outcome.lines[0]
    assert "step ask waits for HumanResponseEvent" in outcome.err
    assert f"durableflow resume {run_id} --workflow idleflows:SilentApproval --respond" in outcome.err
    answered = cli("resume", run_id, "--workflow", "idleflows:SilentApproval", "--respond", '{"response": "yes"}')
    assert answered.code == 0, answered.err
    assert json.loads(answered.lines[-1]) == "yes"
    direct = cli("run", "idleflows:SilentApproval", "--respond", '{"response": "no"}')
    assert (direct.code, json.loads(direct.lines[-1])) == (0, "no")


def test_a_wait_that_times_out_soon_is_waited_for(cli: Callable[..., Any]) -> None:
    outcome = cli("run", "idleflows:TimedShipment")
    assert outcome.code == IDLE, outcome.err
    assert "step wait waits for Shipped (ctx.wait_for_event)" in outcome.err  # the second wait, with no timeout


def test_a_memory_store_says_the_run_is_gone(cli: Callable[..., Any]) -> None:
    outcome = cli("run", "idleflows:awaits_shipment", "--store", "memory://")
    assert outcome.code == IDLE, outcome.err
    assert "gone" in outcome.err


def test_a_run_whose_records_were_edited_so_no_step_is_due(cli: Callable[..., Any], project: Path) -> None:
    """The case store fuzzing met: a failed run's step delivery deleted from a resealed record."""
    (project / "payments-down").touch()
    failed = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}')
    assert failed.code == 1
    (project / "payments-down").unlink()
    run_id = failed.lines[0]
    with sqlite3.connect("durableflow.db") as db:
        rows = db.execute("SELECT key, data FROM durableflow_records ORDER BY key").fetchall()
        for key, data in rows:
            body = json.loads(data[HEADER_SIZE:])
            if body.get("deliveries"):
                body["deliveries"] = {}
                db.execute(
                    "UPDATE durableflow_records SET data = ? WHERE key = ?",
                    (seal(json.dumps(body), run_id, key & 0xFFFFFFFF, None), key),
                )
    outcome = cli("resume", run_id, "--workflow", "cliflows:Pipeline")
    assert outcome.code == IDLE, outcome.err
    assert f"durableflow show {run_id}" in outcome.err
    again = cli("resume", run_id, "--workflow", "cliflows:Pipeline")
    assert again.code == IDLE, again.err  # kept as it stands, lease given up: the next resume says the same
