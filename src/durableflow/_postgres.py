"""``PostgresCheckpointer``: runs in PostgreSQL (psycopg 3), shared by workers on many machines.

Each write is one SQL statement (a chain of data-modifying CTEs), so it is atomic
in autocommit and one round trip: it locks the run's row, checks the lease and the
sequence number, and writes only if both fit. ``append_many`` sends its appends in
one transaction through psycopg's pipeline mode (one round trip). Tables live in
their own schema (``durableflow`` unless told otherwise).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._checkpointer import (
    TERMINAL,
    Append,
    Record,
    RunInfo,
    RunStatus,
    check_status,
    list_runs,
    reported,
    terminal_statuses,
    without_password,
)
from ._clock import get_clock
from ._errors import (
    RunConflictError,
    RunExistsError,
    RunLeaseError,
    RunNotFoundError,
    SnapshotError,
    StoreAuthenticationError,
    StoreUnavailableError,
    install_hint,
)
from ._framing import checked_key

if TYPE_CHECKING:
    import psycopg

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.runs (
    run_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id text COLLATE "C" NOT NULL UNIQUE,
    workflow text NOT NULL,
    status text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    ended_at double precision,
    last_seq bigint NOT NULL,
    result text,
    error text,
    lease_owner text,
    lease_expires_at double precision
);
CREATE INDEX IF NOT EXISTS runs_created ON {s}.runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_status ON {s}.runs (status, created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_ended ON {s}.runs (status, ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {s}.records (
    run_key bigint NOT NULL,
    seq bigint NOT NULL,
    "full" boolean NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (run_key, seq)
);
"""
# Run ids compare byte by byte (COLLATE "C"), as in the other stores, whatever the database's locale.

# Code the server would run at each write to the store's tables: durableflow makes none.
_FOREIGN_CODE = """
SELECT 'trigger ' || c.relname || '.' || t.tgname FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %(s)s AND NOT t.tgisinternal
UNION ALL SELECT 'rule ' || tablename || '.' || rulename FROM pg_rules WHERE schemaname = %(s)s
ORDER BY 1
"""

_CREATE = """
WITH run AS (
    INSERT INTO {s}.runs (run_id, workflow, status, created_at, updated_at, last_seq, lease_owner, lease_expires_at)
    VALUES (%(run_id)s, %(workflow)s, 'running', %(now)s, %(now)s, %(seq)s, %(owner)s, %(expires)s)
    ON CONFLICT (run_id) DO NOTHING RETURNING run_key
)
INSERT INTO {s}.records (run_key, seq, "full", data) SELECT run_key, %(seq)s, %(full)s, %(data)s FROM run RETURNING 1
"""
# Locks the run's row, then writes only if the owner holds the lease and seq is the next record.
# Replies (lease_owner, lease_expires_at, last_seq, stored) as they were; no row for an unknown run.
_APPEND = """
WITH run AS (
    SELECT run_key, lease_owner, lease_expires_at, last_seq FROM {s}.runs WHERE run_id = %(run_id)s FOR UPDATE
), ok AS (
    SELECT run_key FROM run WHERE lease_owner = %(owner)s AND last_seq + 1 = %(seq)s::bigint
), inserted AS (
    INSERT INTO {s}.records (run_key, seq, "full", data) SELECT run_key, %(seq)s, %(full)s, %(data)s FROM ok
), dropped AS (
    DELETE FROM {s}.records WHERE %(full)s::boolean AND run_key IN (SELECT run_key FROM ok) AND seq < %(seq)s
), updated AS (
    UPDATE {s}.runs r SET last_seq = %(seq)s, updated_at = %(now)s,
        status = COALESCE(%(status)s::text, r.status),
        result = CASE WHEN %(status)s::text IS NULL THEN r.result ELSE %(result)s::text END,
        error = CASE WHEN %(status)s::text IS NULL THEN r.error ELSE %(error)s::text END,
        ended_at = CASE WHEN %(status)s::text IS NULL THEN r.ended_at WHEN %(final)s THEN %(now)s END,
        lease_owner = CASE WHEN %(final)s THEN NULL ELSE r.lease_owner END,
        lease_expires_at = CASE WHEN %(final)s THEN NULL ELSE r.lease_expires_at END
    FROM ok WHERE r.run_key = ok.run_key
)
SELECT lease_owner, lease_expires_at, last_seq, EXISTS (SELECT 1 FROM ok) FROM run
"""
_LOAD = """
SELECT rec.seq, rec."full", rec.data FROM {s}.runs r LEFT JOIN LATERAL (
    SELECT seq, "full", data FROM {s}.records WHERE run_key = r.run_key AND seq >= (
        SELECT COALESCE(MAX(seq), 0) FROM {s}.records WHERE run_key = r.run_key AND "full")
) rec ON true
WHERE r.run_id = %s ORDER BY rec.seq
"""
_FIELDS = "run_id, workflow, status, created_at, updated_at, last_seq, result, error, lease_owner, lease_expires_at"
_INFO = "SELECT " + _FIELDS + " FROM {s}.runs WHERE run_id = %s"
_DELETE = """
WITH gone AS (DELETE FROM {s}.runs WHERE run_id = %s RETURNING run_key),
dropped AS (DELETE FROM {s}.records WHERE run_key IN (SELECT run_key FROM gone))
SELECT count(*) FROM gone
"""
_PURGE = """
WITH gone AS (
    DELETE FROM {s}.runs WHERE run_key IN (
        SELECT run_key FROM {s}.runs WHERE status = %(status)s AND ended_at <= %(cutoff)s
        LIMIT %(batch)s FOR UPDATE SKIP LOCKED
    ) RETURNING run_key
), dropped AS (DELETE FROM {s}.records WHERE run_key IN (SELECT run_key FROM gone))
SELECT count(*) FROM gone
"""
_ACQUIRE = """
WITH run AS (
    SELECT run_key, lease_owner, lease_expires_at FROM {s}.runs WHERE run_id = %(run_id)s FOR UPDATE
), taken AS (
    UPDATE {s}.runs r SET lease_owner = %(owner)s, lease_expires_at = %(expires)s FROM run
    WHERE r.run_key = run.run_key AND (run.lease_owner IS NULL OR run.lease_owner IN (%(owner)s, %(steal)s)
        OR run.lease_expires_at IS NULL OR run.lease_expires_at <= %(now)s)
    RETURNING 1
)
SELECT lease_owner, lease_expires_at, EXISTS (SELECT 1 FROM taken) FROM run
"""
_RENEW = "UPDATE {s}.runs SET lease_expires_at = %s WHERE run_id = %s AND lease_owner = %s"
_RELEASE = "UPDATE {s}.runs SET lease_owner = NULL, lease_expires_at = NULL WHERE run_id = %s AND lease_owner = %s"
_PURGE_BATCH = 500  # runs per purge statement, so no transaction holds many rows

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INHERITED: list[Any] = []  # connections a forked child inherited: kept unclosed so the parent's session lives


class PostgresCheckpointer:
    """Runs in PostgreSQL: pass a ``postgresql://`` URL or a libpq connection string.

    ``timeout`` bounds connecting and every statement: a server that is down or
    frozen raises ``StoreUnavailableError`` within it. The tables are created in
    ``schema`` on first use. A password belongs in ``PGPASSWORD`` or ``~/.pgpass``:
    ``url`` (shown in messages) leaves it out. ``key`` seals records with a MAC, as for
    the other checkpointers.
    """

    def __init__(
        self,
        url_or_conninfo: str,
        schema: str = "durableflow",
        lease_ttl: float = 30.0,
        timeout: float = 5.0,
        key: str | bytes | None = None,
    ) -> None:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise ImportError(f"PostgresCheckpointer needs psycopg 3, in {install_hint('postgres')}") from None
        if not _IDENTIFIER.fullmatch(schema):
            raise ValueError(f"schema must be a plain SQL identifier, not {schema!r}")
        self._psycopg = psycopg
        self._conninfo = url_or_conninfo
        try:
            parts = conninfo_to_dict(url_or_conninfo)
        except psycopg.ProgrammingError as exc:  # its message quotes the part it could not read: the password, say
            raise ValueError(_unreadable(url_or_conninfo, exc)) from None
        host, port, dbname = parts.get("host", "localhost"), parts.get("port", 5432), parts.get("dbname", "")
        user = f"{parts.get('user') or ''}{':***' if parts.get('password') else ''}"  # shown in messages: no password
        self.url = f"postgresql://{user}{'@' if user else ''}{host}:{port}/{dbname}"
        self.schema = schema
        self.lease_ttl = lease_ttl
        self.timeout = timeout
        self.key = checked_key(key)  # records are sealed with a MAC under it (default: $DURABLEFLOW_KEY, if set)
        self._sql = {name: text.format(s=schema) for name, text in _STATEMENTS.items()}
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = 0

    # -- the protocol ----------------------------------------------------------------

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        now = get_clock().now()
        params = {
            "run_id": run_id, "workflow": workflow, "now": now, "seq": record.seq, "owner": owner,
            "expires": now + self.lease_ttl, "full": record.full, "data": record.data,
        }  # fmt: skip
        with self._cursor() as cur:
            if cur.execute(self._sql["create"], params).fetchone() is None:
                raise RunExistsError(run_id)

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
        a = Append(run_id, record, owner, status, result, error)
        with self._cursor() as cur:
            reply = cur.execute(self._sql["append"], self._append_params(a)).fetchone()
        refused = self._refusal(a, reply)
        if refused is not None:
            raise refused

    def append_many(self, appends: Sequence[Append]) -> list[BaseException | None]:
        for a in appends:
            check_status(a.status)
        if not appends:
            return []
        with self._cursor() as cur:
            conn = cur.connection
            with conn.pipeline(), conn.transaction():  # BEGIN, the appends and COMMIT in one round trip
                cursors = [conn.execute(self._sql["append"], self._append_params(a)) for a in appends]
            replies = [each.fetchone() for each in cursors]
        return [self._refusal(a, reply) for a, reply in zip(appends, replies, strict=True)]

    def load(self, run_id: str) -> list[Record]:
        with self._cursor() as cur:
            rows = cur.execute(self._sql["load"], (run_id,)).fetchall()
        if not rows:
            raise RunNotFoundError(run_id, self.url)
        return [Record(seq, full, bytes(data)) for seq, full, data in rows if seq is not None]

    def info(self, run_id: str) -> RunInfo:
        with self._cursor() as cur:
            row = cur.execute(self._sql["info"], (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(run_id, self.url)
        return reported(RunInfo(*row))

    def runs(
        self, status: RunStatus | Collection[RunStatus] | None = None, limit: int = 100, after: str | None = None
    ) -> list[RunInfo]:
        return list_runs(self._page, status, limit, after)

    def delete(self, run_id: str) -> bool:
        with self._cursor() as cur:
            return bool(cur.execute(self._sql["delete"], (run_id,)).fetchone()[0])  # type: ignore[index]

    def purge(self, status: RunStatus | Collection[RunStatus] = TERMINAL, older_than: float = 0.0) -> int:
        cutoff = get_clock().now() - older_than
        purged = 0
        for each in terminal_statuses(status):
            while True:
                with self._cursor() as cur:
                    params = {"status": each, "cutoff": cutoff, "batch": _PURGE_BATCH}
                    deleted = int(cur.execute(self._sql["purge"], params).fetchone()[0])  # type: ignore[index]
                purged += deleted
                if deleted < _PURGE_BATCH:
                    break
        return purged

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        now = get_clock().now()
        params = {"run_id": run_id, "owner": owner, "steal": steal_from, "now": now, "expires": now + self.lease_ttl}
        with self._cursor() as cur:
            row = cur.execute(self._sql["acquire"], params).fetchone()
        if row is None:
            raise RunNotFoundError(run_id, self.url)
        if not row[2]:
            raise RunLeaseError(run_id, row[0], row[1])

    def renew(self, run_id: str, owner: str) -> bool:
        with self._cursor() as cur:
            return cur.execute(self._sql["renew"], (get_clock().now() + self.lease_ttl, run_id, owner)).rowcount == 1

    def release(self, run_id: str, owner: str) -> None:
        with self._cursor() as cur:
            cur.execute(self._sql["release"], (run_id, owner))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- internals ---------------------------------------------------------------------

    @staticmethod
    def _append_params(a: Append) -> dict[str, Any]:
        return {
            "run_id": a.run_id, "owner": a.owner, "seq": a.record.seq, "full": a.record.full, "data": a.record.data,
            "now": get_clock().now(), "status": a.status, "result": a.result, "error": a.error,
            "final": a.status in TERMINAL,
        }  # fmt: skip

    def _refusal(self, a: Append, reply: Any) -> Exception | None:
        """The error an append's reply stands for, or None when the record was stored."""
        if reply is None:
            return RunNotFoundError(a.run_id, self.url)
        holder, expires, last_seq, stored = reply
        if stored:
            return None
        if holder != a.owner:
            return RunLeaseError.lost(a.run_id, holder, expires)
        return RunConflictError(a.run_id, a.record.seq, last_seq + 1)

    def _page(self, statuses: tuple[str, ...] | None, limit: int, after: tuple[float, str] | None) -> list[RunInfo]:
        # One indexed range per status, merged here, as an IN list would sort every matching run.
        order = " ORDER BY created_at DESC, run_id DESC LIMIT %(limit)s"
        cursor = " AND (created_at, run_id) < (%(at)s, %(id)s)" if after is not None else ""
        params: dict[str, Any] = {"limit": limit, "at": after[0] if after else 0.0, "id": after[1] if after else ""}
        base = f"SELECT {_FIELDS} FROM {self.schema}.runs WHERE "
        rows: list[Any] = []
        with self._cursor() as cur:
            if statuses is None:
                rows = cur.execute(base + "true" + cursor + order, params).fetchall()
            else:
                for each in statuses:
                    rows += cur.execute(base + "status = %(status)s" + cursor + order, {**params, "status": each})
        rows.sort(key=lambda row: (row[3], row[0].encode()), reverse=True)
        return [RunInfo(*row) for row in rows[:limit]]

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor on this process's connection; any failure of the server or the link is
        ``StoreUnavailableError``, after which the connection is opened anew."""
        psycopg = self._psycopg
        with self._lock:
            try:
                conn = self._connection()
                with conn.cursor() as cur:
                    yield cur
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._drop()
                said = " ".join(str(exc).split())  # libpq's lines and tabs, on one line of an error message
                if _unauthenticated(exc):  # up, but it did not let this client in
                    raise StoreAuthenticationError(
                        f"PostgreSQL at {self.url} refused to authenticate ({said}): check the password (in the URL, "
                        "PGPASSWORD or ~/.pgpass) and the user"
                    ) from None
                raise StoreUnavailableError(
                    f"PostgreSQL at {self.url} is unreachable or did not answer within {self.timeout}s ({said}); "
                    "each write is atomic, so a stored run holds its last checkpoint or, if the server went away "
                    "during this write, this one too: resume once it is back"
                ) from None
            except psycopg.Error as exc:  # up, but refusing: read-only, out of disk, no privilege, no table...
                self._drop()
                said = " ".join(str(exc).split())
                raise StoreUnavailableError(f"PostgreSQL at {self.url} refused the operation ({said})") from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and self._pid != os.getpid():
            _INHERITED.append(self._conn)  # closing it here would end the parent's session
            self._conn = None
        if self._conn is None:
            conn = _timed_connection(self._psycopg, self.timeout).connect(
                self._conninfo, autocommit=True, connect_timeout=max(2, round(self.timeout))
            )
            if conn.execute("SELECT to_regclass(%s)", (f"{self.schema}.records",)).fetchone() == (None,):
                # the first worker creates the tables; a store that has them needs no right to create any
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"durableflow {self.schema}",))
                    conn.execute(_SCHEMA.format(s=self.schema).encode())  # no parameters: many statements
            foreign = [row[0] for row in conn.execute(_FOREIGN_CODE, {"s": self.schema})]
            if foreign:
                conn.close()
                raise SnapshotError(
                    f"PostgreSQL store {self.url} runs code durableflow did not write at its writes "
                    f"({', '.join(foreign)}): they could not be trusted to land. Drop it, or move the runs "
                    "to a schema of their own"
                )
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):  # already broken: nothing more to free
                conn.close()


_STATEMENTS = {
    "create": _CREATE, "append": _APPEND, "load": _LOAD, "info": _INFO, "delete": _DELETE, "purge": _PURGE,
    "acquire": _ACQUIRE, "renew": _RENEW, "release": _RELEASE,
}  # fmt: skip

_connection_classes: dict[float, Any] = {}


def _timed_connection(psycopg: Any, limit: float) -> Any:
    """A psycopg connection class whose every wait on the server gives up after ``limit`` seconds
    (psycopg waits forever by default), so a frozen server fails the call instead of hanging it."""
    cls = _connection_classes.get(limit)
    if cls is None:

        class TimedConnection(psycopg.Connection):  # type: ignore[misc]
            def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
                return super().wait(gen, interval, limit if timeout is None else timeout)

        cls = _connection_classes[limit] = TimedConnection
    return cls


def _unreadable(url_or_conninfo: str, exc: Exception) -> str:
    """Why ``url_or_conninfo`` cannot be read, without its password, which psycopg's message may quote (a
    password typed as it is, not percent-encoded: 'invalid percent-encoded token: "s3%zzcret"')."""
    shown, reason = without_password(url_or_conninfo), str(exc).strip()
    if shown != url_or_conninfo:  # it holds a password: whatever the message quotes may be part of it
        reason = re.sub(r'"[^"]*"', '"***"', reason)
    what = "URL" if "://" in url_or_conninfo else "connection string"
    return (
        f"cannot read the PostgreSQL {what} {shown} ({reason}): in a URL, a % @ : / or # in the password (or another "
        "part) is percent-encoded, as %25 %40 %3A %2F %23; or leave the password out, and set PGPASSWORD or put it "
        "in ~/.pgpass"
    )


def _unauthenticated(exc: Exception) -> bool:
    """Whether the server refused this client's password (or it had none to give). libpq gives a failed
    connection no SQLSTATE: that it asked for a password it was not given is its flag, in any language; a
    wrong password is told by the server's words, in English unless the server speaks another."""
    text = str(exc)
    if getattr(getattr(exc, "pgconn", None), "needs_password", False):
        return True
    return getattr(exc, "sqlstate", None) == "28P01" or any(
        words in text for words in ("password authentication failed", "no password supplied")
    )
