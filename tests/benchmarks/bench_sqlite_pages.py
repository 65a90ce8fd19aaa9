"""The pages a durable run writes to SQLite, by layout of the runs table, and what opening a store costs.

(1) A 3-step run's four store writes (its first record, two appends, the append that ends it) are the
checkpointer's statements, on four layouts of the runs table (the records table and the statements are the
same in all):

* ``current``: the checkpointer's own, an ordinary table keyed by ``run_key``, a unique index of run ids and
  an index by status, then creation (what listing and purging at 100,000 runs read);
* ``keyed by run id``: ``WITHOUT ROWID`` keyed by the run id, so no index of run ids; ``run_key`` is taken
  from the records' largest key;
* ``keyed by status``: ``WITHOUT ROWID`` keyed by ``(status, created_at, run_id)``, so the table is the status
  index, and a unique index of run ids;
* ``no status index``: the current layout without it, for reference only (listing by status would scan).

For each: the WAL frames (pages) each write adds, by B-tree (read from the WAL file and SQLite's ``dbstat``),
and the CPU µs of a run's four writes against four raw single-row commits (the floor), in alternating batches.

(2) Opening a store in a freshly forked child, as the crash harness does in every resumed life and a worker at
start: the CPU µs and page faults of ``sqlite3.connect``, of its first statement (which reads the schema), and of
``SQLiteCheckpointer``'s whole opening (its checks of the version and the layout) with a first read; medians.

    python tests/benchmarks/bench_sqlite_pages.py [--quick] [--runs 2000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import sqlite3
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _timing import print_table, raw_commit

from durableflow import Record, SQLiteCheckpointer
from durableflow._sqlite_layout import APPEND, FENCED_INSERT, NEW_RUN, SCHEMA, SEQ_BITS
from durableflow._workflow import _new_run_id as new_run_id  # the engine's run ids

_TABLE = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS durableflow_runs") : SCHEMA.index("CREATE INDEX")]
_STATUS = "CREATE INDEX IF NOT EXISTS durableflow_runs_status ON durableflow_runs (status, created_at, run_id);"
_COLUMNS = """    run_key INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL,
    result TEXT,
    error TEXT,
    lease_owner TEXT,
    lease_expires_at REAL,"""
# Without a rowid, a new run's key is one past the largest record's run (every run keeps at least one record).
_NEXT_KEY = f"(coalesce((SELECT MAX(key) FROM durableflow_records) >> {SEQ_BITS}, -1) + 1)"


def _replaced(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def _without_rowid(table: str) -> str:
    schema = _replaced(SCHEMA, _TABLE, table)
    return _replaced(
        schema,
        "INSERT INTO durableflow_runs (run_id, workflow, status, created_at, lease_owner, lease_expires_at)\n"
        "        VALUES (NEW.run_id, NEW.workflow,",
        "INSERT INTO durableflow_runs (run_id, run_key, workflow, status, created_at, lease_owner, lease_expires_at)"
        f"\n        VALUES (NEW.run_id, {_NEXT_KEY}, NEW.workflow,",
    )


LAYOUTS = {
    "current": SCHEMA,
    "keyed by run id": _without_rowid(
        f"CREATE TABLE durableflow_runs (\n    run_id TEXT PRIMARY KEY NOT NULL,\n    status TEXT NOT NULL,\n"
        f"{_COLUMNS.rstrip(',')}\n) WITHOUT ROWID;\n"
    ),
    "keyed by status": _replaced(
        _without_rowid(
            f"CREATE TABLE durableflow_runs (\n    run_id TEXT NOT NULL,\n    status TEXT NOT NULL,\n{_COLUMNS}\n"
            "    PRIMARY KEY (status, created_at, run_id)\n) WITHOUT ROWID;\n"
            "CREATE UNIQUE INDEX durableflow_runs_id ON durableflow_runs (run_id);\n"
        ),
        _STATUS,
        "",
    ),
    "no status index": _replaced(SCHEMA, _STATUS, ""),
}
RECORD = bytearray(200)  # about the size of a 3-step run's records
WRITES = ("first record", "append", "append", "last record")


def _store(path: Path, schema: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


def _writes(db: sqlite3.Connection) -> list[Callable[[str, float], object]]:
    return [
        lambda run_id, now: db.execute(NEW_RUN, (run_id, "ThreeSteps", now, "owner", now + 30, 1, 1, RECORD)),
        lambda run_id, now: db.execute(FENCED_INSERT, (2, 0, now, run_id, "owner", RECORD)),
        lambda run_id, now: db.execute(FENCED_INSERT, (3, 0, now, run_id, "owner", RECORD)),
        lambda run_id, now: db.execute(APPEND, (run_id, "owner", 4, 0, now, RECORD, "completed", '"done"', None, now)),
    ]


def _run(db: sqlite3.Connection) -> Callable[[], None]:
    writes = _writes(db)

    def run() -> None:
        run_id, now = new_run_id(), time.time()
        for write in writes:
            write(run_id, now)

    return run


def _wal_pages(path: Path) -> list[int]:
    """The page number of each frame in the WAL file (a 32-byte header, then frames of a 24-byte header and a page)."""
    data = (path.parent / (path.name + "-wal")).read_bytes()
    size = struct.unpack(">I", data[8:12])[0] if len(data) >= 32 else 4096
    return [struct.unpack(">I", data[at : at + 4])[0] for at in range(32, len(data) - 24 - size + 1, 24 + size)]


def frames(db: sqlite3.Connection, path: Path, runs: int) -> list[collections.Counter[str]]:
    """Per write of a run, the frames it adds to the WAL, by the B-tree each page belongs to (averaged)."""
    db.execute("PRAGMA wal_autocheckpoint=0")
    counts: list[collections.Counter[str]] = [collections.Counter() for _ in WRITES]
    writes = _writes(db)
    for _ in range(runs):
        run_id, now = new_run_id(), time.time()
        for count, write in zip(counts, writes, strict=True):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            write(run_id, now)
            pages = _wal_pages(path)
            marks = ",".join(map(str, pages))
            try:
                owner = dict(db.execute(f"SELECT pageno, name FROM dbstat WHERE pageno IN ({marks})"))
            except sqlite3.OperationalError:  # built without the dbstat table: counted, not named
                owner = {}
            count.update(owner.get(page, "page 1 (file size)" if page == 1 else "new page") for page in pages)
    db.execute("PRAGMA wal_autocheckpoint=1000")
    return [collections.Counter({name: n / runs for name, n in count.items()}) for count in counts]


def layouts(directory: Path, args: argparse.Namespace) -> None:
    contenders: dict[str, Callable[[], None]] = {}
    for name, schema in LAYOUTS.items():
        path = directory / f"{name.replace(' ', '_')}.db"
        db = _store(path, schema)
        run = _run(db)
        for _ in range(args.runs):  # a store that is not empty
            run()
        per_write = frames(db, path, 200)
        total = sum(sum(count.values()) for count in per_write)
        print(f"\n{name}: {total:.2f} WAL frames a run")
        for write, count in zip(WRITES, per_write, strict=True):
            by_tree = ", ".join(f"{tree} {n:.2f}" for tree, n in count.most_common())
            print(f"  {write:<12} {sum(count.values()):.2f}  ({by_tree})")
        contenders[name] = run
    floor = raw_commit(directory / "floor.db")

    def commits() -> None:
        for _ in WRITES:
            floor()

    contenders["4 raw single-row commits (the floor)"] = commits
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        for name in contenders if round_ % 2 == 0 else reversed(contenders):
            run = contenders[name]
            began = time.process_time()
            for _ in range(args.batch):
                run()
            samples[name].append((time.process_time() - began) / args.batch)
    print_table(
        f"a 3-step run's four writes, CPU µs per run (median and range of {args.rounds} rounds)",
        ["layout", "µs", "range"],
        [
            [name, f"{statistics.median(v) * 1e6:.1f}", f"{min(v) * 1e6:.1f}-{max(v) * 1e6:.1f}"]
            for name, v in samples.items()
        ],
    )


def _in_child(fn: Callable[[], object]) -> tuple[float, int]:
    """CPU µs and minor page faults of ``fn()`` in a forked child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        faults, began = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
        fn()
        cost = (time.process_time() - began) * 1e6, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        os.write(write, json.dumps(cost).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        cpu, faults = json.loads(answer.read())
    os.waitpid(pid, 0)
    return cpu, faults


def opening(directory: Path, args: argparse.Namespace) -> None:
    path = directory / "opened.db"
    store = SQLiteCheckpointer(path)
    store.create("r", "W", Record(1, True, b"x"), "owner")
    store.close()

    def connect() -> None:
        sqlite3.connect(path, isolation_level=None)

    def first_statement() -> None:
        sqlite3.connect(path, isolation_level=None).execute("PRAGMA synchronous=NORMAL")

    def checkpointer() -> None:
        SQLiteCheckpointer(path)._connection()

    def and_info() -> None:
        SQLiteCheckpointer(path).info("r")

    rows = []
    for name, fn in (
        ("sqlite3.connect", connect),
        ("and its first statement (reads the schema)", first_statement),
        ("SQLiteCheckpointer: opening, checking version and layout", checkpointer),
        ("the same, then info() of a run", and_info),
    ):
        costs = [_in_child(fn) for _ in range(args.forks)]
        cpu, faults = statistics.median(c[0] for c in costs), statistics.median(c[1] for c in costs)
        rows.append([name, f"{cpu:,.0f}", f"{faults:.0f}"])
    print_table(f"opening a store in a forked child (median of {args.forks})", ["", "CPU µs", "page faults"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--runs", type=int, default=2000, help="runs in each store before measuring")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    args.batch, args.forks = 1000, 30
    if args.quick:
        args.runs, args.rounds, args.batch, args.forks = 100, 3, 100, 5
    with tempfile.TemporaryDirectory(prefix="durableflow-pages-") as directory:
        layouts(Path(directory), args)
        opening(Path(directory), args)


if __name__ == "__main__":
    main()
