"""``SQLiteCheckpointer``: the embedded default, one file, safe for many processes on one machine."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from ._checkpointer import TERMINAL, Record, RunInfo, RunStatus
from ._clock import get_clock
from ._errors import RunExistsError, RunLeaseError, RunNotFoundError, StoreUnavailableError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS durableflow_runs (
    run_key INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    result TEXT,
    error TEXT,
    lease_owner TEXT,
    lease_expires_at REAL
);
CREATE INDEX IF NOT EXISTS durableflow_runs_created ON durableflow_runs (created_at);
CREATE TABLE IF NOT EXISTS durableflow_records (
    run_key INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    full INTEGER NOT NULL,
    written_at REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_key, seq)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""
_SCHEMA_VERSION = 1
# Records are keyed by the run's integer key, not its id: a small key keeps a checkpoint to about one page.

_FENCED_INSERT = """
INSERT INTO durableflow_records (run_key, seq, full, written_at, data)
SELECT run_key, ?, 0, ?, ? FROM durableflow_runs WHERE run_id = ? AND lease_owner = ?
"""
_INFO = """
SELECT r.run_id, r.workflow, r.status, r.created_at,
       (SELECT MAX(written_at) FROM durableflow_records WHERE run_key = r.run_key),
       (SELECT MAX(seq) FROM durableflow_records WHERE run_key = r.run_key),
       r.result, r.error, r.lease_owner, r.lease_expires_at
FROM durableflow_runs r
"""


class SQLiteCheckpointer:
    """Runs in a SQLite file, in WAL mode: each checkpoint is one transaction.

    A checkpoint inserts one row (after checking the lease in the same
    transaction); the run's row changes only with its status and lease, which
    keeps a checkpoint close to the cost of a bare single-row commit.

    ``durability="normal"`` (``synchronous=NORMAL``) survives a killed process;
    ``"fsync"`` (``synchronous=FULL``) also survives power loss, for a costlier commit.
    """

    def __init__(
        self, path: str | os.PathLike[str], durability: Literal["normal", "fsync"] = "normal", lease_ttl: float = 30.0
    ) -> None:
        if durability not in ("normal", "fsync"):
            raise ValueError(f"durability must be 'normal' or 'fsync', not {durability!r}")
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.durability = durability
        self.lease_ttl = lease_ttl
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    # -- the protocol ----------------------------------------------------------------

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        now = get_clock().now()
        with self._transaction() as db:
            try:
                run_key = db.execute(
                    "INSERT INTO durableflow_runs (run_id, workflow, status, created_at, lease_owner, lease_expires_at)"
                    " VALUES (?, ?, 'running', ?, ?, ?)",
                    (run_id, workflow, now, owner, now + self.lease_ttl),
                ).lastrowid
            except sqlite3.IntegrityError:
                raise RunExistsError(run_id) from None
            assert run_key is not None
            self._insert(db, run_key, record, now)

    def append(
        self,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        now = get_clock().now()
        if not record.full and status is None:
            # The common checkpoint: one statement, so one implicit transaction, fenced by the lease.
            with self._lock:
                db = self._connection()
                try:
                    inserted = db.execute(_FENCED_INSERT, (record.seq, now, record.data, run_id, owner)).rowcount
                except sqlite3.Error as exc:
                    raise StoreUnavailableError(f"SQLite store {self.path} failed a write: {exc}") from None
                if inserted != 1:
                    self._check_owner(db, run_id, owner)
            return
        with self._transaction() as db:
            run_key = self._check_owner(db, run_id, owner)
            self._insert(db, run_key, record, now)
            if record.full:
                db.execute("DELETE FROM durableflow_records WHERE run_key = ? AND seq < ?", (run_key, record.seq))
            if status in TERMINAL:
                db.execute(
                    "UPDATE durableflow_runs SET status = ?, result = ?, error = ?, lease_owner = NULL,"
                    " lease_expires_at = NULL WHERE run_key = ?",
                    (status, result, error, run_key),
                )
            elif status is not None:
                db.execute(
                    "UPDATE durableflow_runs SET status = ?, result = ?, error = ? WHERE run_key = ?",
                    (status, result, error, run_key),
                )

    def load(self, run_id: str) -> list[Record]:
        with self._read() as db:
            row = db.execute("SELECT run_key FROM durableflow_runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(run_id, self.url)
            rows = db.execute(
                "SELECT seq, full, data FROM durableflow_records WHERE run_key = ?1 AND seq >= "
                "(SELECT COALESCE(MAX(seq), 0) FROM durableflow_records WHERE run_key = ?1 AND full) ORDER BY seq",
                (row[0],),
            ).fetchall()
        return [Record(seq, bool(full), bytes(data)) for seq, full, data in rows]

    def info(self, run_id: str) -> RunInfo:
        with self._read() as db:
            row = db.execute(_INFO + "WHERE r.run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(run_id, self.url)
        return RunInfo(*row)

    def runs(self, limit: int = 100) -> list[RunInfo]:
        with self._read() as db:
            rows = db.execute(_INFO + "ORDER BY r.created_at DESC, r.run_id LIMIT ?", (limit,)).fetchall()
        return [RunInfo(*row) for row in rows]

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        now = get_clock().now()
        with self._transaction() as db:
            row = db.execute(
                "SELECT lease_owner, lease_expires_at FROM durableflow_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise RunNotFoundError(run_id, self.url)
            holder, expires = row
            if holder not in (None, owner, steal_from) and expires is not None and expires > now:
                raise RunLeaseError(run_id, holder, expires)
            db.execute(
                "UPDATE durableflow_runs SET lease_owner = ?, lease_expires_at = ? WHERE run_id = ?",
                (owner, now + self.lease_ttl, run_id),
            )

    def renew(self, run_id: str, owner: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE durableflow_runs SET lease_expires_at = ? WHERE run_id = ? AND lease_owner = ?",
                (get_clock().now() + self.lease_ttl, run_id, owner),
            )
            return cursor.rowcount == 1

    def release(self, run_id: str, owner: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE durableflow_runs SET lease_owner = NULL, lease_expires_at = NULL"
                " WHERE run_id = ? AND lease_owner = ?",
                (run_id, owner),
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- connection --------------------------------------------------------------------

    def _check_owner(self, db: sqlite3.Connection, run_id: str, owner: str) -> int:
        """The run's key, if ``owner`` holds its lease."""
        row = db.execute(
            "SELECT run_key, lease_owner, lease_expires_at FROM durableflow_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFoundError(run_id, self.url)
        if row[1] != owner:
            raise RunLeaseError.lost(run_id, row[1], row[2])
        return int(row[0])

    @staticmethod
    def _insert(db: sqlite3.Connection, run_key: int, record: Record, now: float) -> None:
        db.execute(
            "INSERT INTO durableflow_records (run_key, seq, full, written_at, data) VALUES (?, ?, ?, ?, ?)",
            (run_key, record.seq, record.full, now, record.data),
        )

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork: a child (the crash harness's kill mode) opens its own.
        if self._conn is None or self._pid != os.getpid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
                conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'fsync' else 'NORMAL'}")
                if conn.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
                    conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: set once, with the schema
                    conn.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from None
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"SQLite store {self.path} is unavailable: {exc}") from None
            try:
                yield db
            except sqlite3.Error as exc:
                self._roll_back(db)
                raise StoreUnavailableError(f"SQLite store {self.path} failed a write: {exc}") from None
            except BaseException:
                self._roll_back(db)
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._roll_back(db)
                raise StoreUnavailableError(f"SQLite store {self.path} could not commit: {exc}") from None

    @staticmethod
    def _roll_back(db: sqlite3.Connection) -> None:
        # SQLite may already have rolled back (a full disk, say): a second ROLLBACK would hide the first error.
        if db.in_transaction:
            db.execute("ROLLBACK")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._connection()
            try:
                yield db
            except sqlite3.DatabaseError as exc:
                raise StoreUnavailableError(f"SQLite store {self.path} cannot be read: {exc}") from None
