"""Gates: in-process, each life reaches the fake world through a gate of its own, shut when the life ends.

A killed process takes its threads with it; in-process, a thread of a life
that has ended (a plain ``def`` step, ``asyncio.to_thread``, a worker that
was still busy when the run stopped) keeps running. Every Redis client and
fake served to a life passes its gate, so once the life is over such a thread
gets ``WorldClosed`` instead of the next scenario's world. A thread already
inside when the gate shuts cannot be stopped: the gate remembers it, and the
scenarios it may have touched are reported as not judgeable.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, final

from ._clock import real_monotonic


class WorldClosed(RuntimeError):
    """Raised in a thread of a life that has ended when it reaches for the fake world: in a real crash
    that thread would be gone with its process."""


@final
class Gate:
    """One life's way into the world: open while it lives, paused while it is paused, shut once it is over."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._state = "open"
        self._inside: dict[int, int] = {}
        """Threads inside, by ident: how many calls each has open (a fake's method may call another)."""
        self.late = 0
        """Calls that were inside when the gate shut and finished after: each touched a world it no longer had."""

    @contextmanager
    def passing(self) -> Iterator[None]:
        """Around one call into the world: waits while the life is paused, refuses once it is over."""
        me = threading.get_ident()
        with self._cond:
            while self._state == "paused" and me not in self._inside:
                self._cond.wait()
            if self._state == "shut":
                raise WorldClosed(
                    "this thread belongs to a run whose process the crash harness has killed: it may not reach the "
                    "fake world any more (a real crash would have taken the thread with it)"
                )
            self._inside[me] = self._inside.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                left = self._inside[me] - 1
                if left:
                    self._inside[me] = left
                else:
                    del self._inside[me]
                if self._state == "shut":
                    self.late += 1
                self._cond.notify_all()

    def pause(self, timeout: float) -> bool:
        """Hold every other thread of the life out of the world; ``False`` if one inside did not come out."""
        with self._cond:
            if self._state == "open":
                self._state = "paused"
            return self._drained(timeout)

    def resume(self) -> None:
        with self._cond:
            if self._state == "paused":
                self._state = "open"
                self._cond.notify_all()

    def shut(self, timeout: float) -> bool:
        """The life is over: refuse its threads from now on; ``False`` if one inside did not come out."""
        with self._cond:
            self._state = "shut"
            self._cond.notify_all()
            return self._drained(timeout)

    @property
    def inside(self) -> int:
        """Calls of its life's threads in the world right now."""
        with self._cond:
            return sum(self._inside.values())

    def _drained(self, timeout: float) -> bool:
        me = threading.get_ident()
        give_up = real_monotonic() + timeout
        while any(ident != me for ident in self._inside):
            left = give_up - real_monotonic()
            if left <= 0:
                return False
            self._cond.wait(left)
        return True


_in_a_fake = threading.local()
"""``depth`` 1 while this thread runs a served fake's method: a fake that keeps another one it was served (through
the gate of a life that may be paused or over by now) calls it as part of the call that let it in."""


class Gated:
    """A fake served to one life: each method call and attribute write passes the life's gate.

    It passes ``isinstance`` checks as the fake would (its ``__class__`` is the fake's).
    """

    __slots__ = ("_gate", "_target")

    def __init__(self, target: Any, gate: Gate) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_gate", gate)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        target = object.__getattribute__(self, "_target")
        return type(getattr(target, "_target", target))  # a Recorder stands for the fake it wraps

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._target, attribute)
        if not callable(value):
            return value
        gate = self._gate

        def call(*args: Any, **kwargs: Any) -> Any:
            if getattr(_in_a_fake, "depth", 0):  # a fake calling one it keeps: inside the world already
                return value(*args, **kwargs)
            with gate.passing():
                _in_a_fake.depth = 1
                try:
                    return value(*args, **kwargs)
                finally:
                    _in_a_fake.depth = 0

        _keep_signature(call, value)
        return call

    def __setattr__(self, attribute: str, value: Any) -> None:
        with self._gate.passing():
            setattr(self._target, attribute, value)

    def __dir__(self) -> list[str]:
        return dir(self._target)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A fake that keeps another one it was served is copied with what that stands for, not this life's
        gate: the copy outlives the life (and the copying thread, waiting at the paused gate, would hang)."""
        return copy.deepcopy(self._target, memo)


def _keep_signature(wrapper: Callable[..., Any], wrapped: Callable[..., Any]) -> None:
    """``ctx.effect`` reads a function's signature to decide whether to pass ``idempotency_key``."""
    try:
        wrapper.__wrapped__ = wrapped  # type: ignore[attr-defined]
        wrapper.__name__ = getattr(wrapped, "__name__", wrapper.__name__)
        wrapper.__qualname__ = getattr(wrapped, "__qualname__", wrapper.__qualname__)
    except (AttributeError, TypeError):
        pass


class GatedPool:
    """A redis-py connection pool seen through a life's gate: a command holds a connection while it runs."""

    def __init__(self, pool: Any, gate: Gate) -> None:
        self._pool = pool
        self._gate = gate
        self._passes: dict[int, Any] = {}

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        passing = self._gate.passing()
        passing.__enter__()
        try:
            connection = self._pool.get_connection(*args, **kwargs)
        except BaseException:
            passing.__exit__(None, None, None)
            raise
        self._passes[id(connection)] = passing
        return connection

    def release(self, connection: Any) -> None:
        try:
            self._pool.release(connection)
        finally:
            passing = self._passes.pop(id(connection), None)
            if passing is not None:
                passing.__exit__(None, None, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def gated_client(client: Any, gate: Gate) -> Any:
    """A copy of a synchronous redis-py client whose commands, pipelines and locks pass ``gate``."""
    import copy

    seen = copy.copy(client)
    seen.connection_pool = GatedPool(client.connection_pool, gate)
    return seen
