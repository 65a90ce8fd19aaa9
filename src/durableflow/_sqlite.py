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
from ._sqlite_layout import (
    APPEND,
    DELETE_RECORDS,
    FENCED_INSERT,
    INFO,
    LAST,
    LAST_KEY,
    LOAD,
    MIGRATIONS,
    NEW_RUN,
    NEWEST,
    OPENING,
    REFUSED,
    SCHEMA,
    SCHEMA_VERSION,
    STATUSES,
    foreign_schema,
    own_layout,
)

_INLINE_BLOB = 1 << 16
"""Records up to this size are bound as a bytearray: the sqlite3 module binds one directly, while bytes go
through its adapter lookup first (a copy of a small record costs less than that)."""
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
        row = (run_id, workflow, now, owner, now + self.lease_ttl, record.seq, 1 if record.full else 0, _blob(record))
        lock = self._lock
        lock.acquire()
        try:
            self._connection().execute(NEW_RUN, row)  # the run's row and its first record, in one statement
        except sqlite3.IntegrityError as exc:
            if "durableflow_runs.run_id" in str(exc):
                raise RunExistsError(run_id) from None
            raise self._failure(exc, "failed a write") from None
        except sqlite3.Error as exc:
            raise self._failure(exc, "failed a write") from None
        finally:
            lock.release()

    def append(
        self,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        if status is None and not record.full:  # a plain append, most checkpoints: the fenced insert alone
            lock = self._lock
            lock.acquire()  # (half the instructions of a with statement)
            try:  # one statement, its own transaction
                db = self._connection()
                row = (record.seq, 0, get_clock().now(), run_id, owner, _blob(record))
                if db.execute(FENCED_INSERT, row).rowcount:
                    return
                refusal = self._refusal(db, run_id, owner, record.seq)
            except sqlite3.Error as exc:
                raise self._failure(exc, "failed a write") from None
            finally:
                lock.release()
            raise refusal
        check_status(status)
        lock = self._lock
        lock.acquire()
        try:
            refused = self._append(self._connection(), run_id, record, owner, status, result, error)
        except sqlite3.Error as exc:
            raise self._failure(exc, "failed a write") from None
        finally:
            lock.release()
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
            rows = db.execute(LOAD, (row[0],)).fetchall()
        # data as stored: a row edited to hold text is reported by the loader, not turned into bytes here
        return [Record(seq, bool(full), data) for seq, full, data in rows]

    def info(self, run_id: str) -> RunInfo:
        with self._read() as db:
            row = db.execute(INFO + "WHERE r.run_id = ?", (run_id,)).fetchone()
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
            db.execute(DELETE_RECORDS, (row[0], LAST))
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
                    db.execute(DELETE_RECORDS, (run_key, LAST))
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
        """One fenced append, and what goes with it (dropping older records, setting the status), as one
        statement; its refusal, if any, is returned."""
        now = get_clock().now()
        if status is None and not record.full:
            if not db.execute(FENCED_INSERT, (record.seq, 0, now, run_id, owner, _blob(record))).rowcount:
                return self._refusal(db, run_id, owner, record.seq)
            return None
        ended = now if status in TERMINAL else None
        row = (run_id, owner, record.seq, 1 if record.full else 0, now, _blob(record), status, result, error, ended)
        try:
            db.execute(APPEND, row)
        except sqlite3.IntegrityError as exc:
            if str(exc) != REFUSED:
                raise
            return self._refusal(db, run_id, owner, record.seq)
        return None

    def _refusal(self, db: sqlite3.Connection, run_id: str, owner: str, seq: int) -> Exception:
        """Why the fenced insert wrote nothing: the run is unknown, leased to another, or past this record."""
        row = db.execute(
            f"SELECT r.lease_owner, r.lease_expires_at, {LAST_KEY} & {LAST} FROM durableflow_runs r WHERE r.run_id = ?",
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
                statuses = tuple(status for (status,) in db.execute(STATUSES))
            if not statuses:
                return []
            ranges = " UNION ALL ".join(
                "SELECT * FROM (SELECT r.run_key, r.created_at, r.run_id FROM durableflow_runs r "
                + _where([f"r.status = :s{i}", *conditions])
                + NEWEST
                + ")"
                for i in range(len(statuses))
            )
            query = (
                f"{INFO}JOIN ({ranges} ORDER BY 2 DESC, 3 DESC LIMIT :limit) AS page ON page.run_key = r.run_key "
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
                if not os.path.exists(self.path):  # one stat: the raised errors of mkdir and O_EXCL cost more
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    _create_private(self.path)
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.timeout)
                conn.text_factory = _text  # text edited into the file by hand must not fail a whole listing
                conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'fsync' else 'NORMAL'}")
                version, layout = conn.execute(OPENING).fetchone()
                if version not in (0, SCHEMA_VERSION, *MIGRATIONS):
                    conn.close()
                    raise SnapshotError(
                        f"SQLite store {self.path} has schema version {version}; this durableflow reads version "
                        f"{SCHEMA_VERSION}. Open it with the durableflow that wrote it"
                    )
                if version != SCHEMA_VERSION:
                    if version in MIGRATIONS:
                        _migrate(conn, self.path)
                    else:
                        conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: set once, with the schema
                        conn.executescript(SCHEMA)
                    layout = conn.execute(OPENING).fetchone()[1]  # as it now stands
                foreign = [] if layout == own_layout() else foreign_schema(conn)
                if foreign:
                    conn.close()
                    raise SnapshotError(
                        f"SQLite store {self.path} has a layout durableflow did not write, or lacks part of its own "
                        f"({', '.join(foreign)}): its writes could not be trusted to land. Restore the file from a "
                        "backup, or move it aside and start a new one"
                    )
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


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring an older schema up to date under the write lock, from the version read under it: another process
    may have moved the file on (or to a newer durableflow's schema) while this one waited for the lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version in MIGRATIONS:
            statement = ""
            for piece in MIGRATIONS[version].split(";")[:-1]:
                statement += piece + ";"
                if sqlite3.complete_statement(statement):  # a trigger's body holds semicolons of its own
                    conn.execute(statement)
                    statement = ""
        elif version != SCHEMA_VERSION:
            raise SnapshotError(
                f"SQLite store {path} has schema version {version}; this durableflow reads version "
                f"{SCHEMA_VERSION}. Open it with the durableflow that wrote it"
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        conn.close()
        raise


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
    """A row of ``INFO`` as stored (its status not yet derived)."""
    return RunInfo(*row)


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)} " if conditions else ""
