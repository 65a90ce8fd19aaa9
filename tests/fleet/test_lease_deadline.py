"""A worker cut off from its store stops driving its runs before their leases lapse: no step runs on, no effect
calls out, nothing more is written, so the worker that takes a run over after the store comes back is its only
driver. Shown on a real redis-server and a real PostgreSQL backend, each frozen with SIGSTOP."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from durableflow import (
    Checkpointer,
    Context,
    LeaseExpiredError,
    PostgresCheckpointer,
    RedisCheckpointer,
    RunLeaseError,
    StartEvent,
    StopEvent,
    Workflow,
    hookimpl,
    plugin_manager,
    step,
)

from .servers import RedisServer

LEASE = 1.0
FREEZE = 3.0


class LongStep(Workflow):
    """One step that works until told to finish; notes when it began and when it was cancelled."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.began = asyncio.Event()
        self.finish = asyncio.Event()
        self.cancelled_at: float | None = None

    @step
    async def work(self, ev: StartEvent, ctx: Context) -> StopEvent:
        self.began.set()
        try:
            await self.finish.wait()
        except asyncio.CancelledError:
            self.cancelled_at = time.time()
            raise
        return StopEvent(result=ev.n * 2)


class LeaseEnds:
    """A plugin noting each lease this process stopped holding: (run id, reason, when)."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str, float]] = []

    @hookimpl
    def durableflow_lease_ended(self, run_id: str, reason: str) -> None:
        self.ended.append((run_id, reason, time.time()))


@pytest.fixture
def lease_ends() -> Iterator[LeaseEnds]:
    plugin = LeaseEnds()
    plugin_manager.register(plugin)
    try:
        yield plugin
    finally:
        plugin_manager.unregister(plugin)


def frozen_for(seconds: float, freeze: Callable[[float], None]) -> threading.Thread:
    thread = threading.Thread(target=freeze, args=(seconds,))
    thread.start()
    return thread


async def stops_before_its_lease_lapses(
    store: Checkpointer, reopen: Callable[[], Checkpointer], freeze: Callable[[float], None], lease_ends: LeaseEnds
) -> None:
    """The scenario both stores share: a run mid-step, its store frozen for three times the lease."""
    workflow = LongStep(checkpointer=store)
    handler = workflow.run(run_id="frozen", n=21)
    await asyncio.wait_for(workflow.began.wait(), 10)
    await asyncio.sleep(0.2)  # the first checkpoint is durable and a renewal or so went through
    written = store.info("frozen").last_seq
    thaw = frozen_for(FREEZE, freeze)
    frozen_at = time.time()
    with pytest.raises(LeaseExpiredError, match="could not renew its lease on run 'frozen'") as raised:
        await asyncio.wait_for(handler, FREEZE + 10)
    stopped_at = time.time()
    assert stopped_at - frozen_at < FREEZE - 0.5, "the run went on while the store was frozen"
    assert workflow.cancelled_at is not None and workflow.cancelled_at < stopped_at + 0.1  # the step did not run on
    assert isinstance(raised.value, RunLeaseError) and raised.value.unanswered >= LEASE * 0.5
    assert [(run_id, reason) for run_id, reason, _ in lease_ends.ended] == [("frozen", "expired")]
    await asyncio.to_thread(thaw.join)

    info = store.info("frozen")
    assert info.last_seq == written  # nothing was written after the freeze
    assert info.lease_expires_at is not None and stopped_at < info.lease_expires_at  # stopped before it lapsed
    assert info.status == "interrupted"  # its owner stopped: another worker may take it at once
    again = LongStep(checkpointer=reopen())
    again.finish.set()
    assert await asyncio.wait_for(again.resume("frozen"), 10) == 42


async def test_a_run_whose_redis_freezes_past_its_lease_stops_before_the_lease_lapses(
    redis_server: RedisServer, lease_ends: LeaseEnds
) -> None:
    """redis-server SIGSTOPped for three leases, with a client timeout longer than that: the run stops within
    the lease, cancelling its step, writes nothing more, and says so in its error and hooks; after the thaw
    another worker resumes it from its last checkpoint."""
    store = RedisCheckpointer(redis_server.url, lease_ttl=LEASE, socket_timeout=FREEZE + 5)
    second = RedisCheckpointer(redis_server.url, lease_ttl=LEASE)
    try:
        await stops_before_its_lease_lapses(store, lambda: second, redis_server.freeze, lease_ends)
    finally:
        store.close()
        second.close()


def _freeze_backend(pid: int) -> Callable[[float], None]:
    def freeze(seconds: float) -> None:
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    return freeze


async def test_a_run_whose_postgres_backend_freezes_past_its_lease_stops_before_the_lease_lapses(
    postgres_url: str, lease_ends: LeaseEnds
) -> None:
    """The PostgreSQL backend serving the run's connection SIGSTOPped for three leases, with a statement
    timeout longer than that: the run stops within the lease, as on Redis."""
    store = PostgresCheckpointer(postgres_url, lease_ttl=LEASE, timeout=FREEZE + 5)
    second = PostgresCheckpointer(postgres_url, lease_ttl=LEASE)
    try:
        store.runs(limit=1)  # connect, so that its backend can be frozen
        assert store._conn is not None
        freeze = _freeze_backend(store._conn.info.backend_pid)
        await stops_before_its_lease_lapses(store, lambda: second, freeze, lease_ends)
    finally:
        store.close()
        second.close()


class ChargeAfterAStall(Workflow):
    """A step that holds the event loop (a long computation, a paused process), then charges through an effect."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.go = asyncio.Event()
        self.charges: list[str] = []

    @step
    async def pay(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await self.go.wait()
        time.sleep(LEASE * 1.2)  # the loop stands still: the renewals due meanwhile cannot be made
        receipt = await ctx.effect("charge", self.charge)
        return StopEvent(result=receipt)

    def charge(self, idempotency_key: str) -> str:
        self.charges.append(idempotency_key)
        return "receipt"


async def test_an_effect_is_refused_once_the_lease_is_in_doubt(
    redis_server: RedisServer, lease_ends: LeaseEnds
) -> None:
    """A step that held the loop past its lease's safety margin while Redis was frozen reaches an effect: the
    effect does not call out (another worker may own the run by now); the run stops with LeaseExpiredError."""
    store = RedisCheckpointer(redis_server.url, lease_ttl=LEASE, socket_timeout=FREEZE + 5)
    try:
        workflow = ChargeAfterAStall(checkpointer=store)
        handler = workflow.run(run_id="stalled")
        await asyncio.wait_for(handler.claimed(), 10)  # stored: its first checkpoint is durable, its step at its gate
        thaw = frozen_for(FREEZE, redis_server.freeze)
        await asyncio.sleep(0.1)
        workflow.go.set()
        with pytest.raises(LeaseExpiredError):
            await asyncio.wait_for(handler, FREEZE + 10)
        assert workflow.charges == []
        assert [reason for _, reason, _ in lease_ends.ended] == ["expired"]
        await asyncio.to_thread(thaw.join)
        assert store.info("stalled").status == "interrupted"
    finally:
        store.close()
