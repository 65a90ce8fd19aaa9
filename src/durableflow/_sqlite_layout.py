"""The SQLite store's layout: its schema, how older versions of it are brought up to date, its statements.

Chosen by tests/benchmarks/bench_sqlite_layout.py. A record's key is ``run_key << 32 | seq``, the rowid of
an ordinary table: one B-tree and no index to maintain, a run's records are one key range (its last
sequence number is one seek), and a large record goes to overflow pages as cheaply as a raw insert (a
WITHOUT ROWID table made a 1 MB record 1.5x slower, and small appends too). The runs table carries one
index besides its run ids', by status then creation: listing all runs merges the statuses' ranges, and
purging reads the range of runs created before its cutoff (a run ends after it starts, so those that
ended before the cutoff are among them; a clock set back in between makes a run count as ended when it
started). Each index is one more page that a run's first and last commits write: an index of ended
runs, for purging, cost every run ~5% of its time.

Every write is one statement, so one implicit transaction: no BEGIN and COMMIT to send, which is most of
what a run's first and last checkpoints cost above the others. A plain append is the fenced insert. It
inserts with VALUES and a scalar subquery, not INSERT ... SELECT: a SELECT that reads the table it inserts
into is copied into a temporary table first. A refused append computes the key -1, which the CHECK turns
into no row (OR IGNORE). A run's first record, and a record that is full or carries a new status, are an
INSERT into a view whose INSTEAD OF trigger writes the rows (the run's, the record, dropping the older
records, setting the status, the end and the lease); a refused one raises ``REFUSED`` and writes nothing.
The triggers use no SQL function, so they run where the schema is not trusted to call them.
"""

from __future__ import annotations

import functools
import sqlite3

SEQ_BITS = 32
LAST = (1 << SEQ_BITS) - 1  # the largest sequence number, and the mask that takes it out of a key
REFUSED = "durableflow: append refused"
"""The error a refused append through the trigger raises: the caller asks why (``_refusal``)."""

# A run's records: keys from run_key << 32 to that + LAST.
_RANGE = f"BETWEEN r.run_key << {SEQ_BITS} AND (r.run_key << {SEQ_BITS}) + {LAST}"
LAST_KEY = f"(SELECT MAX(key) FROM durableflow_records WHERE key {_RANGE})"

_TRIGGERS = f"""
CREATE VIEW IF NOT EXISTS durableflow_new_run
    (run_id, workflow, created_at, lease_owner, lease_expires_at, seq, full, data)
    AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE 0;
CREATE TRIGGER IF NOT EXISTS durableflow_new_run INSTEAD OF INSERT ON durableflow_new_run BEGIN
    INSERT INTO durableflow_runs (run_id, workflow, status, created_at, lease_owner, lease_expires_at)
        VALUES (NEW.run_id, NEW.workflow, 'running', NEW.created_at, NEW.lease_owner, NEW.lease_expires_at);
    INSERT INTO durableflow_records (key, full, written_at, data) VALUES (
        ((SELECT run_key FROM durableflow_runs WHERE run_id = NEW.run_id) << {SEQ_BITS}) + NEW.seq,
        NEW.full, NEW.created_at, NEW.data);
END;
CREATE VIEW IF NOT EXISTS durableflow_append
    (run_id, owner, seq, full, written_at, data, status, result, error, ended_at)
    AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE 0;
CREATE TRIGGER IF NOT EXISTS durableflow_append INSTEAD OF INSERT ON durableflow_append BEGIN
    SELECT RAISE(ABORT, '{REFUSED}') WHERE NOT EXISTS (
        SELECT 1 FROM durableflow_runs r WHERE r.run_id = NEW.run_id AND r.lease_owner = NEW.owner
        AND (r.run_key << {SEQ_BITS}) + NEW.seq = {LAST_KEY} + 1);
    INSERT INTO durableflow_records (key, full, written_at, data) VALUES (
        ((SELECT run_key FROM durableflow_runs WHERE run_id = NEW.run_id) << {SEQ_BITS}) + NEW.seq,
        NEW.full, NEW.written_at, NEW.data);
    DELETE FROM durableflow_records WHERE NEW.full AND key BETWEEN
        (SELECT run_key FROM durableflow_runs WHERE run_id = NEW.run_id) << {SEQ_BITS}
        AND ((SELECT run_key FROM durableflow_runs WHERE run_id = NEW.run_id) << {SEQ_BITS}) + NEW.seq - 1;
    UPDATE durableflow_runs SET status = NEW.status, result = NEW.result, error = NEW.error, ended_at = NEW.ended_at,
        lease_owner = CASE WHEN NEW.ended_at IS NULL THEN lease_owner END,
        lease_expires_at = CASE WHEN NEW.ended_at IS NULL THEN lease_expires_at END
        WHERE NEW.status IS NOT NULL AND run_id = NEW.run_id;
END;
"""

SCHEMA = f"""
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
{_TRIGGERS}
PRAGMA user_version = 6;
"""
SCHEMA_VERSION = 6
MIGRATIONS = {
    4: f"DROP INDEX IF EXISTS durableflow_runs_ended; {_TRIGGERS} PRAGMA user_version = 6;",
    5: f"{_TRIGGERS} PRAGMA user_version = 6;",
}
"""From each older schema version this one opens, the statements that bring it here."""

_OWN = "SELECT type, name, sql FROM sqlite_master WHERE name LIKE 'durableflow%' OR tbl_name LIKE 'durableflow%'"
# The schema version and the layout as stored, in one query and one string (each field quoted, so no row's
# text can pass for a row boundary): opening a store compares that string with this layout's own, and folds
# spacing row by row only when they differ.
OPENING = f"""
SELECT (SELECT user_version FROM pragma_user_version), (SELECT group_concat(quote(kind) || ',' || quote(name)
    || ',' || quote(sql), ',') FROM (SELECT type AS kind, name, sql FROM ({_OWN}) ORDER BY type, name))
"""


def _schema(db: sqlite3.Connection) -> frozenset[tuple[str, str, str | None]]:
    # SQLite keeps a CREATE's text as given: compared with its spacing folded, an edit of our own layout's
    # spacing does not make a file written before it foreign
    return frozenset((kind, name, sql and " ".join(sql.split())) for kind, name, sql in db.execute(_OWN))


@functools.cache
def _own_schema() -> frozenset[tuple[str, str, str | None]]:
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        return _schema(db)
    finally:
        db.close()


@functools.cache
def own_layout() -> str:
    """This layout as ``OPENING`` reads it from a store that has it."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        return str(db.execute(OPENING).fetchone()[1])
    finally:
        db.close()


def foreign_schema(db: sqlite3.Connection) -> list[str]:
    """The tables, indexes, triggers and views of an opened store, on durableflow's tables or named for them,
    that are not this layout's, missing ones included (an application's own beside them do not count).

    The fence of an append is the layout's (a CHECK turns a refused key into no row; a trigger raises): a
    table or trigger that is not ours could make an append land nowhere, or unfenced, while it reports success.
    """
    return sorted({f"{kind} {name}" for kind, name, _ in _schema(db) ^ _own_schema()})


# The one statement of a plain checkpoint: inserts nothing unless the owner holds the lease and seq is the next.
FENCED_INSERT = f"""
INSERT OR IGNORE INTO durableflow_records (key, full, written_at, data) VALUES (coalesce((
    SELECT (r.run_key << {SEQ_BITS}) + ?1 FROM durableflow_runs r
    WHERE r.run_id = ?4 AND r.lease_owner = ?5 AND (r.run_key << {SEQ_BITS}) + ?1 = {LAST_KEY} + 1
), -1), ?2, ?3, ?6)
"""
NEW_RUN = "INSERT INTO durableflow_new_run VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
"""run id, workflow, now, owner, lease expiry, seq, full, data."""
APPEND = "INSERT INTO durableflow_append VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
"""run id, owner, seq, full, now, data, status, result, error, when it ended (None unless it did)."""
INFO = f"""
SELECT r.run_id, r.workflow, r.status, r.created_at,
       (SELECT written_at FROM durableflow_records WHERE key = {LAST_KEY}),
       {LAST_KEY} & {LAST}, r.result, r.error, r.lease_owner, r.lease_expires_at
FROM durableflow_runs r
"""
LOAD = f"""
SELECT key & {LAST}, full, data FROM durableflow_records
WHERE key BETWEEN (SELECT MAX(key) FROM durableflow_records WHERE key BETWEEN ?1 << {SEQ_BITS}
    AND (?1 << {SEQ_BITS}) + {LAST} AND full) AND (?1 << {SEQ_BITS}) + {LAST}
ORDER BY key
"""
# The statuses stored, one index seek each (a loose scan), for listing runs of every status.
STATUSES = """
WITH RECURSIVE s(status) AS (
    SELECT MIN(status) FROM durableflow_runs
    UNION ALL
    SELECT (SELECT MIN(status) FROM durableflow_runs WHERE status > s.status) FROM s WHERE s.status IS NOT NULL
) SELECT status FROM s WHERE status IS NOT NULL
"""
NEWEST = "ORDER BY r.created_at DESC, r.run_id DESC LIMIT :limit"
DELETE_RECORDS = f"DELETE FROM durableflow_records WHERE key BETWEEN ?1 << {SEQ_BITS} AND (?1 << {SEQ_BITS}) + ?2"
