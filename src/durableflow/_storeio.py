"""Where store calls run: on the event loop for cheap local stores, in a thread of their own for the rest.

The ``Checkpointer`` protocol is synchronous. A store that sets ``inline = True``
(memory, SQLite: a commit costs tens of µs, less than handing it to a thread) is
called on the loop. While several runs share such a store, the checkpoints they
ask for in one turn of the loop are written together in one transaction at the
start of the next turn (group commit), and each step waits for its own. A lone
run writes at once, without the extra turn.

Any other store (Redis, PostgreSQL, a user's) is called from one thread per
checkpointer, which writes whatever queued while its previous write was in
flight in one ``append_many``: a slow or frozen server delays the runs waiting
on it, never the loop, so other runs and lease renewals go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast, final

from ._checkpointer import Append, Checkpointer, Record, RunStatus, append_many

T = TypeVar("T")


def is_inline(checkpointer: Checkpointer) -> bool:
    """Whether the store is cheap enough to call on the loop (it says so with ``inline = True``)."""
    return bool(getattr(checkpointer, "inline", False))


Landed = Callable[[Any, "_Op", tuple[bool, Any], bool], tuple[bool, Any]]
"""Told an append's outcome before its waiter is, as ``landed(landing, op, outcome, abandoned)`` (``abandoned``: the
waiter is gone): the run notes the record written, or failed. It returns the outcome the waiter gets (a crash point
that fires there reaches the waiter as its exception). A plain function and its ``landing`` (the run), not a bound
method: one object fewer that each run waiting for a shared commit keeps for the garbage collector."""


@final
class _Op:
    """One queued store call, or one append (its fields, not an ``Append``: one object fewer while it waits), and
    the future of whoever waits for it."""

    __slots__ = (
        "call",
        "error",
        "future",
        "landed",
        "landing",
        "owner",
        "record",
        "result",
        "run_id",
        "since",
        "status",
    )

    def __init__(self, future: asyncio.Future[Any], call: Callable[[], Any] | None) -> None:
        self.future = future
        self.call = call
        self.landed: Landed | None = None
        self.run_id: str | None = None  # set for an append
        self.record: Record
        self.owner: str
        self.status: RunStatus | None
        self.result: str | None
        self.error: str | None
        self.landing: Any
        self.since: Any  # what ``landed`` needs besides the record (what the run had written before it)

    def as_append(self) -> Append:
        assert self.run_id is not None
        return Append(self.run_id, self.record, self.owner, self.status, self.result, self.error)


@final
class StoreIO:
    """The store calls of every run that uses one checkpointer, in the order they were asked for."""

    def __init__(self, checkpointer: Checkpointer) -> None:
        self.checkpointer = checkpointer
        self.inline = is_inline(checkpointer)
        self.active = 0
        """Runs writing through here now: group commit starts at two."""
        self._queue: list[_Op] = []
        self._lock = threading.Lock()
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # inline: the loop a flush is scheduled on
        self._thread: threading.Thread | None = None  # threaded: the writer, while it has work
        self._wake = threading.Condition(self._lock)

    # -- asking ----------------------------------------------------------------------------

    def append(self, loop: asyncio.AbstractEventLoop, append: Append, batch: bool) -> asyncio.Future[Any] | None:
        """Append a record: ``None`` once written (inline), or a future that is done once it is."""
        a = append
        if self.inline and not (batch and self.active > 1):
            if self._queue:  # what was asked for earlier goes first
                self._flush_inline()
            self.checkpointer.append(a.run_id, a.record, a.owner, a.status, a.result, a.error)
            return None
        return self.queue_append(loop, a.run_id, a.record, a.owner, a.status, a.result, a.error)

    def queue_append(
        self,
        loop: asyncio.AbstractEventLoop,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None,
        result: str | None,
        error: str | None,
        landed: Landed | None = None,
        landing: Any = None,
        since: Any = None,
    ) -> asyncio.Future[Any]:
        """Queue an append for the next shared write: a future that is done once it is written, after
        ``landed(landing, op, outcome, abandoned)`` was called (if given): the caller need not wrap the future."""
        op = _Op(loop.create_future(), None)
        op.run_id, op.record, op.owner, op.status, op.result, op.error = run_id, record, owner, status, result, error
        op.landed, op.landing, op.since = landed, landing, since
        self._enqueue(loop, op)
        return op.future

    def append_now(
        self,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None,
        result: str | None,
        error: str | None,
    ) -> None:
        """``append`` on an inline store, written now (after what queued before it): a lone run's checkpoint."""
        if self._queue:
            self._flush_inline()
        self.checkpointer.append(run_id, record, owner, status, result, error)

    def call(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[[], T], batch: bool = True
    ) -> asyncio.Future[T] | None:
        """Any other store call, in order with the appends: ``None`` once done (inline), or a future."""
        if self.inline and not (batch and self.active > 1):
            self._write_now(fn)
            return None
        return cast("asyncio.Future[T]", self._enqueue(loop, _Op(loop.create_future(), fn)))

    async def ask(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
        """A call whose answer its caller awaits (a lease, a run's records), in order with the rest:
        made here on an inline store, in the store's thread otherwise, so only its caller waits."""
        if self.inline:
            return self._write_now(fn)
        return await cast("asyncio.Future[T]", self._enqueue(loop, _Op(loop.create_future(), fn)))

    def now(self, fn: Callable[[], T]) -> T:
        """A call whose caller cannot wait (it must raise at once): made here, after what queued before it.

        On a threaded store this blocks the loop until the writer thread has done it; only
        calls that must be synchronous by contract (an event sent from outside the run) come here.
        """
        if self.inline:
            return self._write_now(fn)
        done = threading.Event()
        box: list[Any] = []

        def call() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))
            finally:
                done.set()

        with self._lock:
            self._queue.append(_Op(_NO_FUTURE, call))
            self._start_writer()
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return cast(T, value)

    # -- inline ----------------------------------------------------------------------------

    def _write_now(self, fn: Callable[[], T]) -> T:
        if self._queue:  # what was asked for earlier goes first
            self._flush_inline()
        return fn()

    def _enqueue(self, loop: asyncio.AbstractEventLoop, op: _Op) -> asyncio.Future[Any]:
        if self.inline:
            if self._flush_loop is not None and self._flush_loop is not loop:
                self._flush_inline()  # another loop's batch: write it now rather than mix loops
            self._queue.append(op)
            if self._flush_loop is None:
                self._flush_loop = loop
                loop.call_soon(self._flush_inline)
            return op.future
        with self._lock:
            self._queue.append(op)
            self._start_writer()
        return op.future

    def _flush_inline(self) -> None:
        self._flush_loop = None
        ops, self._queue = self._queue, []
        if ops:
            for op, outcome in zip(ops, self._apply(ops), strict=True):
                _settle(op, outcome)

    # -- threaded --------------------------------------------------------------------------

    def _start_writer(self) -> None:
        """With the lock held: make sure a writer thread is working through the queue."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="durableflow-store-io", daemon=True)
            self._thread.start()
        else:
            self._wake.notify()

    def _drain(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    if not self._wake.wait(_IDLE) and not self._queue:
                        self._thread = None  # idle: the next request starts another
                        return
                ops, self._queue = self._queue, []
            for op, outcome in zip(ops, self._apply(ops), strict=True):
                if op.future is _NO_FUTURE:
                    continue
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                    op.future.get_loop().call_soon_threadsafe(_settle, op, outcome)

    # -- writing ---------------------------------------------------------------------------

    def _apply(self, ops: Sequence[_Op]) -> list[tuple[bool, Any]]:
        """Make every call, in order; appends next to each other go in one ``append_many``."""
        outcomes: list[tuple[bool, Any]] = []
        start = 0
        while start < len(ops):
            op = ops[start]
            if op.run_id is None:
                assert op.call is not None
                outcomes.append(_attempt(op.call))
                start += 1
                continue
            end = start + 1
            while end < len(ops) and ops[end].run_id is not None:
                end += 1
            outcomes += self._append_many(ops[start:end])
            start = end
        return outcomes

    def _append_many(self, ops: Sequence[_Op]) -> list[tuple[bool, Any]]:
        """One transaction (or round trip) for them all; each append is refused or stored on its own."""
        checkpointer = self.checkpointer
        if len(ops) == 1:
            a = ops[0].as_append()
            return [_attempt(lambda: checkpointer.append(a.run_id, a.record, a.owner, a.status, a.result, a.error))]
        try:
            refusals = append_many(checkpointer, [op.as_append() for op in ops])
        except Exception as exc:  # the store failed as a whole (StoreUnavailableError): each waiter learns of it
            return [(False, exc)] * len(ops)
        return [(True, None) if refusal is None else (False, refusal) for refusal in refusals]


def _attempt(fn: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, fn()
    except Exception as exc:
        return False, exc


def _settle(op: _Op, outcome: tuple[bool, Any]) -> None:
    future = op.future
    # Its waiter was cancelled, or its loop closed before the commit it waited for (written by the next call,
    # from another loop): nobody waits, and telling a closed loop's future would raise in that next call.
    gone = future.done() or future.get_loop().is_closed()
    if op.landed is not None:
        outcome = op.landed(op.landing, op, outcome, gone)
    if gone or future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


_NO_FUTURE: Any = object()
_IDLE = 5.0  # seconds a writer thread waits for work before it ends


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads, and its locks may be held by them: start afresh."""
    for io in [*(io for _, io in _ios.values()), *_ios_by_id.values()]:
        io._lock = threading.Lock()
        io._wake = threading.Condition(io._lock)
        io._queue, io._thread, io._flush_loop = [], None, None


_ios: dict[int, tuple[weakref.ref[Any], StoreIO]] = {}
"""Each checkpointer's ``StoreIO``, for as long as the checkpointer lives: made once, not again for every run
(its locks and queue are a few µs of a run). Found by identity, never by ``==`` (two checkpointers equal by
value are two objects), and the ``StoreIO`` holds its checkpointer by a weak proxy, so the entry keeps nothing
alive."""
_ios_by_id: dict[int, StoreIO] = {}  # checkpointers that cannot be weakly referenced


def store_io(checkpointer: Checkpointer) -> StoreIO:
    """The one ``StoreIO`` of this checkpointer object."""
    key = id(checkpointer)
    entry = _ios.get(key)
    if entry is not None and entry[0]() is checkpointer:
        return entry[1]
    try:
        # Dropped once the checkpointer dies, by a callback that runs no Python code: a Ctrl-C that arrived while
        # one did would be raised in it, reported as ignored and lost. No other object can have this id until the
        # callback has run, so the entry it drops is this checkpointer's.
        ref = weakref.ref(checkpointer, functools.partial(_ios.pop, key))
    except TypeError:
        io = _ios_by_id.get(key)
        if io is None:
            io = _ios_by_id[key] = StoreIO(checkpointer)
        return io
    io = StoreIO(cast(Checkpointer, weakref.proxy(checkpointer)))
    _ios[key] = (ref, io)
    return io


os.register_at_fork(after_in_child=_after_fork_in_child)
