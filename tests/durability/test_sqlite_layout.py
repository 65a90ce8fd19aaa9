"""The SQLite store's layout: purging reads an index, and a store written with the previous schema opens
(migrated) while a newer one is refused."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from durableflow import Record, RunConflictError, RunLeaseError, SnapshotError, SQLiteCheckpointer, _sqlite_layout

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


@pytest.mark.parametrize("version", [4, 5])
def test_a_store_written_with_an_earlier_schema_opens_and_is_written_as_before(tmp_path: Path, version: int) -> None:
    """A file of schema version 4 (with an index of ended runs) or 5 (writing a run's first and last records
    as several statements, without the views that now take them) is brought up to date on opening: its runs
    load, list, end and purge as before."""
    path = tmp_path / "runs.db"
    _run(SQLiteCheckpointer(path), "old")
    SQLiteCheckpointer(path).create("open", "W", Record(1, True, b"x"), OWNER)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "DROP TRIGGER durableflow_new_run; DROP VIEW durableflow_new_run;"
        "DROP TRIGGER durableflow_append; DROP VIEW durableflow_append;"
        + (
            "CREATE INDEX durableflow_runs_ended ON durableflow_runs (status, ended_at) WHERE ended_at IS NOT NULL;"
            if version == 4
            else ""
        )
        + f"PRAGMA user_version = {version};"
    )
    store = SQLiteCheckpointer(path)
    assert [r.seq for r in store.load("old")] == [1, 2]
    store.append("open", Record(2, False, b"y"), OWNER, "completed", "2")
    _run(store, "new")
    assert [info.run_id for info in store.runs(status="completed")] == ["new", "open", "old"]
    assert store.purge() == 3
    names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "durableflow_runs_ended" not in names and {"durableflow_new_run", "durableflow_append"} <= names
    assert db.execute("PRAGMA user_version").fetchone()[0] == 6


def test_a_store_with_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file a later durableflow wrote is not read as if it were this version's: SnapshotError says so."""
    path = tmp_path / "runs.db"
    _run(SQLiteCheckpointer(path), "new")
    sqlite3.connect(path, isolation_level=None).execute("PRAGMA user_version = 7")
    with pytest.raises(SnapshotError, match="schema version 7"):
        SQLiteCheckpointer(path).info("new")


def test_a_refused_end_writes_nothing(tmp_path: Path) -> None:
    """An append that would end the run, refused for its number or its lease, leaves the record, the status
    and the lease as they were (the refusal undoes the statement whole)."""
    store = SQLiteCheckpointer(tmp_path / "runs.db")
    store.create("r", "W", Record(1, True, b"x"), OWNER)
    for record, owner, error in (
        (Record(3, False, b"y"), OWNER, RunConflictError),
        (Record(2, True, b"y"), "host:1:other", RunLeaseError),
    ):
        with pytest.raises(error):
            store.append("r", record, owner, "completed", "1")
        info = store.info("r")
        assert (info.status, info.last_seq, info.lease_owner, info.result) == ("running", 1, OWNER, None)
        assert [r.seq for r in store.load("r")] == [1]


_NO_CHECK = (
    "PRAGMA writable_schema=ON;"
    "UPDATE sqlite_master SET sql = replace(sql, ' CHECK (key >= 0)', '') WHERE name = 'durableflow_records';"
    "PRAGMA writable_schema=OFF;"
)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("DROP TRIGGER durableflow_append", "trigger durableflow_append"),
        (
            "DROP TRIGGER durableflow_append;"
            "CREATE TRIGGER durableflow_append INSTEAD OF INSERT ON durableflow_append BEGIN SELECT 1; END",
            "trigger durableflow_append",
        ),
        (
            "CREATE TRIGGER keep_nothing AFTER INSERT ON durableflow_records"
            " BEGIN DELETE FROM durableflow_records WHERE key = NEW.key; END",
            "trigger keep_nothing",
        ),
        (_NO_CHECK, "table durableflow_records"),
        ("DROP INDEX durableflow_runs_status", "index durableflow_runs_status"),
    ],
    ids=["dropped", "replaced by one that writes nothing", "foreign, dropping each record", "no fence", "no index"],
)
def test_a_store_whose_layout_is_not_its_own_is_refused_before_any_write(tmp_path: Path, edit: str, named: str) -> None:
    """The fence of an append is the layout's own (a CHECK turns a refused key into no row, a trigger raises):
    a table, index or trigger on durableflow's tables that is not the layout's could make appends land nowhere,
    or unfenced, while they report success, so the store is refused on opening, naming what differs."""
    path = tmp_path / "runs.db"
    _run(SQLiteCheckpointer(path), "kept")
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(edit)
    db.close()
    store = SQLiteCheckpointer(path)
    with pytest.raises(SnapshotError, match=f"lacks part of its own \\({named}\\)"):
        store.create("new", "W", Record(1, True, b"x"), OWNER)
    with pytest.raises(SnapshotError, match="move it aside"):
        store.runs()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM durableflow_runs").fetchone() == (1,)


def test_an_applications_own_tables_views_and_triggers_beside_durableflows_change_nothing(tmp_path: Path) -> None:
    """What is not on durableflow's tables is the application's data: the store opens and works as before."""
    path = tmp_path / "runs.db"
    _run(SQLiteCheckpointer(path), "kept")
    sqlite3.connect(path, isolation_level=None).executescript(
        "CREATE TABLE notes (x); CREATE INDEX notes_x ON notes (x); CREATE VIEW noted AS SELECT x FROM notes;"
        "CREATE TRIGGER noting AFTER INSERT ON notes BEGIN SELECT 1; END"
    )
    store = SQLiteCheckpointer(path)
    _run(store, "new")
    assert sorted(r.run_id for r in store.runs()) == ["kept", "new"]


def test_an_opener_that_waited_for_the_lock_migrates_from_the_version_it_then_finds(tmp_path: Path) -> None:
    """Two processes open a file of an older schema while a newer durableflow moves it on: the one that waited
    for the write lock reads the version again under it, and refuses the newer schema instead of rewriting it."""
    path = tmp_path / "runs.db"
    _run(SQLiteCheckpointer(path), "old")
    newer = sqlite3.connect(path, isolation_level=None)
    newer.executescript("DROP TRIGGER durableflow_append; DROP VIEW durableflow_append; PRAGMA user_version = 5;")
    newer.execute("BEGIN IMMEDIATE")  # a newer durableflow, migrating the file
    opened: list[object] = []

    def opener() -> None:
        try:
            opened.append(SQLiteCheckpointer(path).info("old").status)
        except SnapshotError as exc:
            opened.append(exc)

    waiting = threading.Thread(target=opener)
    waiting.start()
    time.sleep(0.3)  # it has read version 5 by now, and waits for the lock
    newer.execute("PRAGMA user_version = 7")
    newer.execute("COMMIT")
    waiting.join()
    assert isinstance(opened[0], SnapshotError) and "schema version 7" in str(opened[0])
    assert newer.execute("PRAGMA user_version").fetchone() == (7,)


def test_a_store_whose_layout_differs_from_its_own_only_in_spacing_opens(tmp_path: Path) -> None:
    """SQLite keeps a CREATE's text as given: a file written while the layout's text was spaced otherwise is the
    same layout, so it opens and its appends are fenced as before (the comparison folds spacing)."""
    path = tmp_path / "runs.db"
    _run(SQLiteCheckpointer(path), "kept")
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "PRAGMA writable_schema=ON;"
        "UPDATE sqlite_master SET sql = replace(sql, '    ', char(10) || '  ') WHERE type = 'trigger';"
        "PRAGMA writable_schema=OFF;"
    )
    db.close()
    store = SQLiteCheckpointer(path)
    store.create("new", "W", Record(1, True, b"x"), OWNER)
    with pytest.raises(RunConflictError):
        store.append("new", Record(3, False, b"y"), OWNER, "completed", "1")
    store.append("new", Record(2, False, b"y"), OWNER, "completed", "1")
    assert [(r.run_id, r.status) for r in store.runs()] == [("new", "completed"), ("kept", "completed")]


def test_the_layouts_own_form_is_built_once_a_process_whichever_store_it_opens_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening compares a store's layout with the layout's own form, built in an in-memory database once per
    process: a process whose first store was new (the crash harness warms up on one, then forks a life for each
    scenario) does not build it again for the next store it opens."""
    SQLiteCheckpointer(tmp_path / "old.db").create("r", "W", Record(1, True, b"x"), OWNER)
    _sqlite_layout.own_layout.cache_clear()
    _sqlite_layout._own_schema.cache_clear()
    SQLiteCheckpointer(tmp_path / "new.db").create("r", "W", Record(1, True, b"x"), OWNER)
    opened: list[object] = []
    connect = sqlite3.connect

    def noting(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(database)
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", noting)
    assert SQLiteCheckpointer(tmp_path / "old.db").info("r").status == "running"
    assert opened == [tmp_path / "old.db"]
