"""``MemoryCheckpointer``: runs kept in this process, the test seam beside SQLite, Redis and PostgreSQL."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Collection, Sequence
from typing import Any

from ._checkpointer import (
    TERMINAL,
    Append,
    Record,
    RunInfo,
    RunStatus,
    check_status,
    each_append,
    list_runs,
    reported,
    terminal_statuses,
)
from ._clock import get_clock
from ._errors import RunConflictError, RunExistsError, RunLeaseError, RunNotFoundError
from ._framing import checked_key

Key = tuple[float, str]


class MemoryCheckpointer:
    """Keeps runs in a dict: they survive an engine that crashed in-process, not the process."""

    inline = True

    def __init__(self, lease_ttl: float = 30.0, key: str | bytes | None = None) -> None:
        self.url = f"memory://{id(self):x}"
        self.lease_ttl = lease_ttl
        self.key = checked_key(key)  # records are sealed with a MAC under it (default: $DURABLEFLOW_KEY, if set)
        self._runs: dict[str, dict[str, Any]] = {}  # RunInfo fields, mutable, plus "ended_at"
        self._records: dict[str, list[Record]] = {}
        self._by_status: dict[str, list[Key]] = {}  # (created_at, run_id), sorted: the listing index
        self._ended: dict[str, list[Key]] = {}  # (ended_at, run_id) per final status: the purge index
        self._lock = threading.Lock()

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        with self._lock:
            if run_id in self._runs:
                raise RunExistsError(run_id)
            now = get_clock().now()
            self._runs[run_id] = {
                "run_id": run_id, "workflow": workflow, "status": "running", "created_at": now, "updated_at": now,
                "last_seq": record.seq, "result": None, "error": None,
                "lease_owner": owner, "lease_expires_at": now + self.lease_ttl, "ended_at": None,
            }  # fmt: skip
            self._records[run_id] = [record]
            self._index(run_id, add=True)

    def append(
        self,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        check_status(status)
        with self._lock:
            run = self._run(run_id)
            if run["lease_owner"] != owner:
                raise RunLeaseError.lost(run_id, run["lease_owner"], run["lease_expires_at"])
            if record.seq != run["last_seq"] + 1:
                raise RunConflictError(run_id, record.seq, run["last_seq"] + 1)
            records = self._records[run_id]
            if record.full:
                records.clear()
            records.append(record)
            now = get_clock().now()
            run.update(updated_at=now, last_seq=record.seq)
            if status is not None:
                self._index(run_id, add=False)
                run.update(status=status, result=result, error=error, ended_at=now if status in TERMINAL else None)
                self._index(run_id, add=True)
            if status in TERMINAL:
                run.update(lease_owner=None, lease_expires_at=None)

    def append_many(self, appends: Sequence[Append]) -> list[BaseException | None]:
        return [each_append(self, a) for a in appends]

    def load(self, run_id: str) -> list[Record]:
        with self._lock:
            self._run(run_id)
            return list(self._records[run_id])

    def info(self, run_id: str) -> RunInfo:
        with self._lock:
            return reported(self._info(self._run(run_id)))

    def runs(
        self, status: RunStatus | Collection[RunStatus] | None = None, limit: int = 100, after: str | None = None
    ) -> list[RunInfo]:
        return list_runs(self._page, status, limit, after)

    def delete(self, run_id: str) -> bool:
        with self._lock:
            if run_id not in self._runs:
                return False
            self._index(run_id, add=False)
            del self._runs[run_id], self._records[run_id]
            return True

    def purge(self, status: RunStatus | Collection[RunStatus] = TERMINAL, older_than: float = 0.0) -> int:
        cutoff = (get_clock().now() - older_than, "\U0010ffff")  # every run id sorts before it at equal times
        purged = 0
        for each in terminal_statuses(status):
            with self._lock:
                ended = self._ended.get(each, [])
                for _, run_id in ended[: bisect.bisect_right(ended, cutoff)]:
                    self._index(run_id, add=False)
                    del self._runs[run_id], self._records[run_id]
                    purged += 1
        return purged

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        with self._lock:
            run = self._run(run_id)
            now = get_clock().now()
            holder, expires = run["lease_owner"], run["lease_expires_at"]
            if holder not in (None, owner, steal_from) and expires is not None and expires > now:
                raise RunLeaseError(run_id, holder, expires)
            run.update(lease_owner=owner, lease_expires_at=now + self.lease_ttl)

    def renew(self, run_id: str, owner: str) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run["lease_owner"] != owner:
                return False
            run["lease_expires_at"] = get_clock().now() + self.lease_ttl
            return True

    def release(self, run_id: str, owner: str) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None and run["lease_owner"] == owner:
                run.update(lease_owner=None, lease_expires_at=None)

    def close(self) -> None:
        pass

    # -- internals ---------------------------------------------------------------------

    def _run(self, run_id: str) -> dict[str, Any]:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(run_id, self.url)
        return run

    @staticmethod
    def _info(run: dict[str, Any]) -> RunInfo:
        return RunInfo(**{k: v for k, v in run.items() if k != "ended_at"})

    def _index(self, run_id: str, add: bool) -> None:
        """Put the run into (or take it out of) the sorted lists that listing and purging read."""
        run = self._runs[run_id]
        entries = [(self._by_status.setdefault(run["status"], []), (run["created_at"], run_id))]
        if run["ended_at"] is not None:
            entries.append((self._ended.setdefault(run["status"], []), (run["ended_at"], run_id)))
        for index, key in entries:
            if add:
                bisect.insort(index, key)
            else:
                del index[bisect.bisect_left(index, key)]

    def _page(self, statuses: tuple[str, ...] | None, limit: int, after: Key | None) -> list[RunInfo]:
        with self._lock:
            keys: list[Key] = []
            for each in statuses if statuses is not None else tuple(self._by_status):
                index = self._by_status.get(each, [])
                end = bisect.bisect_left(index, after) if after is not None else len(index)
                keys += index[max(0, end - limit) : end]
            keys.sort(reverse=True)
            return [self._info(self._runs[run_id]) for _, run_id in keys[:limit]]
