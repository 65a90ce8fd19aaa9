"""A run is this process's once its claim is settled: ``handler.claimed()`` tells a taken run id, a missing run
or a run another worker drives apart from a run that failed later, on every store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from durableflow import RunExistsError, RunLeaseError, RunNotFoundError, WorkflowRuntimeError

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
