"""What a worker logs for each run: ``starting`` a submitted run it is the first to drive, ``recovering`` one
whose owner died, and how each ended: completed, failed (with the error's type), or waiting, released so that
whoever answers can resume it (a worker holding a waiting run kept it from being answered, and its slot)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from durableflow import (
    Checkpointer,
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    MemoryCheckpointer,
    RedisCheckpointer,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    StoreAuthenticationError,
    Worker,
    Workflow,
    step,
)

from .test_worker import Adder, interrupt, serve_until


class Refusing(Workflow):
    @step
    async def check(self, ev: StartEvent) -> StopEvent:
        raise LookupError("no such customer")


class Approval(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(question="approve?")

    @step
    async def decide(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


class InStep(Workflow):
    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=answer.response)


def lines(caplog: pytest.LogCaptureFixture, run_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "durableflow.worker" and run_id in r.getMessage()]


@pytest.fixture(params=["memory", "sqlite", "fakeredis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The stores a run is claimed on inline (memory, SQLite) and from a thread (Redis)."""
    checkpointer: Checkpointer = {
        "memory": MemoryCheckpointer,
        "sqlite": lambda: SQLiteCheckpointer(tmp_path / "r.db"),
        "fakeredis": lambda: RedisCheckpointer(fakeredis.FakeRedis(server=fakeredis.FakeServer())),
    }[request.param]()
    yield checkpointer
    checkpointer.close()


@pytest.fixture(autouse=True)
def _log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durableflow.worker")


async def test_a_submitted_run_is_started_and_an_interrupted_one_recovered(
    store: Checkpointer, caplog: pytest.LogCaptureFixture
) -> None:
    submitted = await Adder(checkpointer=store).submit(run_id="new", value=1)
    await interrupt(Adder, store, "old", value=2)
    worker = Worker([Adder], store, poll_interval=0.01)
    await serve_until(worker, lambda: worker.stats.completed == 2 and not worker.active)
    assert lines(caplog, submitted) == ["starting run new of Adder", "run new completed"]
    assert lines(caplog, "old") == ["recovering run old of Adder", "run old completed"]
    assert (worker.stats.recovered, worker.stats.started) == (2, 1)


async def test_a_failed_run_is_logged_with_its_error_type(
    store: Checkpointer, caplog: pytest.LogCaptureFixture
) -> None:
    await Refusing(checkpointer=store).submit(run_id="r")
    worker = Worker([Refusing], store, poll_interval=0.01)
    await serve_until(worker, lambda: worker.stats.failed == 1 and not worker.active)
    assert lines(caplog, "r")[-1] == "run r failed: LookupError: no such customer"


async def test_a_run_waiting_for_input_is_released_and_logged(
    store: Checkpointer, caplog: pytest.LogCaptureFixture
) -> None:
    await Approval(checkpointer=store).submit(run_id="a")
    worker = Worker([Approval], store, poll_interval=0.01)
    await serve_until(worker, lambda: worker.stats.waiting == 1 and not worker.active)
    assert lines(caplog, "a") == [
        "starting run a of Approval",
        "run a is waiting for input (InputRequiredEvent(question='approve?')): released, stored as waiting until "
        "it is resumed to continue",
    ]
    info = store.info("a")
    assert (info.status, info.lease_owner) == ("waiting", None)  # free for whoever answers it
    handler = Approval(checkpointer=store).resume("a")
    await handler.claimed()
    handler.send_event(HumanResponseEvent(response="yes"))
    assert await handler == "yes"
    assert worker.stats.handed_back == 0


async def test_a_step_waiting_in_the_run_is_logged_and_kept(
    store: Checkpointer, caplog: pytest.LogCaptureFixture
) -> None:
    """Released, a run whose step waits would be listed interrupted and taken over again: the worker keeps it."""
    await InStep(checkpointer=store).submit(run_id="s")
    worker = Worker([InStep], store, poll_interval=0.01, grace_period=0)
    await serve_until(worker, lambda: any("waits in" in line for line in lines(caplog, "s")))
    assert (
        lines(caplog, "s")[1]
        == "run s waits in ctx.wait_for_event (ask for HumanResponseEvent); this worker keeps driving it"
    )
    assert worker.stats.waiting == 0 and worker.stats.handed_back == 1  # at its stop


async def test_a_worker_refused_by_its_store_stops_saying_why(
    secured_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A password the store refuses will not be let in by waiting: the worker stops with the error, where
    it polled for ever, a WARNING each time."""
    store = RedisCheckpointer(secured_redis_url.replace(":s3cret@", ":wrong-Pa55word@"))
    worker = Worker([Adder], store, poll_interval=0.01)
    try:
        with pytest.raises(StoreAuthenticationError, match="refused to authenticate"):
            await asyncio.wait_for(worker.run(handle_signals=False), timeout=20)
    finally:
        store.close()
    assert [r.getMessage()[:36] for r in caplog.records if r.levelno >= logging.WARNING] == [
        "store refused this worker, stopping:"
    ]
