"""The checkpointer protocol: what a store must do to keep runs, and the leases that give each run one owner.

A checkpointer stores opaque records; the engine encodes and checks them
(``_snapshot``). To add a store (Postgres, say), implement :class:`Checkpointer`
and run ``pytest_durableflow.conformance`` against it.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, runtime_checkable

from ._clock import get_clock

RunStatus = Literal["running", "waiting", "completed", "failed", "cancelled", "interrupted"]
"""What ``info`` and ``runs`` report. ``interrupted`` is never stored: it is a ``running`` run that nobody
drives any more (its lease lapsed, or its owner died on this machine), the runs a worker picks up."""

STORED: tuple[RunStatus, ...] = ("running", "waiting", "completed", "failed", "cancelled")
"""The statuses a store keeps; ``append`` takes one of them."""
TERMINAL: tuple[RunStatus, ...] = ("completed", "failed", "cancelled")
"""The statuses a run ends with: writing one frees the lease, and ``purge`` deletes only these."""
STATUSES: tuple[RunStatus, ...] = ("running", "waiting", "completed", "failed", "cancelled", "interrupted")


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

    @property
    def cursor(self) -> str:
        """Where a listing that ended with this run goes on: ``runs(after=info.cursor)``."""
        return f"{self.created_at!r}/{self.run_id}"


@dataclass(frozen=True)
class Append:
    """One ``append`` call as data, for ``append_many``."""

    run_id: str
    record: Record
    owner: str
    status: RunStatus | None = None
    result: str | None = None
    error: str | None = None


@runtime_checkable
class Checkpointer(Protocol):
    """A store of runs. Every method is atomic; store calls are synchronous.

    Leases: ``create`` and ``acquire`` give ``owner`` the run until ``now + ttl``;
    ``append`` and ``renew`` succeed only for the owner (``RunLeaseError`` otherwise),
    so a worker that lost its run can never write to it again.

    Sequence fence: ``append`` stores ``record`` only if ``record.seq`` is the run's
    last stored sequence number plus one, checked in the same atomic step as the
    lease; otherwise it raises ``RunConflictError`` and stores nothing. So a write
    that timed out on the client and landed later cannot be followed by a second
    record of the same number, and no run is left with a gap.

    Time is read from ``durableflow.get_clock()``. A store whose calls are cheap
    enough to make on the event loop (memory, a local file) sets ``inline = True``;
    others are called from a thread.
    """

    url: str
    """Where the runs live, as accepted by ``open_checkpointer`` (``sqlite:///runs.db``)."""

    lease_ttl: float
    """Seconds a lease lasts without renewal."""

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        """Store a new run with its first (full) record, leased to ``owner``; ``RunExistsError`` if known.

        ``record.seq`` becomes the run's last sequence number (1 for a new run, more for a copied one).
        """
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
        """Add ``record`` (dropping older records when it is full) and set the status if given, atomically.

        Refused, storing nothing: ``RunNotFoundError`` for an unknown run, ``RunLeaseError``
        unless ``owner`` holds the lease, then ``RunConflictError`` unless
        ``record.seq == last_seq + 1``. A final status (completed, failed, cancelled)
        also releases the lease. ``status`` is never ``"interrupted"`` (``ValueError``).
        """
        ...

    def load(self, run_id: str) -> list[Record]:
        """The newest full record and every later one, in order; ``RunNotFoundError`` if unknown."""
        ...

    def info(self, run_id: str) -> RunInfo:
        """The run's metadata, its status as ``reported_status`` derives it; ``RunNotFoundError`` if unknown."""
        ...

    def runs(
        self, status: RunStatus | Collection[RunStatus] | None = None, limit: int = 100, after: str | None = None
    ) -> list[RunInfo]:
        """Up to ``limit`` runs, newest first by ``(created_at, run_id)``, from an index (not a scan).

        ``status`` keeps the runs whose reported status is that one (or one of those);
        ``after`` is the ``cursor`` of the last run of the previous page.
        """
        ...

    def delete(self, run_id: str) -> bool:
        """Forget the run and its records, whatever its status; ``False`` if it was not stored.

        A worker still driving it gets ``RunNotFoundError`` at its next write.
        """
        ...

    def purge(self, status: RunStatus | Collection[RunStatus] = TERMINAL, older_than: float = 0.0) -> int:
        """Delete the runs with one of these final statuses that ended ``older_than`` seconds ago or
        earlier; how many. Only final statuses may be named (``ValueError`` otherwise)."""
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


@runtime_checkable
class GroupCommit(Protocol):
    """A checkpointer that can write many appends at once (optional)."""

    def append_many(self, appends: Sequence[Append]) -> list[BaseException | None]:
        """Each append as ``append`` would do it, fenced on its own, in one transaction or round trip.

        The result holds, in order, ``None`` for each append that was stored and the
        error for each that was refused (``RunNotFoundError``, ``RunLeaseError``,
        ``RunConflictError``, ``ValueError``); a refused append does not stop the others.
        A store that fails as a whole raises ``StoreUnavailableError`` instead, and then
        none of the appends, or (if it failed while committing) possibly all, are stored.
        """
        ...


def append_many(checkpointer: Checkpointer, appends: Sequence[Append]) -> list[BaseException | None]:
    """``checkpointer.append_many(appends)``, or each ``append`` in turn for a store without it."""
    if isinstance(checkpointer, GroupCommit):
        return checkpointer.append_many(appends)
    return [each_append(checkpointer, a) for a in appends]


def each_append(checkpointer: Checkpointer, a: Append) -> BaseException | None:
    """One append, its refusal returned rather than raised (``StoreUnavailableError`` still raises)."""
    from ._errors import RunConflictError, RunLeaseError, RunNotFoundError

    try:
        checkpointer.append(a.run_id, a.record, a.owner, a.status, a.result, a.error)
    except (RunNotFoundError, RunLeaseError, RunConflictError, ValueError) as exc:
        return exc
    return None


# -- statuses and listing --------------------------------------------------------------


def check_status(status: str | None) -> None:
    """``ValueError`` unless ``status`` is one a store keeps (or None)."""
    if status is not None and status not in STORED:
        raise ValueError(f"a run is stored as one of {', '.join(STORED)}, not {status!r}")


def wanted_statuses(status: RunStatus | Collection[RunStatus] | None) -> frozenset[str] | None:
    """The reported statuses ``runs(status=...)`` asks for; None for all of them."""
    if status is None:
        return None
    wanted = frozenset([status] if isinstance(status, str) else status)
    unknown = wanted - set(STATUSES)
    if unknown:
        raise ValueError(f"unknown run status {sorted(unknown)[0]!r}: use one of {', '.join(STATUSES)}")
    return wanted


def terminal_statuses(status: RunStatus | Collection[RunStatus]) -> tuple[str, ...]:
    """The statuses ``purge`` deletes; ``ValueError`` for any that is not final."""
    statuses = tuple(sorted({status} if isinstance(status, str) else set(status)))
    bad = [s for s in statuses if s not in TERMINAL]
    if bad:
        raise ValueError(f"purge deletes only ended runs ({', '.join(TERMINAL)}), not {bad[0]!r} ones")
    return statuses


def reported_status(status: str, lease_owner: str | None, lease_expires_at: float | None, now: float) -> RunStatus:
    """A stored status as ``info`` and ``runs`` report it: a ``running`` run nobody drives is ``interrupted``."""
    if status == "running" and (
        lease_owner is None or lease_expires_at is None or lease_expires_at <= now or owner_is_dead(lease_owner)
    ):
        return "interrupted"
    return status  # type: ignore[return-value]  # the stores write only stored statuses


def reported(info: RunInfo, now: float | None = None) -> RunInfo:
    """``info`` (as stored) with the status ``info`` and ``runs`` report."""
    if not isinstance(info.lease_expires_at, int | float | None) or not isinstance(info.lease_owner, str | None):
        return info  # edited by hand: reported as stored, for check_info to name what is wrong
    shown = reported_status(
        info.status, info.lease_owner, info.lease_expires_at, get_clock().now() if now is None else now
    )
    return info if shown == info.status else replace(info, status=shown)


def parse_cursor(cursor: str) -> tuple[float, str]:
    """``(created_at, run_id)`` from a ``RunInfo.cursor``; ``ValueError`` for anything else."""
    created, sep, run_id = cursor.partition("/")
    try:
        if not sep:
            raise ValueError
        return float(created), run_id
    except ValueError:
        raise ValueError(f"not a run cursor: {cursor!r} (pass the cursor of a RunInfo from runs())") from None


Page = Callable[[tuple[str, ...] | None, int, tuple[float, str] | None], list[RunInfo]]
"""A store's indexed listing: runs with one of these stored statuses (None: any), at most ``limit`` of
them, newest first, strictly after a ``(created_at, run_id)`` key; their status as stored."""


def list_runs(
    page: Page, status: RunStatus | Collection[RunStatus] | None, limit: int, after: str | None
) -> list[RunInfo]:
    """``runs()`` for a store that can page through its index: stored statuses are asked for, derived
    ones (``interrupted``, and ``running`` that excludes them) are filtered page by page."""
    wanted = wanted_statuses(status)
    if limit <= 0 or wanted == frozenset():
        return []
    key = parse_cursor(after) if after is not None else None
    stored: tuple[str, ...] | None = None
    if wanted is not None:
        stored = tuple(s for s in STORED if s in wanted or (s == "running" and "interrupted" in wanted))
    filtered = wanted is not None and ("running" in wanted or "interrupted" in wanted)
    now = get_clock().now()
    found: list[RunInfo] = []
    while True:
        # pages of derived statuses may be thinned by the filter: read ahead rather than row by row
        size = max(limit - len(found), 50) if filtered else limit - len(found)
        rows = page(stored, size, key)
        for info in map(reported, rows, [now] * len(rows)):
            if wanted is None or info.status in wanted:
                found.append(info)
                if len(found) == limit:
                    return found
        if len(rows) < size:
            return found
        key = (rows[-1].created_at, rows[-1].run_id)


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


_engines = itertools.count(int.from_bytes(os.urandom(6)))
"""Numbers the engines of this process from a random start: a process that reuses a dead one's pid does not
reuse its owner ids, and no engine pays for fresh random bytes (a uuid4 cost each durable run ~2 µs)."""


_pid = os.getpid()


def current_pid() -> int:
    """``os.getpid()``, without its system call on every checkpoint: kept up to date across forks."""
    return _pid


def _renumber_engines() -> None:
    """A forked child starts from a random point of its own: children of one parent (the crash harness forks
    its lives from one interpreter) must not share owner ids when one reuses a dead sibling's pid."""
    global _engines, _pid
    _engines = itertools.count(int.from_bytes(os.urandom(6)))
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renumber_engines)


def new_owner() -> str:
    """A lease owner id for one engine: host, process and a part unique to the engine."""
    owner = f"{_HOST}:{_pid}:{next(_engines) & 0xFFFF_FFFF_FFFF:012x}"
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
        pass  # another user's process: alive unless it is a zombie
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """True when ``pid`` has exited but its parent has not reaped it yet: ``os.kill(pid, 0)`` still succeeds
    for such a process, though it will never run again. Only Linux tells (``/proc``); elsewhere False."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except FileNotFoundError:  # reaped since os.kill saw it; or no /proc at all on this system
        return os.path.exists("/proc/self/stat")
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses, so the state follows the last ")".
    fields = text.rpartition(b")")[2].split()
    return bool(fields) and fields[0] in (b"Z", b"X")


def open_checkpointer(url: str) -> Checkpointer:
    """A checkpointer from a URL: ``sqlite:///path``, ``redis://host:port/db``, ``postgresql://host/db``
    or ``memory://``."""
    from ._memory import MemoryCheckpointer
    from ._postgres import PostgresCheckpointer
    from ._redis import RedisCheckpointer
    from ._sqlite import SQLiteCheckpointer

    if url.startswith("sqlite:///"):
        return SQLiteCheckpointer(url[len("sqlite:///") :])
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisCheckpointer(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresCheckpointer(url)
    if url.startswith("memory://"):
        return MemoryCheckpointer()
    path = url.removeprefix("sqlite:").removeprefix("//") if url.startswith("sqlite:") or "://" not in url else ""
    meant = f" (the SQLite file {path} is sqlite:///{path})" if path else ""
    raise ValueError(
        f"unknown store URL {without_password(url)!r}{meant}: use sqlite:///path, redis://host:port/db, "
        "postgresql://host/db or memory://"
    )


def without_password(url: str) -> str:
    """``url`` with its password, in its user part or its query (or a PostgreSQL conninfo's ``password=``), as
    ``***``: store URLs are shown in errors and logs, which outlive the shell that typed them."""
    if "://" not in url:  # a conninfo string (host=... password=...), or no URL at all
        return _CONNINFO_PASSWORD.sub(r"\1***", url)
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:  # not a URL urllib can read (a bad IPv6 host): hide what looks like a password
        return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))
    if parts.password is None and all(name != "password" for name, _ in query):
        return url  # unchanged: rebuilt, a URL without a host would lose its "//"
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if any(name == "password" for name, _ in query):
        shown = [(name, "***" if name == "password" else value) for name, value in query]
        parts = parts._replace(query=urllib.parse.urlencode(shown, safe="*"))
    return urllib.parse.urlunsplit(parts)


_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']\S*|'.*)")
_URL_PASSWORD = re.compile(r"(//[^/@:]*:)[^/]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")
