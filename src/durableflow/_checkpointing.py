"""A run's checkpoints and lease: deciding between a delta and a full snapshot, writing it, renewing the lease.

The run loop (``_runner``) says when a checkpoint is due; this module decides
what goes into it and hands it to the checkpointer, and keeps the run's lease
alive between checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast, final

from . import _crashpoints
from ._checkpointer import TERMINAL, Checkpointer, Record, RunStatus
from ._errors import DurableflowError
from ._events import StopEvent
from ._hooks import plugin_manager
from ._snapshot import encode_delta, encode_full, encode_status, error_text, frame

if TYPE_CHECKING:
    from ._context import Context

_COMPACT_AFTER = 64 * 1024
"""Deltas are folded into a full snapshot once they outgrow max(this, 2x the last full one)."""


@final
class RunCheckpoints:
    """Writes one run's checkpoints to its checkpointer, under the lease ``owner`` holds."""

    def __init__(self, ctx: Context[Any], checkpointer: Checkpointer, owner: str, stored: bool, rebase: bool) -> None:
        self.ctx = ctx
        self.run = ctx._state
        self.graph = ctx._graph
        self.checkpointer = checkpointer
        self.owner = owner
        self.stored = stored  # the checkpointer already holds this run
        self.rebase = rebase  # the next record must be full: the store's last one is not this state's base
        self.full_size = 0
        self.since_full = 0

    def write(self, at: str, status_only: bool = False) -> None:
        """Write what changed since the last checkpoint (or a full snapshot) in one atomic record.

        ``status_only`` writes just the run's status and error, leaving out changes
        that must not become durable: those of a completion whose own checkpoint failed.
        """
        if status_only and not self.stored:
            return
        checkpointer = self.checkpointer
        listener = _crashpoints.listener
        if listener is not None:
            listener("checkpoint.write.before")
        run = self.run
        seq = run.seq + 1
        full = not status_only and (
            not self.stored or self.rebase or self.since_full >= max(_COMPACT_AFTER, 2 * self.full_size)
        )
        if status_only:
            body = encode_status(run, seq, at)
        else:
            body = (encode_full if full else encode_delta)(run, self.ctx.store, self.graph, seq, at)
        record = Record(seq, full, frame(body, run.run_id, seq))
        if not self.stored:
            checkpointer.create(run.run_id, self.graph.workflow_path, record, self.owner)
            self.stored = True
        elif run.status != run.written.get("status"):
            status = cast(RunStatus, run.status)  # a stored run has left "new": its status is a RunStatus
            checkpointer.append(run.run_id, record, self.owner, status, self._result_json(), error_text(run.error))
        else:
            checkpointer.append(run.run_id, record, self.owner)
        run.seq = seq
        if status_only:
            run.note_written()
        else:
            run.reset_journal()
            self.ctx.store.dirty.clear()
        if full:
            self.full_size, self.since_full, self.rebase = len(body), 0, False
        else:
            self.since_full += len(body)
        if listener is not None:
            listener("checkpoint.write.after")
        if plugin_manager.active:
            plugin_manager.hook.durableflow_checkpoint_written(run_id=run.run_id, seq=seq, full=full)

    def _result_json(self) -> str | None:
        result = self.run.result
        if result is None:
            return None
        if type(result) is StopEvent:
            return json.dumps(result.model_dump(mode="json").get("result"))
        return result.model_dump_json()

    # -- the lease -------------------------------------------------------------------------

    def keep_lease(
        self,
        loop: asyncio.AbstractEventLoop,
        guarded: Callable[[Callable[[], None]], Callable[[], None]],
        lost: Callable[[], None],
    ) -> Callable[[], None]:
        """Renew the lease every third of its time to live until the returned callable is called;
        ``lost()`` when another worker has it. ``guarded`` wraps each timer callback."""
        handle: asyncio.TimerHandle | None = None

        def renew() -> None:
            nonlocal handle
            try:
                held = self.checkpointer.renew(self.run.run_id, self.owner)
            except DurableflowError:
                held = True  # the store is down: the next checkpoint will say so
            if not held:
                lost()
                return
            handle = loop.call_later(self.checkpointer.lease_ttl / 3, guarded(renew))

        def stop() -> None:
            if handle is not None:
                handle.cancel()

        handle = loop.call_later(self.checkpointer.lease_ttl / 3, guarded(renew))
        return stop

    def release(self) -> None:
        """Give the lease up as the run stops here (a final status written with the last checkpoint already did)."""
        if self.stored and self.run.written.get("status") not in TERMINAL:
            with contextlib.suppress(DurableflowError):  # the lease expires on its own
                self.checkpointer.release(self.run.run_id, self.owner)
