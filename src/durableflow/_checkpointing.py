"""A run's checkpoints and lease: deciding between a delta and a full snapshot, writing it, renewing the lease.

The run loop (``_runner``) says when a checkpoint is due; this module decides
what goes into it and hands it to the store-I/O layer (``_storeio``), which
writes it at once or returns something to await. The record is encoded, and
the run's change journal reset, when the checkpoint is asked for: changes made
while it is being written go into the next one. A write that fails makes the
next record a full snapshot, so nothing that was only in the failed one is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, cast, final

from pydantic_core import to_jsonable_python

from . import _crashpoints
from ._checkpointer import TERMINAL, Append, Checkpointer, Record, RunStatus
from ._encoding import encode_delta, encode_full, encode_status
from ._errors import DurableflowError, RunConflictError, RunLeaseError, StoreUnavailableError
from ._events import StopEvent
from ._framing import record_key, run_digest, seal_with
from ._hooks import plugin_manager
from ._lease import LeaseHolder
from ._snapshot import error_text
from ._storeio import store_io

if TYPE_CHECKING:
    from ._context import Context
    from ._storeio import _Op

COMPACT_AFTER = 16 * 1024
"""Deltas are folded into a full snapshot once they hold this many bytes (and twice the state's)."""
RESUME_FOLD = 1024
"""A resumed run folds its deltas at its first checkpoint once they hold this many bytes and half the state's:
each delta costs a resume far more than its bytes (it is unsealed, parsed and checked on its own), while
rewriting a state that was just read whole is cheap unless the state is large."""
_new = object.__new__


def new_record(seq: int, full: bool, data: bytes) -> Record:
    """``Record(seq, full, data)`` in a fifth of the time: a frozen dataclass sets each field through
    ``object.__setattr__``, and every checkpoint makes one."""
    record = _new(Record)
    fields = record.__dict__
    fields["seq"], fields["full"], fields["data"] = seq, full, data
    return record


@final
class RunCheckpoints(LeaseHolder):
    """Writes one run's checkpoints to its checkpointer, under the lease ``owner`` holds."""

    # Defaults of what most runs never change, kept on the class: each run's instance sets only what it must.
    full_size = 0
    """Bytes of the last full snapshot this run wrote: besides the state, its pending events and buffers."""
    durable_status: str | None = None  # the status the store holds, as far as this run knows
    uncertain: Record | None = None  # a record whose write failed unreachable: it may land later
    uncertain_status: RunStatus | None = None  # the status that record sets, if any
    attached = False
    in_flight = 0  # writes handed to the store's I/O and not done yet
    releasing = False  # the run stopped: release the lease once they are
    digest: hashlib.blake2b | None = None  # of the run id: made at the first write (which refuses one it cannot seal)

    def __init__(
        self,
        ctx: Context[Any],
        checkpointer: Checkpointer,
        owner: str,
        loop: asyncio.AbstractEventLoop,
        stored: bool,
        rebase: bool,
        since_full: int = 0,
    ) -> None:
        self.ctx = ctx
        self.run = ctx._state
        self.graph = ctx._graph
        self.checkpointer = checkpointer
        self.io = store_io(checkpointer)
        self.loop = loop
        self.owner = owner
        self.stored = stored  # the checkpointer holds this run (or its create is on its way)
        self.rebase = rebase  # the next record must be full: the store's last one is not this state's base
        self.since_full = since_full
        """Bytes of deltas written since the last full snapshot: what a resume replays."""
        self.resumed = stored and since_full > 0  # the state was just read whole: folding the deltas is cheap now
        if stored:
            self._sizes: dict[str, int] = {key: len(text) for key, text in ctx.store.values.items()}
            self.state_size = sum(self._sizes.values())
            """Bytes of the state's values, as last written: what a full snapshot would rewrite."""
        else:
            self._sizes, self.state_size = {}, 0
        self.key = record_key(checkpointer)  # records are sealed with a MAC under it, if there is one
        self.keyed = self.key is not None

    def attach(self) -> None:
        """The run starts writing through the store's I/O: with other runs, its checkpoints are grouped."""
        if not self.attached:
            self.attached = True
            self.io.active += 1

    def detach(self) -> None:
        if self.attached:
            self.attached = False
            self.io.active -= 1

    # -- writing ---------------------------------------------------------------------------

    def write(
        self, at: str, status_only: bool = False, batch: bool = True, wait: bool = False
    ) -> Awaitable[None] | None:
        """Write what changed since the last checkpoint (or a full snapshot) as one atomic record.

        Returns ``None`` once the record is durable, or an awaitable that is done
        when it is (and raises what the store raised). ``status_only`` writes just
        the run's status and error, leaving out changes that must not become durable:
        those of a completion whose own checkpoint failed. ``batch=False`` writes an
        inline store's record at once, even among other runs; ``wait=True`` returns only
        once the record is durable, on any store (blocking the loop on a threaded one).
        """
        creating = not self.stored
        if status_only and creating:
            return None
        listener = _crashpoints.listener
        if listener is not None:
            listener("checkpoint.write.before")
        run = self.run
        seq = run.seq + 1
        if status_only:
            full = False
            body = encode_status(run, seq, at)
        else:
            store = self.ctx.store
            full = creating or self.rebase or self._compaction_due()  # (the harness's compact=True replaces it)
            if full:
                body = encode_full(run, store, self.graph, seq, at, self.ctx._workflow_name)
                self._note_sizes(store.values, store.dirty, True)
            else:
                body = encode_delta(run, store, self.graph, seq, at)
                if store.dirty:
                    self._note_sizes(store.values, store.dirty, False)
        record = _new(Record)  # (new_record's, without its call)
        fields = record.__dict__
        fields["seq"], fields["full"] = seq, full
        fields["data"] = seal_with(self.digest or self._new_digest(), self.keyed, body, seq, run.run_id)
        written_before = run.written
        status: RunStatus | None = None
        result = error = None
        if run.status != written_before.get("status") and (not creating or run.status != "running"):
            status = run.status  # type: ignore[assignment]  # a stored run has left "new": its status is a RunStatus
            result, error = self._result_json(), error_text(run.error)
        # the record holds the journal now: what changes from here on goes into the next one
        run.seq = seq
        if status_only:
            run.note_written()
        else:
            run.reset_journal()
            store.dirty = ()  # a set again once a key changes
            if full:
                self.since_full, self.rebase, self.full_size = 0, False, len(body)
            else:
                self.since_full += len(body)
        io = self.io
        if not (creating or wait or self.uncertain is not None) and io.inline and not (batch and io.active > 1):
            # the common case, a lone run's checkpoint on a local store: written here, now
            try:
                io.append_now(run.run_id, record, self.owner, status, result, error)
            except Exception as exc:
                self._failed(exc, record, written_before, False, status)
                raise
            if status is not None or _crashpoints.listener is not None or plugin_manager.active:
                self._written(record, status)  # (nothing to do otherwise: no status, no one listening)
            return None
        checkpointer, uncertain = self.checkpointer, (self.uncertain, self.uncertain_status)
        try:
            if creating:
                self.stored = True
                workflow, owner = self.ctx._workflow_name, self.owner
                call: Callable[[], None] = lambda: checkpointer.create(run.run_id, workflow, record, owner)  # noqa: E731
                if run.status != "running":
                    call = self._create_with_status(call, at)
                pending = io.now(call) if wait else io.call(self.loop, call, batch=False)
            elif uncertain[0] is not None or wait:
                append = Append(run.run_id, record, self.owner, status, result, error)
                call = lambda: self._append_after(append, uncertain)  # noqa: E731
                pending = io.now(call) if wait else io.call(self.loop, call, batch=False)
            else:
                # the common queued write (the store's I/O queues it): awaited as it is, ``_landed`` doing what
                # ``_landing`` does
                self.in_flight += 1
                return io.queue_append(
                    self.loop, run.run_id, record, self.owner, status, result, error, _landed, self, written_before
                )
        except _EarlierRecordLanded:
            self._failed(None, record, written_before, creating)
            return self._after_landed(at, status_only, batch, wait)
        except Exception as exc:
            self._failed(exc, record, written_before, creating, status)
            raise
        if pending is None:
            self._written(record, status)
            return None
        self.in_flight += 1
        return self._landing(pending, record, status, written_before, (at, status_only, batch), creating)

    def _new_digest(self) -> hashlib.blake2b:
        self.digest = digest = run_digest(self.run.run_id, self.key)
        return digest

    def _create_with_status(self, create: Callable[[], None], at: str) -> Callable[[], None]:
        """``create`` followed by an empty delta that sets the stored status: a store creates every run as
        running, and a restored run that waits for input must not be listed (and picked up) as running."""
        run = self.run
        seq = run.seq + 1
        body = encode_status(run, seq, at)
        record = new_record(seq, False, seal_with(self.digest or self._new_digest(), self.keyed, body, seq, run.run_id))
        status, result, error = cast(RunStatus, run.status), self._result_json(), error_text(run.error)
        run.seq = seq
        checkpointer, owner = self.checkpointer, self.owner

        def create_then_status() -> None:
            create()
            checkpointer.append(run.run_id, record, owner, status, result, error)

        return create_then_status

    async def _landing(
        self,
        pending: asyncio.Future[Any],
        record: Record,
        status: RunStatus | None,
        written_before: dict[str, Any],
        again: tuple[str, bool, bool],
        creating: bool = False,
    ) -> None:
        try:
            try:
                await pending
            except _EarlierRecordLanded:
                self._failed(None, record, written_before, False)
                later = self._after_landed(*again, wait=False)
                if later is not None:
                    await later
                return
            except Exception as exc:
                # a create refused (its id taken) stored nothing: the run's failure is not written on the other
                # run's records; one that failed unreachable may have landed, and is treated as stored
                refused = creating and not isinstance(exc, StoreUnavailableError)
                self._failed(exc, record, written_before, refused, status)
                raise
            self._written(record, status)
        finally:
            self.in_flight -= 1
            if not self.in_flight and self.releasing:
                self._release()

    def landed(self, op: _Op, outcome: tuple[bool, Any], abandoned: bool) -> tuple[bool, Any]:
        """A queued append's outcome, noted before its waiter is told (``_landing`` without a coroutine and an
        awaitable for each waiting run: objects a burst of concurrent runs would keep for the collector).
        ``abandoned``: the waiter was cancelled (the engine died, or the run was dropped): nothing is noted."""
        ok, value = outcome
        try:
            if abandoned:
                pass
            elif ok:
                self._written(op.record, op.status)
            else:
                self._failed(value, op.record, op.since, False, op.status)
        except BaseException as exc:  # a crash point, after the write: the waiting step dies of it
            outcome = (False, exc)
        finally:
            self.in_flight -= 1
            if not self.in_flight and self.releasing:
                self._release()
        return outcome

    # -- a write that timed out and landed later -------------------------------------------

    def _append_after(self, append: Append, earlier: tuple[Record | None, RunStatus | None]) -> None:
        """``append``, made after a write whose outcome is unknown (it failed unreachable, and may have
        landed since). If the store refuses this record's number because that write did land,
        ``_EarlierRecordLanded``; if something else holds that number, the refusal stands.

        The store refuses it for its number (``RunConflictError``), or, when the earlier record ended
        the run and so released the lease, for the lease (``RunLeaseError``)."""
        a, checkpointer = append, self.checkpointer
        uncertain, status = earlier
        try:
            checkpointer.append(a.run_id, a.record, a.owner, a.status, a.result, a.error)
        except (RunConflictError, RunLeaseError) as exc:
            if uncertain is None or uncertain.seq != a.record.seq:
                raise
            if isinstance(exc, RunConflictError) and exc.expected_seq != uncertain.seq + 1:
                raise
            if isinstance(exc, RunLeaseError) and status not in TERMINAL:
                raise
            stored = [r for r in checkpointer.load(a.run_id) if r.seq == uncertain.seq]
            if stored and stored[0].data == uncertain.data:
                raise _EarlierRecordLanded from None
            raise  # another record took its place: this worker no longer knows the run, it stops

    def _after_landed(self, at: str, status_only: bool, batch: bool, wait: bool) -> Awaitable[None] | None:
        """The record an earlier write sent is durable after all: count it, and write this one after it;
        ``EndLanded`` instead if that record ended the run (nothing may follow it)."""
        landed, status = self.uncertain, self.uncertain_status
        assert landed is not None
        self.uncertain = self.uncertain_status = None
        self.run.seq = landed.seq
        if status in TERMINAL:
            self.durable_status = status
            raise EndLanded(status)
        return self.write(at, status_only, batch, wait)

    def end_in_doubt(self) -> bool:
        """Whether the record that ended the run failed unreachable, so that it may have landed, or may yet."""
        return self.uncertain is not None and self.uncertain_status in TERMINAL

    def _written(self, record: Record, status: RunStatus | None) -> None:
        if self.uncertain is not None:  # (set only when it is: most runs keep the class's None)
            self.uncertain = self.uncertain_status = None
        if status is not None:
            self.durable_status = status
        listener = _crashpoints.listener
        if listener is not None:
            listener("checkpoint.write.after")
        if plugin_manager.active:
            plugin_manager.hook.durableflow_checkpoint_written(run_id=self.run.run_id, seq=record.seq, full=record.full)

    def _failed(
        self,
        exc: Exception | None,
        record: Record,
        written_before: dict[str, Any],
        creating: bool,
        status: RunStatus | None = None,
    ) -> None:
        """The record is not durable (or not known to be): the next one starts over from a full snapshot."""
        run = self.run
        if run.seq >= record.seq:
            run.seq = record.seq - 1
        run.written = written_before
        self.rebase = True
        if creating:
            self.stored = False
        if isinstance(exc, StoreUnavailableError) and not creating:
            self.uncertain, self.uncertain_status = record, status

    def _compaction_due(self) -> bool:
        """Fold the deltas into a full snapshot once they weigh twice the state (or the last full snapshot,
        if that was heavier: many pending events): a resume then replays at most three times that, one
        large write is not rewritten by the next checkpoint, and the full snapshots a long run writes cost
        in all about what its deltas do. A resumed run folds them sooner (``RESUME_FOLD``), so that the
        next resume replays fewer of them."""
        if self.resumed:
            self.resumed = False
            if self.since_full >= max(RESUME_FOLD, self.state_size // 2):
                return True
        return self.since_full >= COMPACT_AFTER and self.since_full >= 2 * max(self.state_size, self.full_size)

    def _note_sizes(self, values: dict[str, str], keys: Any, full: bool) -> None:
        """Keep the state's size as written, from the keys each record carries (so the cost follows the change)."""
        sizes = self._sizes
        if full:
            if values:
                self._sizes = sizes = {key: len(text) for key, text in values.items()}
                self.state_size = sum(sizes.values())
            elif sizes:  # (a new run's state is empty: nothing to count)
                self._sizes, self.state_size = {}, 0
            return
        size = self.state_size
        for key in keys:
            size -= sizes.pop(key, 0)
            text = values.get(key)
            if text is not None:
                sizes[key] = length = len(text)
                size += length
        self.state_size = size

    def _result_json(self) -> str | None:
        result = self.run.result
        if result is None:
            return None
        if type(result) is StopEvent:
            value = result.result
            kind = type(value)
            if kind is str:  # what json.dumps writes for the common results, without its encoder's set-up
                return encode_basestring_ascii(value)
            if kind is int:
                return int.__repr__(value)
            return json.dumps(to_jsonable_python(value))
        return result.model_dump_json()

    def release(self) -> None:
        """Give the lease up as the run stops here, once the writes on their way are done (a final status
        written with the last checkpoint already did)."""
        self.detach()
        if self.in_flight:
            self.releasing = True
            return
        self._release()

    def _release(self) -> None:
        if self.releasing:
            self.releasing = False
        if not self.stored or self.durable_status in TERMINAL:
            return
        run_id, owner, checkpointer = self.run.run_id, self.owner, self.checkpointer

        def release() -> None:
            with contextlib.suppress(DurableflowError):  # the lease expires on its own
                checkpointer.release(run_id, owner)

        pending = self.io.call(self.loop, release)
        if pending is not None:
            pending.add_done_callback(_ignore)


_landed = RunCheckpoints.landed  # the function, shared by every run (a bound method would be one object per write)


class EndLanded(Exception):
    """The record that ended the run, whose write seemed to fail, is durable: the run ended with ``status``."""

    def __init__(self, status: RunStatus) -> None:
        super().__init__(status)
        self.status = status


class _EarlierRecordLanded(Exception):
    """The write before this one, which failed unreachable, landed after all (see ``_append_after``)."""


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
