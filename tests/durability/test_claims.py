"""A run is this process's once its claim is settled: ``handler.claimed()`` tells a taken run id, a missing run
or a run another worker drives apart from a run that failed later, on every store."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from durableflow import (
    RedisCheckpointer,
    RunExistsError,
    RunLeaseError,
    RunNotFoundError,
    StartEvent,
    StopEvent,
    StoreUnavailableError,
    Workflow,
    WorkflowHandler,
    WorkflowRuntimeError,
    step,
)

from .conftest import Store
from .crashing import settle
from .workflows import Gated, Half


@pytest.mark.parametrize("kind", ["sqlite", "fakeredis", "redis"])
async def test_starting_a_run_under_a_taken_id_is_refused_before_any_step(
    make_store: Callable[[str], Store], kind: str
) -> None:
    """run(run_id=taken) raises RunExistsError (at once on SQLite, from claimed() and the handler on Redis),
    runs no step and leaves the stored run as it was."""
    store = make_store(kind)
    assert await Gated(checkpointer=store.open()).run(run_id="taken", value=1) == 3
    before = store.open().info("taken")
    again = Gated(checkpointer=store.open())
    with pytest.raises(RunExistsError, match="'taken'"):
        handler = again.run(run_id="taken", value=5)
        await handler.claimed()
    if kind != "sqlite":
        with pytest.raises(RunExistsError):
            await handler
    assert again.at_gate == 0
    after = store.open().info("taken")
    assert (after.status, after.last_seq, after.result) == (before.status, before.last_seq, before.result)


@pytest.mark.parametrize("kind", ["sqlite", "fakeredis"])
async def test_claimed_tells_a_missing_run_and_a_run_another_worker_drives(
    make_store: Callable[[str], Store], kind: str
) -> None:
    """resume() of an unknown run fails with RunNotFoundError, of a run driven elsewhere with RunLeaseError;
    once the first run is claimed, claimed() returns and the run goes on."""
    store = make_store(kind)
    with pytest.raises(RunNotFoundError):
        await Gated(checkpointer=store.open()).resume("nowhere").claimed()
    gate = asyncio.Event()
    first = Gated(gate=gate, checkpointer=store.open())
    driving = first.run(run_id="driven", value=10)
    await driving.claimed()
    await settle(lambda: first.at_gate == 1)
    with pytest.raises(RunLeaseError):
        await Gated(checkpointer=store.open()).resume("driven").claimed()
    gate.set()
    assert await asyncio.wait_for(driving, 5) == 21


async def test_claimed_returns_at_once_without_a_checkpointer() -> None:
    """A run kept nowhere is this process's from the start."""
    handler = Gated().run(value=2)
    await handler.claimed()
    assert await handler == 5


async def test_an_event_sent_while_the_claim_is_under_way_waits_for_it(make_store: Callable[[str], Store]) -> None:
    """On a store called from a thread, resume() returns before the claim: an event sent then is delivered
    once the run is claimed, and when the claim fails, awaiting the send says the run did not start here."""
    store = make_store("fakeredis")
    gate = asyncio.Event()
    first = Gated(gate=gate, checkpointer=store.open())
    driving = first.run(run_id="held", value=1)
    await settle(lambda: first.at_gate == 1)
    refused = Gated(checkpointer=store.open()).resume("held")
    with pytest.raises(WorkflowRuntimeError, match="did not start here"):
        await refused.send_event(Half(value=0))
    with pytest.raises(RunLeaseError):
        await refused
    gate.set()
    assert await asyncio.wait_for(driving, 5) == 3


def test_a_taken_id_leaves_the_stored_run_unwritten_and_its_handler_failed() -> None:
    """A create refused for a taken id, on a store called from a thread, stored nothing: the run's failure is
    not written on the other run's records (the lease refused it, but that write was still under way when the
    caller's loop closed, and its cancellation took the handler's place: 'Future exception was never
    retrieved ... CancelledError' when the handler was collected), and the handler fails with RunExistsError."""
    server = fakeredis.FakeServer()

    async def first() -> object:
        return await Gated(checkpointer=RedisCheckpointer(fakeredis.FakeRedis(server=server))).run(
            run_id="taken", value=1
        )

    assert asyncio.run(first()) == 3
    checkpointer = RedisCheckpointer(fakeredis.FakeRedis(server=server))
    written: list[str] = []
    for name in ("append", "append_many", "release"):
        original = getattr(checkpointer, name)

        def spy(*args: object, _original: Callable[..., object] = original, _name: str = name) -> object:
            written.append(_name)
            time.sleep(0.3)  # still under way when the caller's loop closes
            return _original(*args)

        setattr(checkpointer, name, spy)

    async def again() -> WorkflowHandler:
        handler = Gated(checkpointer=checkpointer).run(run_id="taken", value=5)
        with pytest.raises(RunExistsError):
            await handler.claimed()
        await asyncio.sleep(0.45)  # a write of the failure would have reached the store by now
        return handler

    handler = asyncio.run(again())
    checkpointer.close()
    assert written == []
    assert handler.done() and isinstance(handler.exception(), RunExistsError)


def test_a_failure_record_cut_off_by_the_loop_closing_leaves_the_handler_cancelled() -> None:
    """A run failed and the record of its failure was still being written when the caller's loop closed (the
    program ended without awaiting the handler): the write's cancellation cancels the handler, instead of
    being set as its exception, which asyncio logged as 'Future exception was never retrieved' at exit."""
    slow = threading.Event()

    class Fails(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            slow.set()
            raise RuntimeError("boom")

    checkpointer = RedisCheckpointer(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    original = checkpointer.append

    def append(*args: Any, **kwargs: Any) -> None:
        if slow.is_set():
            time.sleep(0.5)  # the failure's record: still under way when the loop closes
        original(*args, **kwargs)

    checkpointer.append = append  # type: ignore[method-assign]

    async def main() -> WorkflowHandler:
        handler = Fails(checkpointer=checkpointer).run(run_id="fails")
        await handler.claimed()
        await asyncio.sleep(0.2)
        return handler

    handler = asyncio.run(main())
    time.sleep(0.5)
    checkpointer.close()
    assert handler.cancelled(), handler.exception()


def test_a_claim_refused_by_a_store_that_is_down_is_told_once() -> None:
    """``claimed()`` raised StoreUnavailableError and the caller handled it: the run's own future held the same
    error, and asyncio logged it at exit as 'Future exception was never retrieved' with a 40-line traceback
    (``durableflow run`` on a Redis that is down, one run in four)."""
    logged: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: logged.append(context))
        handler = Gated(checkpointer=RedisCheckpointer("redis://127.0.0.1:1/0")).run(value=1)
        with pytest.raises(StoreUnavailableError):
            await handler.claimed()
        await asyncio.sleep(0.2)  # the run's future has failed by now
        assert handler.done()
        del handler
        gc.collect()  # where asyncio reports an exception nobody retrieved

    asyncio.run(main())
    assert logged == []
