"""``MemoryCheckpointer``: runs kept in this process, the test seam beside SQLite and Redis."""

from __future__ import annotations

import threading
from typing import Any

from ._checkpointer import TERMINAL, Record, RunInfo, RunStatus
from ._clock import get_clock
from ._errors import RunExistsError, RunLeaseError, RunNotFoundError


class MemoryCheckpointer:
    """Keeps runs in a dict: they survive an engine that crashed in-process, not the process."""

    def __init__(self, lease_ttl: float = 30.0) -> None:
        self.url = f"memory://{id(self):x}"
        self.lease_ttl = lease_ttl
        self._runs: dict[str, dict[str, Any]] = {}  # RunInfo fields, mutable
        self._records: dict[str, list[Record]] = {}
        self._lock = threading.Lock()

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        with self._lock:
            if run_id in self._runs:
                raise RunExistsError(run_id)
            now = get_clock().now()
            self._runs[run_id] = {
                "run_id": run_id, "workflow": workflow, "status": "running", "created_at": now, "updated_at": now,
                "last_seq": record.seq, "result": None, "error": None,
                "lease_owner": owner, "lease_expires_at": now + self.lease_ttl,
            }  # fmt: skip
            self._records[run_id] = [record]

    def append(
        self,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        with self._lock:
            run = self._run(run_id)
            if run["lease_owner"] != owner:
                raise RunLeaseError.lost(run_id, run["lease_owner"], run["lease_expires_at"])
            records = self._records[run_id]
            if record.full:
                records.clear()
            records.append(record)
            run.update(updated_at=get_clock().now(), last_seq=record.seq)
            if status is not None:
                run.update(status=status, result=result, error=error)
            if status in TERMINAL:
                run.update(lease_owner=None, lease_expires_at=None)

    def load(self, run_id: str) -> list[Record]:
        with self._lock:
            self._run(run_id)
            return list(self._records[run_id])

    def info(self, run_id: str) -> RunInfo:
        with self._lock:
            return RunInfo(**self._run(run_id))

    def runs(self, limit: int = 100) -> list[RunInfo]:
        with self._lock:
            newest = sorted(self._runs.values(), key=lambda r: r["created_at"], reverse=True)[:limit]
            return [RunInfo(**run) for run in newest]

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

    def _run(self, run_id: str) -> dict[str, Any]:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(run_id, self.url)
        return run
