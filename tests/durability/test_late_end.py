"""The record that ends a run timed out on the client and landed later: the run is reported completed, as stored.

That record also releases the lease, so the engine's next write (the failure it would record) is refused for
the lease rather than for its sequence number; the engine reloads the run, finds its own end, and reports it.
Both stores are driven deterministically: the timed-out write has landed before the engine writes again."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from durableflow import PostgresCheckpointer, Record, StoreUnavailableError, hookimpl, plugin_manager

from .crashing import settle
from .test_late_writes import AfterTheStall
from .workflows import Gated


class Finished:
    """Notes how each run ended, as the run_finished hook says."""

    def __init__(self) -> None:
        self.statuses: list[str] = []

    @hookimpl
    def durableflow_run_finished(self, run_id: str, workflow: Any, status: str, result: Any, error: Any) -> None:
        self.statuses.append(status)


async def ends_completed(store: Any, hold: Callable[[], AbstractContextManager[None]], timed_out: list[int]) -> None:
    """Run ``Gated`` to its last step; hold the store while that step's completion (the run's end) is written."""
    finished = Finished()
    plugin_manager.register(finished)
    try:
        gate = asyncio.Event()
        workflow = Gated(gate=gate, checkpointer=store)
        handler = workflow.run(run_id="late-end", value=5)
        await settle(lambda: workflow.at_gate == 1)
        end = store.info("late-end").last_seq + 1  # the record that ends the run
        with hold():
            gate.set()
            await settle(lambda: timed_out == [end], timeout=10)
        assert await asyncio.wait_for(handler, 10) == 11
        assert finished.statuses == ["completed"]
        info = store.info("late-end")
        assert (info.status, info.last_seq, info.lease_owner) == ("completed", end, None)  # nothing after the end
    finally:
        plugin_manager.unregister(finished)


async def test_an_end_that_landed_after_its_redis_timeout_is_reported_completed(
    redis_url: str, stalled_redis: Callable[[float], AbstractContextManager[None]]
) -> None:
    """A real redis-server held busy while the run's last record is written: the client gives up, Redis stores
    the record (completed, lease released) once the stall ends, and the run reports the completion."""
    stall_over = threading.Event()
    store = AfterTheStall(redis_url, prefix=f"late-{uuid.uuid4().hex[:8]}", socket_timeout=0.2, stall_over=stall_over)

    class Stall(AbstractContextManager[None]):
        def __init__(self) -> None:
            self.held = stalled_redis(1.0)

        def __enter__(self) -> None:
            self.held.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.held.__exit__(*exc)
            stall_over.set()

    try:
        await ends_completed(store, Stall, store.timed_out)
    finally:
        store.close()


class AfterTheLock(PostgresCheckpointer):
    """A PostgreSQL checkpointer whose timed-out append returns only once the server has committed it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock_gone = threading.Event()
        self.timed_out: list[int] = []

    def append(self, run_id: str, record: Record, owner: str, *args: Any, **kwargs: Any) -> None:
        try:
            super().append(run_id, record, owner, *args, **kwargs)
        except StoreUnavailableError:
            self.timed_out.append(record.seq)
            self.lock_gone.wait(10)
            give_up = time.monotonic() + 10
            while self.info(run_id).last_seq < record.seq and time.monotonic() < give_up:
                time.sleep(0.01)
            raise


async def test_an_end_that_landed_after_its_postgres_timeout_is_reported_completed(postgres_url: str) -> None:
    """Another transaction locks the run's row while its last record is written: the client gives up after its
    timeout, the server commits the record once the lock goes, and the run reports the completion."""
    store = AfterTheLock(postgres_url, timeout=1.0)

    class Locked(AbstractContextManager[None]):
        def __enter__(self) -> None:
            self.blocker = psycopg.connect(postgres_url)
            self.blocker.execute("SELECT 1 FROM durableflow.runs WHERE run_id = 'late-end' FOR UPDATE")

        def __exit__(self, *exc: object) -> None:
            self.blocker.close()  # the lock goes: the held append commits
            store.lock_gone.set()

    try:
        await ends_completed(store, Locked, store.timed_out)
    finally:
        store.close()
