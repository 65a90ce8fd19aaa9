"""A claim that fails after its lease was acquired gives the lease back: a worker on another machine, which cannot
tell that this one gave up, would otherwise wait out the whole lease before it could take the run."""

from __future__ import annotations

import asyncio

import pytest

from durableflow import (
    Context,
    MemoryCheckpointer,
    Record,
    SnapshotError,
    StartEvent,
    StopEvent,
    StoreUnavailableError,
    Workflow,
    step,
)

from .crashing import Crash
from .workflows import Gated


class DyingGate:
    """A gate at which the process dies."""

    async def wait(self) -> None:
        raise Crash("killed at the gate")


class BlipOnLoad(MemoryCheckpointer):
    """Loses its connection once, on the first load after ``blip`` is set (between a claim's acquire and load)."""

    blip = False

    def load(self, run_id: str) -> list[Record]:
        if self.blip:
            self.blip = False
            raise StoreUnavailableError("connection reset while loading")
        return super().load(run_id)


class ThreadedBlipOnLoad(BlipOnLoad):
    """The same store, called from the engine's store thread (as Redis, PostgreSQL and one's own are)."""

    inline = False


@pytest.mark.parametrize("kind", [BlipOnLoad, ThreadedBlipOnLoad], ids=["inline", "threaded"])
async def test_a_resume_whose_load_fails_gives_the_lease_back(kind: type[BlipOnLoad]) -> None:
    """resume() acquires the run's lease, then the load fails (StoreUnavailableError): the resume raises it, and
    the run is left unleased, listed as interrupted, so another machine's worker can take it at once."""
    store = kind(lease_ttl=3600)
    with pytest.raises(Crash):
        await Gated(gate=DyingGate(), checkpointer=store).run(run_id="blip", value=1)  # type: ignore[arg-type]
    store.blip = True
    with pytest.raises(StoreUnavailableError, match="connection reset"):
        await asyncio.wait_for(Gated(checkpointer=store).resume("blip"), 5)
    info = store.info("blip")
    assert (info.status, info.lease_owner) == ("interrupted", None)
    assert await asyncio.wait_for(Gated(checkpointer=store).resume("blip"), 5) == 3


class Reshaped(Workflow):
    """A new version of Gated under its name, whose steps differ: a run stored by Gated does not replay in it."""

    @step
    async def only(self, ev: StartEvent, ctx: Context) -> StopEvent:
        return StopEvent(result=ev.value)


@pytest.mark.parametrize("kind", [BlipOnLoad, ThreadedBlipOnLoad], ids=["inline", "threaded"])
async def test_a_resume_whose_records_do_not_fit_the_code_gives_the_lease_back(kind: type[BlipOnLoad]) -> None:
    """A deploy whose steps differ resumes a run stored by the old code: SnapshotError, and the lease is given back,
    so the fixed deploy (on any machine) resumes the run at once."""
    store = kind(lease_ttl=3600)
    with pytest.raises(Crash):
        await Gated(gate=DyingGate(), checkpointer=store).run(run_id="old", value=1)  # type: ignore[arg-type]
    with pytest.raises(SnapshotError):
        await asyncio.wait_for(Reshaped(checkpointer=store, workflow_name="Gated").resume("old"), 5)
    info = store.info("old")
    assert (info.status, info.lease_owner) == ("interrupted", None)
    assert await asyncio.wait_for(Gated(checkpointer=store).resume("old"), 5) == 3
