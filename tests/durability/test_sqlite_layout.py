"""The SQLite store's layout: purging reads an index, and a store written with the previous schema opens
(migrated) while a newer one is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from durableflow import Record, SnapshotError, SQLiteCheckpointer

OWNER = "host:1:owner"


def _run(store: SQLiteCheckpointer, run_id: str, status: str = "completed") -> None:
    store.create(run_id, "W", Record(1, True, b"x"), OWNER)
    store.append(run_id, Record(2, False, b"y"), OWNER, status, "1" if status == "completed" else None)  # type: ignore[arg-type]


def test_purge_reads_the_status_index_not_the_whole_table(tmp_path: Path) -> None:
    """Every statement purge runs is answered from an index (at 100,000 runs a scan would take long)."""
    store = SQLiteCheckpointer(tmp_path / "runs.db")
    _run(store, "a")
    statements: list[str] = []
    store._connection().set_trace_callback(statements.append)
    assert store.purge() == 1
    store._connection().set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert selects
    db = sqlite3.connect(tmp_path / "runs.db")
    for statement in selects:
        plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement))
        assert "USING INDEX durableflow_runs_status" in plan, plan
        assert "SCAN durableflow_runs" not in plan, plan


def test_a_store_written_with_the_previous_schema_opens_and_purges(tmp_path: Path) -> None:
    """A file of schema version 4 (with its index of ended runs) is brought to the current version on opening:
    its runs list, load and purge as before."""
    path = tmp_path / "runs.db"
    _run(SQLiteCheckpointer(path), "old")
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "CREATE INDEX durableflow_runs_ended ON durableflow_runs (status, ended_at) WHERE ended_at IS NOT NULL;"
        "PRAGMA user_version = 4;"
    )
    store = SQLiteCheckpointer(path)
    assert [r.seq for r in store.load("old")] == [1, 2]
    assert [info.run_id for info in store.runs(status="completed")] == ["old"]
    assert store.purge() == 1
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "durableflow_runs_ended" not in indexes
    assert db.execute("PRAGMA user_version").fetchone()[0] == 5


def test_a_store_with_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file a later durableflow wrote is not read as if it were this version's: SnapshotError says so."""
    path = tmp_path / "runs.db"
    _run(SQLiteCheckpointer(path), "new")
    sqlite3.connect(path, isolation_level=None).execute("PRAGMA user_version = 6")
    with pytest.raises(SnapshotError, match="schema version 6"):
        SQLiteCheckpointer(path).info("new")
