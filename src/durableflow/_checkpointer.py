"""The checkpointer protocol: what a store must do to keep runs, and the leases that give each run one owner.

A checkpointer stores opaque records; the engine encodes and checks them
(``_snapshot``). To add a store (Postgres, say), implement :class:`Checkpointer`
and run ``pytest_durableflow.conformance`` against it.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

RunStatus = Literal["running", "waiting", "completed", "failed", "cancelled"]
TERMINAL = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Record:
    """One checkpoint as stored: its position in the run, whether it is a full snapshot, its bytes."""

    seq: int
    full: bool
    data: bytes


@dataclass(frozen=True)
class RunInfo:
    """What a store knows about a run without decoding it."""

    run_id: str
    workflow: str
    status: RunStatus
    created_at: float
    updated_at: float
    last_seq: int
    result: str | None = None
    """The result as JSON text, once completed."""
    error: str | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None


@runtime_checkable
class Checkpointer(Protocol):
    """A store of runs. Every method is atomic; the engine calls them from the run's event loop.

    Leases: ``create`` and ``acquire`` give ``owner`` the run until ``now + ttl``;
    ``append`` and ``renew`` succeed only for the owner (``RunLeaseError`` otherwise),
    so a worker that lost its run can never write to it again.
    """

    url: str
    """Where the runs live, as accepted by ``open_checkpointer`` (``sqlite:///runs.db``)."""

    lease_ttl: float
    """Seconds a lease lasts without renewal."""

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        """Store a new run with its first (full) record, leased to ``owner``; ``RunExistsError`` if known."""
        ...

    def append(
        self,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        """Add ``record`` (dropping older records when it is full) and set the status if given.

        A final status (completed, failed, cancelled) also releases the lease.
        """
        ...

    def load(self, run_id: str) -> list[Record]:
        """The newest full record and every later one, in order; ``RunNotFoundError`` if unknown."""
        ...

    def info(self, run_id: str) -> RunInfo:
        """The run's metadata; ``RunNotFoundError`` if unknown."""
        ...

    def runs(self, limit: int = 100) -> list[RunInfo]:
        """The most recently created runs first."""
        ...

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        """Lease the run to ``owner`` if it is free, expired, already ``owner``'s, or held by ``steal_from``."""
        ...

    def renew(self, run_id: str, owner: str) -> bool:
        """Extend ``owner``'s lease; ``False`` if ``owner`` no longer holds it."""
        ...

    def release(self, run_id: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        ...

    def close(self) -> None:
        """Free connections; the stored runs stay."""
        ...


# -- lease owners ----------------------------------------------------------------------


def _host() -> str:
    # The pid namespace tells apart containers that share a host name; pids only mean something within one.
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace}"


_HOST = _host()
_live_owners: set[str] = set()


def new_owner() -> str:
    """A lease owner id for one engine: host, process and a random part."""
    owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    _live_owners.add(owner)
    return owner


def retire_owner(owner: str) -> None:
    """The engine behind ``owner`` stopped driving its run (finished, failed or crashed)."""
    _live_owners.discard(owner)


def owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` is an engine of this host that can no longer be driving anything:
    its process is gone, or it is this process and the engine has stopped."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in _live_owners
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def open_checkpointer(url: str) -> Checkpointer:
    """A checkpointer from a URL: ``sqlite:///path``, ``redis://host:port/db`` or ``memory://``."""
    from ._memory import MemoryCheckpointer
    from ._redis import RedisCheckpointer
    from ._sqlite import SQLiteCheckpointer

    if url.startswith("sqlite:///"):
        return SQLiteCheckpointer(url[len("sqlite:///") :])
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisCheckpointer(url)
    if url.startswith("memory://"):
        return MemoryCheckpointer()
    raise ValueError(f"unknown store URL {url!r}: use sqlite:///path, redis://host:port/db or memory://")
