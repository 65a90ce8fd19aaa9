"""``SQLiteCheckpointer``: the embedded default, one file, safe for many processes on one machine."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from ._checkpointer import (
    TERMINAL,
    Append,
    Record,
    RunInfo,
    RunStatus,
    check_status,
    current_pid,
    list_runs,
    reported,
    terminal_statuses,
)
from ._clock import get_clock
from ._errors import (
    RunConflictError,
    RunExistsError,
    RunLeaseError,
    RunNotFoundError,
    SnapshotError,
    StoreUnavailableError,
)
from ._framing import checked_key

# -- the layout (chosen by tests/benchmarks/bench_sqlite_layout.py) ------------------------
#
# A record's key is ``run_key << 32 | seq``, the rowid of an ordinary table: one B-tree and no index
# to maintain, a run's records are one key range (its last sequence number is one seek), and a large
# record goes to overflow pages as cheaply as a raw insert (a WITHOUT ROWID table made a 1 MB record
# 1.5x slower, and small appends too). The runs table carries one index besides its run ids', by status
# then creation: listing all runs merges the statuses' ranges, and purging reads the range of runs created
# before its cutoff (a run ends after it starts, so those that ended before the cutoff are among them; a
# clock set back in between makes a run count as ended when it started). Each index is one more page that
# a run's first and last commits write: an index of ended runs, for purging, cost every run ~5% of its time.
#
# A plain append is one statement, the fenced insert, so one implicit transaction. It inserts with
# VALUES and a scalar subquery, not INSERT ... SELECT: a SELECT that reads the table it inserts into
# is copied into a temporary table first. A refused append computes the key -1, which the CHECK
# turns into no row (OR IGNORE). A record that is full, or that carries a new status, is the fenced
# insert and the statements that drop the older records or set the run's status, end and lease, in one
# transaction (statements rather than triggers, whose sub-programs cost every insert a little).

_SCHEMA = """
CREATE TABLE IF NOT EXISTS durableflow_runs (
    run_key INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL,
    result TEXT,
    error TEXT,
    lease_owner TEXT,
    lease_expires_at REAL
);
CREATE INDEX IF NOT EXISTS durableflow_runs_status ON durableflow_runs (status, created_at, run_id);
CREATE TABLE IF NOT EXISTS durableflow_records (
    key INTEGER PRIMARY KEY CHECK (key >= 0),
    full INTEGER NOT NULL,
    written_at REAL NOT NULL,
    data BLOB NOT NULL
);
PRAGMA user_version = 5;
"""
_SCHEMA_VERSION = 5
_MIGRATIONS = {4: "DROP INDEX IF EXISTS durableflow_runs_ended; PRAGMA user_version = 5;"}
"""From each older schema version this one opens, the statements that bring it here."""
_SEQ_BITS = 32
_LAST = (1 << _SEQ_BITS) - 1  # the largest sequence number, and the mask that takes it out of a key

# A run's records: keys from run_key << 32 to that + _LAST.
_RANGE = f"BETWEEN r.run_key << {_SEQ_BITS} AND (r.run_key << {_SEQ_BITS}) + {_LAST}"
_LAST_KEY = f"(SELECT MAX(key) FROM durableflow_records WHERE key {_RANGE})"

# The one statement of a checkpoint: inserts nothing unless the owner holds the lease and seq is the next.
_FENCED_INSERT = f"""
INSERT OR IGNORE INTO durableflow_records (key, full, written_at, data) VALUES (coalesce((
    SELECT (r.run_key << {_SEQ_BITS}) + ?1 FROM durableflow_runs r
    WHERE r.run_id = ?4 AND r.lease_owner = ?5 AND (r.run_key << {_SEQ_BITS}) + ?1 = {_LAST_KEY} + 1
), -1), ?2, ?3, ?6)
"""
_DROP_OLDER = "DELETE FROM durableflow_records WHERE key >= (?1 >> 32) << 32 AND key < ?1"
_SET_STATUS = "UPDATE durableflow_runs SET status = ?2, result = ?3, error = ?4, ended_at = NULL WHERE run_key = ?1"
_SET_ENDED = (
    "UPDATE durableflow_runs SET status = ?2, result = ?3, error = ?4, ended_at = ?5, lease_owner = NULL,"
    " lease_expires_at = NULL WHERE run_key = ?1"
)
_NEW_RUN = (
    "INSERT INTO durableflow_runs (run_id, workflow, status, created_at, lease_owner, lease_expires_at)"
    " VALUES (?, ?, 'running', ?, ?, ?)"
)
_FIRST_RECORD = "INSERT INTO durableflow_records (key, full, written_at, data) VALUES (?, ?, ?, ?)"
_INLINE_BLOB = 1 << 16
"""Records up to this size are bound as a bytearray: the sqlite3 module binds one directly, while bytes go
through its adapter lookup first (a copy of a small record costs less than that)."""
_INFO = f"""
SELECT r.run_id, r.workflow, r.status, r.created_at,
       (SELECT written_at FROM durableflow_records WHERE key = {_LAST_KEY}),
       {_LAST_KEY} & {_LAST}, r.result, r.error, r.lease_owner, r.lease_expires_at
FROM durableflow_runs r
"""
_LOAD = f"""
SELECT key & {_LAST}, full, data FROM durableflow_records
WHERE key BETWEEN (SELECT MAX(key) FROM durableflow_records WHERE key BETWEEN ?1 << {_SEQ_BITS}
    AND (?1 << {_SEQ_BITS}) + {_LAST} AND full) AND (?1 << {_SEQ_BITS}) + {_LAST}
ORDER BY key
"""
# The statuses stored, one index seek each (a loose scan), for listing runs of every status.
_STATUSES = """
WITH RECURSIVE s(status) AS (
    SELECT MIN(status) FROM durableflow_runs
    UNION ALL
    SELECT (SELECT MIN(status) FROM durableflow_runs WHERE status > s.status) FROM s WHERE s.status IS NOT NULL
) SELECT status FROM s WHERE status IS NOT NULL
"""
_NEWEST = "ORDER BY r.created_at DESC, r.run_id DESC LIMIT :limit"
_DELETE_RECORDS = f"DELETE FROM durableflow_records WHERE key BETWEEN ?1 << {_SEQ_BITS} AND (?1 << {_SEQ_BITS}) + ?2"
_PURGE_BATCH = 500  # runs per purge transaction, so writers wait for one batch at most


class SQLiteCheckpointer:
    """Runs in a SQLite file, in WAL mode: each checkpoint is one transaction.

    A checkpoint is one fenced insert (the lease and the sequence number are
    checked by the statement that writes); the run's row changes only with its
    status and lease, which keeps a checkpoint close to the cost of a bare commit.

    ``durability="normal"`` (``synchronous=NORMAL``) survives a killed process;
    ``"fsync"`` (``synchronous=FULL``) also survives power loss, for a costlier commit.
    A write waits up to ``timeout`` seconds for another process's transaction to
    end, then raises ``StoreUnavailableError``.
    """

    inline = True  # a local file: cheap enough to write from the event loop

    def __init__(
        self,
        path: str | os.PathLike[str],
        durability: Literal["normal", "fsync"] = "normal",
        lease_ttl: float = 30.0,
        key: str | bytes | None = None,
        timeout: float = 10.0,
    ) -> None:
        if durability not in ("normal", "fsync"):
            raise ValueError(f"durability must be 'normal' or 'fsync', not {durability!r}")
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.durability = durability
        self.lease_ttl = lease_ttl
        self.key = checked_key(key)  # records are sealed with a MAC under it (default: $DURABLEFLOW_KEY, if set)
        self.timeout = timeout  # seconds a write waits for another process's transaction to end
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    # -- the protocol ----------------------------------------------------------------

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        now = get_clock().now()
        with self._transaction() as db:
            try:
                run_key = db.execute(_NEW_RUN, (run_id, workflow, now, owner, now + self.lease_ttl)).lastrowid
            except sqlite3.IntegrityError:
                raise RunExistsError(run_id) from None
            assert run_key is not None
            db.execute(
                _FIRST_RECORD, ((run_key << _SEQ_BITS) + record.seq, 1 if record.full else 0, now, _blob(record))
            )

    def append(
        self,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        if status is None and not record.full:  # one statement, its own transaction
            with self._lock:
                db = self._connection()
                try:
                    refused = self._append(db, run_id, record, owner, None, None, None)
                except sqlite3.Error as exc:
                    raise self._failure(exc, "failed a write") from None
        else:
            check_status(status)
            with self._transaction() as db:
                refused = self._append(db, run_id, record, owner, status, result, error)
        if refused is not None:
            raise refused

    def append_many(self, appends: Sequence[Append]) -> list[BaseException | None]:
        for each in appends:
            check_status(each.status)
        with self._transaction() as db:
            return [self._append(db, a.run_id, a.record, a.owner, a.status, a.result, a.error) for a in appends]

    def load(self, run_id: str) -> list[Record]:
        with self._read() as db:
            row = db.execute("SELECT run_key FROM durableflow_runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(run_id, self.url)
            rows = db.execute(_LOAD, (row[0],)).fetchall()
        # data as stored: a row edited to hold text is reported by the loader, not turned into bytes here
        return [Record(seq, bool(full), data) for seq, full, data in rows]

    def info(self, run_id: str) -> RunInfo:
        with self._read() as db:
            row = db.execute(_INFO + "WHERE r.run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(run_id, self.url)
        return reported(_run_info(row))

    def runs(
        self, status: RunStatus | Collection[RunStatus] | None = None, limit: int = 100, after: str | None = None
    ) -> list[RunInfo]:
        return list_runs(self._page, status, limit, after)

    def delete(self, run_id: str) -> bool:
        with self._transaction() as db:
            row = db.execute("SELECT run_key FROM durableflow_runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return False
            db.execute(_DELETE_RECORDS, (row[0], _LAST))
            db.execute("DELETE FROM durableflow_runs WHERE run_key = ?", (row[0],))
            return True

    def purge(self, status: RunStatus | Collection[RunStatus] = TERMINAL, older_than: float = 0.0) -> int:
        statuses = terminal_statuses(status)
        cutoff = get_clock().now() - older_than
        marks = ", ".join(f"?{i}" for i in range(3, 3 + len(statuses)))  # after the cutoff and the batch size
        purged = 0
        while True:
            with self._transaction() as db:
                keys = db.execute(
                    f"SELECT run_key FROM durableflow_runs WHERE status IN ({marks}) AND created_at <= ?1"
                    " AND ended_at <= ?1 LIMIT ?2",
                    (cutoff, _PURGE_BATCH, *statuses),
                ).fetchall()
                for (run_key,) in keys:
                    db.execute(_DELETE_RECORDS, (run_key, _LAST))
                db.executemany("DELETE FROM durableflow_runs WHERE run_key = ?", keys)
            purged += len(keys)
            if len(keys) < _PURGE_BATCH:
                return purged

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        now = get_clock().now()
        with self._transaction() as db:
            row = db.execute(
                "SELECT lease_owner, lease_expires_at FROM durableflow_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise RunNotFoundError(run_id, self.url)
            holder, expires = row
            if holder not in (None, owner, steal_from) and expires is not None:
                if not isinstance(expires, int | float):  # edited by hand: whether it is held cannot be told
                    raise SnapshotError(
                        f"its lease expiry {expires!r} is not a time (the row was edited); set lease_owner and "
                        "lease_expires_at to NULL once no worker drives it",
                        run_id=run_id,
                    )
                if expires > now:
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
            if self._conn is not None and self._pid == current_pid():
                self._conn.close()
            self._conn = None

    # -- writing -----------------------------------------------------------------------

    def _append(
        self,
        db: sqlite3.Connection,
        run_id: str,
        record: Record,
        owner: str,
        status: str | None,
        result: str | None,
        error: str | None,
    ) -> BaseException | None:
        """One fenced append, and what goes with it (dropping older records, setting the status); its refusal,
        if any, is returned. A record that is full or sets a status is written inside a transaction."""
        now = get_clock().now()
        full = 1 if record.full else 0
        cursor = db.execute(_FENCED_INSERT, (record.seq, full, now, run_id, owner, _blob(record)))
        if not cursor.rowcount:
            return self._refusal(db, run_id, owner, record.seq)
        key = cursor.lastrowid
        if full:
            db.execute(_DROP_OLDER, (key,))
        if status is not None:
            assert key is not None
            if status in TERMINAL:
                db.execute(_SET_ENDED, (key >> _SEQ_BITS, status, result, error, now))
            else:
                db.execute(_SET_STATUS, (key >> _SEQ_BITS, status, result, error))
        return None

    def _refusal(self, db: sqlite3.Connection, run_id: str, owner: str, seq: int) -> Exception:
        """Why the fenced insert wrote nothing: the run is unknown, leased to another, or past this record."""
        row = db.execute(
            f"SELECT r.lease_owner, r.lease_expires_at, {_LAST_KEY} & {_LAST} FROM durableflow_runs r"
            " WHERE r.run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return RunNotFoundError(run_id, self.url)
        holder, expires, last_seq = row
        if holder != owner:
            return RunLeaseError.lost(run_id, holder, expires)
        return RunConflictError(run_id, seq, int(last_seq or 0) + 1)

    # -- reading -----------------------------------------------------------------------

    def _page(self, statuses: tuple[str, ...] | None, limit: int, after: tuple[float, str] | None) -> list[RunInfo]:
        # One indexed range per status, merged by SQLite (an IN list would sort every matching run); the
        # metadata is read for the rows of the page only. Listing every status merges the ranges of the
        # statuses stored, found by one seek each.
        params: dict[str, Any] = {"limit": limit, "at": after[0] if after else 0.0, "id": after[1] if after else ""}
        conditions = ["(r.created_at, r.run_id) < (:at, :id)"] if after is not None else []
        with self._read() as db:
            if statuses is None:
                statuses = tuple(status for (status,) in db.execute(_STATUSES))
            if not statuses:
                return []
            ranges = " UNION ALL ".join(
                "SELECT * FROM (SELECT r.run_key, r.created_at, r.run_id FROM durableflow_runs r "
                + _where([f"r.status = :s{i}", *conditions])
                + _NEWEST
                + ")"
                for i in range(len(statuses))
            )
            query = (
                f"{_INFO}JOIN ({ranges} ORDER BY 2 DESC, 3 DESC LIMIT :limit) AS page ON page.run_key = r.run_key "
                "ORDER BY page.created_at DESC, page.run_id DESC"
            )
            params.update({f"s{i}": status for i, status in enumerate(statuses)})
            rows = db.execute(query, params).fetchall()
        return [_run_info(row) for row in rows]

    # -- connection --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork: a child (the crash harness's kill mode) opens its own.
        if self._conn is None or self._pid != current_pid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _create_private(self.path)
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.timeout)
                conn.text_factory = _text  # text edited into the file by hand must not fail a whole listing
                conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'fsync' else 'NORMAL'}")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, _SCHEMA_VERSION, *_MIGRATIONS):
                    conn.close()
                    raise SnapshotError(
                        f"SQLite store {self.path} has schema version {version}; this durableflow reads version "
                        f"{_SCHEMA_VERSION}. Open it with the durableflow that wrote it"
                    )
                if version in _MIGRATIONS:
                    conn.executescript(f"BEGIN IMMEDIATE; {_MIGRATIONS[version]} COMMIT;")
                elif version != _SCHEMA_VERSION:
                    conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: set once, with the schema
                    conn.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise self._failure(exc, "cannot be opened") from None
            except OSError as exc:
                raise StoreUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from None
            self._conn, self._pid = conn, current_pid()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._failure(exc, "is unavailable") from None
            try:
                yield db
            except sqlite3.Error as exc:
                self._roll_back(db)
                raise self._failure(exc, "failed a write") from None
            except BaseException:
                self._roll_back(db)
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._roll_back(db)
                raise self._failure(exc, "could not commit") from None

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
                raise self._failure(exc, "cannot be read") from None

    def _failure(self, exc: sqlite3.Error, doing: str) -> SnapshotError | StoreUnavailableError:
        """A file that is not a durableflow database (damaged, or another program's) is corrupt data, not a store
        that is down: retrying will not help."""
        if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or str(exc).startswith(
            ("no such table", "no such column")
        ):
            return SnapshotError(
                f"SQLite store {self.path} is corrupt or not a durableflow store ({exc}); restore it from a backup, "
                "or move it aside and start a new one"
            )
        return StoreUnavailableError(f"SQLite store {self.path} {doing}: {exc}")


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only, before SQLite does: its WAL and shared-memory
    files take the database file's permissions. An existing file keeps the permissions it has."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")  # invalid UTF-8 stays visible to check_info, which names it


def _blob(record: Record) -> Any:
    data = record.data
    return bytearray(data) if type(data) is bytes and len(data) <= _INLINE_BLOB else data


def _run_info(row: Any) -> RunInfo:
    """A row of ``_INFO`` as stored (its status not yet derived)."""
    return RunInfo(*row)


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)} " if conditions else ""
