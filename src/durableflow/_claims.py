"""Claiming a stored run for this process: its lease and its records, then a runner to drive it.

On an inline store (memory, SQLite) a claim is made on the spot, so ``wf.resume()``
and ``wf.run(ctx=restored)`` raise its errors themselves. On any other store (Redis,
PostgreSQL, a user's) the claim's store calls are made in the store's I/O thread and
the handler is returned at once: a store that is slow or frozen at a claim delays only
the run being claimed, never the event loop. Its errors then come from
``await handler.claimed()``, and from awaiting the handler or reading its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _snapshot
from ._checkpointer import Checkpointer, Record, new_owner, owner_is_dead, retire_owner
from ._clock import get_clock
from ._context import Context
from ._errors import DurableflowError, RunExistsError, RunLeaseError, RunNotFoundError
from ._events import StartEvent, run_result
from ._framing import record_key
from ._handler import WorkflowHandler
from ._integrity import check_info
from ._runner import Runner
from ._runstate import RunState
from ._storeio import is_inline, store_io

if TYPE_CHECKING:
    from ._workflow import Workflow

LEASE_POLL = 0.2
"""Seconds between tries of ``resume(run_id, wait=...)`` while another worker holds the run."""


@dataclass(frozen=True)
class Lease:
    """A lease this process acquired: when it asked, on the run's clock and on the loop's."""

    owner: str
    at: float
    on_loop: float
    released: bool = False
    """The run's last owner had given it up (handed back, or let go after a failure it could not write): it
    was alive then, so whatever step was under way did not kill its process."""


# -- the store calls of a claim (made on the loop or in the store's thread) ---------------------------


def acquire(checkpointer: Checkpointer, run_id: str, owner: str, loop: asyncio.AbstractEventLoop) -> Lease:
    """Lease the run to ``owner``, taking it from an engine of this machine that died without releasing it."""
    released = checkpointer.info(run_id).lease_owner is None
    lease = Lease(owner, get_clock().now(), loop.time(), released)
    try:
        checkpointer.acquire(run_id, owner)
    except RunLeaseError as exc:
        if not owner_is_dead(exc.holder):
            raise
        checkpointer.acquire(run_id, owner, steal_from=exc.holder)
        return Lease(owner, lease.at, lease.on_loop)
    return lease


def acquire_and_load(
    checkpointer: Checkpointer, run_id: str, owner: str, loop: asyncio.AbstractEventLoop
) -> tuple[Lease, list[Record]]:
    """The lease, then the run's records (which no other worker appends to while this one holds it)."""
    lease = acquire(checkpointer, run_id, owner, loop)
    try:
        return lease, checkpointer.load(run_id)
    except Exception:
        with contextlib.suppress(DurableflowError):
            checkpointer.release(run_id, owner)
        raise


def adopt(checkpointer: Checkpointer, ctx: Context[Any], owner: str, loop: asyncio.AbstractEventLoop) -> Lease | None:
    """Lease the stored run a restored context continues; ``None`` if the store does not hold it.

    The context's state becomes the run's newest checkpoint, superseding any the
    store took after ``to_dict``. A completed run is left as it is (``RunExistsError``).
    """
    run_id = ctx.run_id
    try:
        checkpointer.info(run_id)
    except RunNotFoundError:
        return None
    lease = acquire(checkpointer, run_id, owner, loop)
    try:
        info = check_info(checkpointer.info(run_id), run_id)  # under the lease: no other worker appends now
        if info.status == "completed" or info.workflow != ctx._workflow_name:
            raise RunExistsError(run_id)
    except BaseException:
        with contextlib.suppress(DurableflowError):
            checkpointer.release(run_id, owner)
        raise
    ctx._state.seq = info.last_seq
    ctx._state.written = {}  # the first record writes every run-level field, the status among them
    return lease


def release(checkpointer: Checkpointer, run_id: str, owner: str) -> None:
    """Stop driving the run here and give its lease up, without waiting for the store (nor failing: the
    lease expires on its own)."""
    retire_owner(owner)

    def give_up() -> None:
        with contextlib.suppress(DurableflowError):
            checkpointer.release(run_id, owner)

    io = store_io(checkpointer)
    if io.inline:
        give_up()
        return
    pending = io.call(asyncio.get_running_loop(), give_up, batch=False)
    if pending is not None:
        pending.add_done_callback(lambda done: done.cancelled() or done.exception())


async def released(checkpointer: Checkpointer, run_id: str, owner: str) -> None:
    """Give the lease up and wait until the store has it back (or failed to: it expires on its own)."""
    retire_owner(owner)
    with contextlib.suppress(DurableflowError):
        await store_io(checkpointer).ask(asyncio.get_running_loop(), lambda: checkpointer.release(run_id, owner))


# -- claims ------------------------------------------------------------------------------------------


def resume(workflow: Workflow, checkpointer: Checkpointer, run_id: str, wait: float) -> WorkflowHandler:
    """``wf.resume(run_id, wait=...)``: claim the stored run and drive it (a completed one just answers)."""
    loop = asyncio.get_running_loop()
    owner = new_owner()
    if not is_inline(checkpointer):
        return later(run_id, lambda handler: _resume_later(workflow, handler, owner, loop.time() + wait, False), owner)
    try:
        lease, records = acquire_and_load(checkpointer, run_id, owner, loop)
    except RunLeaseError:
        if wait <= 0:
            retire_owner(owner)
            raise
        return later(run_id, lambda handler: _resume_later(workflow, handler, owner, loop.time() + wait, True), owner)
    except BaseException:
        retire_owner(owner)
        raise
    return drive_loaded(workflow, run_id, lease, records, loop.create_future())


def continue_restored(
    workflow: Workflow, checkpointer: Checkpointer, ctx: Context[Any], turn: asyncio.Future[None] | None = None
) -> WorkflowHandler:
    """``wf.run(ctx=restored)``: continue the run a restored context holds, under its stored lease if the
    store holds it, as a new stored run otherwise; once ``turn`` is done if given (``num_concurrent_runs``)."""
    loop = asyncio.get_running_loop()
    owner = new_owner()
    if turn is None and is_inline(checkpointer):
        return drive_restored(workflow, checkpointer, ctx, adopt(checkpointer, ctx, owner, loop), owner, None)

    async def claim(handler: WorkflowHandler) -> None:
        if turn is not None:
            await turn
        lease = await store_io(checkpointer).ask(loop, lambda: adopt(checkpointer, ctx, owner, loop))
        started = drive_restored(workflow, checkpointer, ctx, lease, owner, handler._future)
        assert started._runner is not None
        handler._attach(started._runner)

    return later(ctx.run_id, claim, owner)


def later(
    run_id: str, claim: Callable[[WorkflowHandler], Coroutine[Any, Any, None]], owner: str | None = None
) -> WorkflowHandler:
    """A handler returned at once, whose run starts once ``claim(handler)`` has claimed it (off the loop);
    what the claim raised fails the handler (``handler.cancel()`` stops it)."""
    loop = asyncio.get_running_loop()
    handler = WorkflowHandler(run_id, loop.create_future())

    async def claiming() -> None:
        try:
            await claim(handler)
        except asyncio.CancelledError:  # handler.cancel() while claiming: the run is left as it is
            if owner is not None:
                retire_owner(owner)
            raise
        except BaseException as exc:
            if owner is not None:
                retire_owner(owner)
            handler._never_started(exc)

    task = loop.create_task(claiming())
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    handler._waiting = task
    return handler


async def _resume_later(
    workflow: Workflow, handler: WorkflowHandler, owner: str, give_up_at: float, polled: bool
) -> None:
    """Claim the run through the store's I/O, trying again while another worker holds it until ``give_up_at``."""
    checkpointer = workflow.checkpointer
    assert checkpointer is not None
    loop, io, run_id = asyncio.get_running_loop(), store_io(checkpointer), handler.run_id
    try:
        while True:
            if polled:
                await asyncio.sleep(LEASE_POLL)
            polled = True
            try:
                lease, records = await io.ask(loop, lambda: acquire_and_load(checkpointer, run_id, owner, loop))
                break
            except RunLeaseError:
                if loop.time() >= give_up_at:
                    raise
    except asyncio.CancelledError:  # the acquire may be under way in the store's thread: give it up again
        release(checkpointer, run_id, owner)
        raise
    try:
        ctx = replayed(workflow, checkpointer, run_id, records)
    except Exception:  # the lease is given up before the handler tells why: a retry finds the run free
        await released(checkpointer, run_id, owner)
        raise
    except BaseException:  # a crash: the process is deemed dead, so nothing more is written
        retire_owner(owner)
        raise
    if ctx._state.status == "completed":
        await released(checkpointer, run_id, owner)
        assert ctx._state.result is not None
        handler._ctx = ctx
        handler._future.set_result(run_result(ctx._state.result))
        handler._mark_started()
        return
    started = drive_loaded(workflow, run_id, lease, records, handler._future, ctx)
    assert started._runner is not None
    handler._first_start = started._first_start
    handler._attach(started._runner)


async def submit(workflow: Workflow, checkpointer: Checkpointer, start: StartEvent, run_id: str) -> str:
    """``wf.submit()``: store the new run with its start event under a lease, then give the lease up at once,
    so that a worker takes the run (``RunExistsError`` if ``run_id`` is taken)."""
    ctx: Context[Any] = Context(workflow)
    ctx._state = RunState(run_id)
    owner = new_owner()
    runner = Runner(workflow, ctx, checkpointer, owner, submitted=True)
    runner.future.add_done_callback(lambda done: done.cancelled() or done.exception())  # claimed tells
    runner.start(start)
    await asyncio.shield(runner.claimed)
    await released(checkpointer, run_id, owner)
    return run_id


# -- driving what was claimed ---------------------------------------------------------------------------


def replayed(workflow: Workflow, checkpointer: Checkpointer, run_id: str, records: list[Record]) -> Context[Any]:
    """The run's context, rebuilt from its records (``SnapshotError`` if they do not fit this code)."""
    return Context._restore(workflow, _snapshot.replay(records, run_id, record_key(checkpointer)))


def drive_loaded(
    workflow: Workflow,
    run_id: str,
    lease: Lease,
    records: list[Record],
    future: asyncio.Future[Any],
    ctx: Context[Any] | None = None,
) -> WorkflowHandler:
    """Rebuild the leased run from its records (unless ``ctx`` is that already) and drive it, or answer at
    once if it had completed."""
    checkpointer = workflow.checkpointer
    assert checkpointer is not None
    try:
        if ctx is None:
            ctx = replayed(workflow, checkpointer, run_id, records)
        if ctx._state.status == "completed":
            release(checkpointer, run_id, lease.owner)
            assert ctx._state.result is not None
            future.set_result(run_result(ctx._state.result))
            return WorkflowHandler(run_id, future, ctx)
        # what the deltas since the last full snapshot weigh: the next checkpoint may fold them into one
        since_full = sum(len(record.data) for record in records[1:])
        runner = Runner(workflow, ctx, checkpointer, lease.owner, stored=True, future=future, since_full=since_full)
        assert runner.durable is not None
        runner.durable.leased(lease.at, lease.on_loop)
        runner.released = lease.released
        handler = WorkflowHandler(run_id, future, ctx)
        handler._first_start = ctx._state.status == "running" and ctx._state.recoveries < 0  # wf.submit()'s run
        handler._attach(runner)
        runner.start(None)
        return handler
    except Exception:
        release(checkpointer, run_id, lease.owner)
        raise
    except BaseException:  # a crash: the process is deemed dead, so nothing more is written
        retire_owner(lease.owner)
        raise


def drive_restored(
    workflow: Workflow,
    checkpointer: Checkpointer,
    ctx: Context[Any],
    lease: Lease | None,
    owner: str,
    future: asyncio.Future[Any] | None,
) -> WorkflowHandler:
    """Drive the restored context: under ``lease`` if the store held its run, as a new stored run if not."""
    stored = lease is not None
    runner = Runner(workflow, ctx, checkpointer, owner, stored=stored, rebase=stored, future=future)
    if lease is not None:
        assert runner.durable is not None
        runner.durable.leased(lease.at, lease.on_loop)
    handler = WorkflowHandler(ctx.run_id, runner.future, ctx)
    handler._attach(runner)
    try:
        runner.start(None)
    except Exception:
        if stored:
            release(checkpointer, ctx.run_id, owner)
        raise
    return handler
