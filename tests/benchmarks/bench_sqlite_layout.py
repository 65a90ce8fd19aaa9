"""SQLite record layouts, measured side by side: what a checkpoint, a big write, a run's first and last
checkpoints and a load cost in each, against the floor of a raw single-row commit.

Layouts of the records table (the runs table is the same in all):

* ``without_rowid``: ``PRIMARY KEY (run_key, seq) WITHOUT ROWID``, rows stored inside the key's B-tree;
* ``rowid_index``: an ordinary table with a ``UNIQUE (run_key, seq)`` index beside it;
* ``packed_key``: an ordinary table keyed by ``run_key << 32 | seq`` alone (its rowid), no index.

Ways to write a run's first checkpoint (insert the run, insert its record) and its last (insert the
record, set the outcome, free the lease), on the ``packed_key`` layout:

* ``statements``: ``BEGIN IMMEDIATE``, each statement from Python, ``COMMIT``;
* ``trigger``: one ``INSERT`` into a view whose ``INSTEAD OF`` trigger runs the statements inside SQLite.

and a plain append on ``packed_key`` as ``INSERT ... SELECT`` (which SQLite copies into a temporary table first,
since the SELECT reads the table it inserts into) or as ``INSERT OR IGNORE ... VALUES`` with a scalar subquery
(the checkpointer's), in CPU time as well.

Every write is sequence-fenced (``seq = last + 1``) and lease-fenced, as the checkpointer's are. WAL,
``synchronous=NORMAL``. Batches alternate over several rounds; medians are printed.

Last, ``SQLiteCheckpointer`` itself: ``create``, a plain ``append``, a full one, the final one (with a
status) and ``append_many`` of 10, each against a raw single-row commit, in wall time and in CPU time
(this process's user + system time, which a busy machine disturbs less).

    python tests/benchmarks/bench_sqlite_layout.py [--quick] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _timing import print_table, us

RUNS = """
CREATE TABLE runs (run_key INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, workflow TEXT NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, ended_at REAL, result TEXT, error TEXT,
    lease_owner TEXT, lease_expires_at REAL);
"""
LAYOUTS = {
    "without_rowid": """CREATE TABLE records (run_key INTEGER NOT NULL, seq INTEGER NOT NULL, full INTEGER NOT NULL,
        written_at REAL NOT NULL, data BLOB NOT NULL, PRIMARY KEY (run_key, seq)) WITHOUT ROWID;""",
    "rowid_index": """CREATE TABLE records (run_key INTEGER NOT NULL, seq INTEGER NOT NULL, full INTEGER NOT NULL,
        written_at REAL NOT NULL, data BLOB NOT NULL, UNIQUE (run_key, seq));""",
    "packed_key": """CREATE TABLE records (id INTEGER PRIMARY KEY CHECK (id >= 0), full INTEGER NOT NULL,
        written_at REAL NOT NULL, data BLOB NOT NULL);""",
}
# The fenced append of each layout: inserts nothing unless the owner holds the lease and seq is the next one.
APPEND = {
    "without_rowid": """INSERT INTO records (run_key, seq, full, written_at, data)
        SELECT r.run_key, ?1, 0, ?2, ?3 FROM runs r WHERE r.run_id = ?4 AND r.lease_owner = ?5
        AND ?1 = 1 + (SELECT MAX(seq) FROM records WHERE run_key = r.run_key)""",
    "packed_key": """INSERT INTO records (id, full, written_at, data)
        SELECT (r.run_key << 32) + ?1, 0, ?2, ?3 FROM runs r WHERE r.run_id = ?4 AND r.lease_owner = ?5
        AND (r.run_key << 32) + ?1 = 1 + (SELECT MAX(id) FROM records WHERE id BETWEEN r.run_key << 32
        AND (r.run_key << 32) + 4294967295)""",
}
APPEND["rowid_index"] = APPEND["without_rowid"]
# The same fence on packed_key as INSERT ... VALUES: a SELECT that reads the table it inserts into is copied into
# a temporary table first, a scalar subquery is not. A refused append computes the key -1, which the CHECK ignores.
APPEND_VALUES = """INSERT OR IGNORE INTO records (id, full, written_at, data) VALUES (coalesce((
    SELECT (r.run_key << 32) + ?1 FROM runs r WHERE r.run_id = ?4 AND r.lease_owner = ?5
    AND (r.run_key << 32) + ?1 = 1 + (SELECT MAX(id) FROM records WHERE id BETWEEN r.run_key << 32
    AND (r.run_key << 32) + 4294967295)), -1), 0, ?2, ?3)"""
LOAD = {
    "without_rowid": "SELECT seq, full, data FROM records WHERE run_key = ? ORDER BY seq",
    "packed_key": "SELECT id & 4294967295, full, data FROM records WHERE id BETWEEN ?1 << 32 AND (?1 << 32) "
    "+ 4294967295 ORDER BY id",
}
LOAD["rowid_index"] = LOAD["without_rowid"]
TRIGGERS = """
CREATE VIEW new_run (run_id, workflow, created_at, owner, expires, seq, data) AS SELECT NULL, NULL, NULL, NULL, NULL,
    NULL, NULL;
CREATE TRIGGER new_run_insert INSTEAD OF INSERT ON new_run BEGIN
    INSERT INTO runs (run_id, workflow, status, created_at, lease_owner, lease_expires_at)
        VALUES (NEW.run_id, NEW.workflow, 'running', NEW.created_at, NEW.owner, NEW.expires);
    INSERT INTO records (id, full, written_at, data) VALUES ((last_insert_rowid() << 32) + NEW.seq, 1,
        NEW.created_at, NEW.data);
END;
CREATE VIEW final_append (run_id, owner, seq, now, data, status, result) AS SELECT NULL, NULL, NULL, NULL, NULL, NULL,
    NULL;
CREATE TRIGGER final_append_insert INSTEAD OF INSERT ON final_append BEGIN
    SELECT RAISE(ABORT, 'refused') WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = NEW.run_id
        AND r.lease_owner = NEW.owner AND (r.run_key << 32) + NEW.seq = 1 + (SELECT MAX(id) FROM records
        WHERE id BETWEEN r.run_key << 32 AND (r.run_key << 32) + 4294967295));
    INSERT INTO records (id, full, written_at, data) SELECT (run_key << 32) + NEW.seq, 0, NEW.now, NEW.data
        FROM runs WHERE run_id = NEW.run_id;
    UPDATE runs SET status = NEW.status, result = NEW.result, ended_at = NEW.now, lease_owner = NULL,
        lease_expires_at = NULL WHERE run_id = NEW.run_id;
END;
"""


def connect(path: Path, layout: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(RUNS + LAYOUTS[layout] + (TRIGGERS if layout == "packed_key" else ""))
    db.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, data BLOB)")
    return db


class Bench:
    """One database per layout, each with a run that keeps growing."""

    def __init__(self, directory: Path, layout: str) -> None:
        self.layout = layout
        self.db = connect(directory / f"{layout}.db", layout)
        self.runs = 0
        self.run_id, self.seq = self._new_run(), 1

    def _new_run(self) -> str:
        self.runs += 1
        run_id = f"run-{self.runs}"
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        key = db.execute(
            "INSERT INTO runs (run_id, workflow, status, created_at, lease_owner, lease_expires_at)"
            " VALUES (?, 'w', 'running', ?, 'me', ?)",
            (run_id, time.time(), time.time() + 30),
        ).lastrowid
        assert key is not None
        self._insert_record(key, 1, b"x" * 200)
        db.execute("COMMIT")
        return run_id

    def _insert_record(self, key: int, seq: int, data: bytes) -> None:
        if self.layout == "packed_key":
            self.db.execute("INSERT INTO records VALUES (?, 1, ?, ?)", ((key << 32) + seq, time.time(), data))
        else:
            self.db.execute("INSERT INTO records VALUES (?, ?, 1, ?, ?)", (key, seq, time.time(), data))

    def append(self, data: bytes) -> None:
        self.seq += 1
        inserted = self.db.execute(APPEND[self.layout], (self.seq, time.time(), data, self.run_id, "me")).rowcount
        assert inserted == 1

    def append_values(self, data: bytes) -> None:
        self.seq += 1
        inserted = self.db.execute(APPEND_VALUES, (self.seq, time.time(), data, self.run_id, "me")).rowcount
        assert inserted == 1

    def load(self, run_id: str) -> None:
        key = self.db.execute("SELECT run_key FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
        rows = self.db.execute(LOAD[self.layout], (key,)).fetchall()
        assert len(rows) == 20

    def trim(self) -> None:
        """Drop every record of the current run but its last, as a full record would (not timed)."""
        key = self.db.execute("SELECT run_key FROM runs WHERE run_id = ?", (self.run_id,)).fetchone()[0]
        if self.layout == "packed_key":
            self.db.execute("DELETE FROM records WHERE id BETWEEN ? AND ?", (key << 32, (key << 32) + self.seq - 1))
        else:
            self.db.execute("DELETE FROM records WHERE run_key = ? AND seq < ?", (key, self.seq))

    def create_statements(self) -> None:
        self.run_id, self.seq = self._new_run(), 1

    def create_trigger(self) -> None:
        self.runs += 1
        self.run_id, self.seq = f"run-{self.runs}", 1
        now = time.time()
        self.db.execute(
            "INSERT INTO new_run VALUES (?, 'w', ?, 'me', ?, 1, ?)", (self.run_id, now, now + 30, b"x" * 200)
        )

    def prepare(self, count: int) -> None:
        """Create ``count`` leased runs, each with two records, for the final appends to end (not timed)."""
        self.ready = []
        for _ in range(count):
            self.create_statements()
            self.append(b"x" * 200)
            self.ready.append((self.run_id, self.seq))

    def final_statements(self) -> None:
        run_id, last = self.ready.pop()
        db, now = self.db, time.time()
        db.execute("BEGIN IMMEDIATE")
        key, owner = db.execute("SELECT run_key, lease_owner FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        assert owner == "me"
        stored = db.execute(
            "SELECT MAX(id) FROM records WHERE id BETWEEN ?1 << 32 AND (?1 << 32) + 4294967295", (key,)
        ).fetchone()[0]
        assert stored == (key << 32) + last
        db.execute("INSERT INTO records VALUES (?, 0, ?, ?)", ((key << 32) + last + 1, now, b"y" * 200))
        db.execute(
            "UPDATE runs SET status = 'completed', result = '1', ended_at = ?, lease_owner = NULL,"
            " lease_expires_at = NULL WHERE run_key = ?",
            (now, key),
        )
        db.execute("COMMIT")

    def final_trigger(self) -> None:
        run_id, last = self.ready.pop()
        self.db.execute(
            "INSERT INTO final_append VALUES (?, 'me', ?, ?, ?, 'completed', '1')",
            (run_id, last + 1, time.time(), b"y" * 200),
        )

    def raw_commit(self, data: bytes) -> None:
        self.db.execute("BEGIN")
        self.db.execute("INSERT INTO raw (data) VALUES (?)", (data,))
        self.db.execute("COMMIT")


def measure(
    contenders: dict[str, Callable[[], None]],
    batch: int,
    rounds: int,
    after: Callable[[str], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each contender, batches alternating (order reversed every other round).

    ``after(name)`` runs after each batch, untimed."""
    for fn in contenders.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            gc.collect()
            fn = contenders[name]
            start = clock()
            for _ in range(batch):
                fn()
            samples[name].append((clock() - start) / batch)
            if after is not None:
                after(name)
    return {name: statistics.median(values) for name, values in samples.items()}


class Store:
    """The real checkpointer, with a pool of leased runs for the appends that end one."""

    def __init__(self, directory: Path) -> None:
        from durableflow import SQLiteCheckpointer

        self.store = SQLiteCheckpointer(directory / "store.db")
        self.raw = sqlite3.connect(directory / "raw.db", isolation_level=None)
        self.raw.execute("PRAGMA journal_mode=WAL")
        self.raw.execute("PRAGMA synchronous=NORMAL")
        self.raw.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, data BLOB)")
        self.runs = 0
        self.run_id, self.seq = self._new(), 1
        self.ready: list[tuple[str, int]] = []

    def _new(self) -> str:
        from durableflow import Record

        self.runs += 1
        run_id = f"run-{self.runs}"
        self.store.create(run_id, "bench:Flow", Record(1, True, b"x" * 200), "me")
        return run_id

    def create(self) -> None:
        self.run_id, self.seq = self._new(), 1

    def append(self, full: bool = False) -> None:
        from durableflow import Record

        self.seq += 1
        self.store.append(self.run_id, Record(self.seq, full, b"y" * 200), "me")

    def prepare(self, count: int) -> None:
        self.ready = []
        for _ in range(count):
            self.create()
            self.append()
            self.ready.append((self.run_id, self.seq))
        self.create()  # the plain appends go to a run of their own

    def final(self) -> None:
        from durableflow import Record

        run_id, last = self.ready.pop()
        self.store.append(run_id, Record(last + 1, False, b"z" * 200), "me", status="completed", result="1")

    def many(self) -> None:
        from durableflow import Append, Record

        appends = []
        for _ in range(10):
            self.seq += 1
            appends.append(Append(self.run_id, Record(self.seq, False, b"y" * 200), "me"))
        self.store.append_many(appends)

    def raw_commit(self) -> None:
        self.raw.execute("BEGIN")
        self.raw.execute("INSERT INTO raw (data) VALUES (?)", (b"y" * 200,))
        self.raw.execute("COMMIT")


def checkpointer_costs(directory: Path, batch: int, rounds: int) -> None:
    store = Store(directory)
    rows = []
    for clock in (time.perf_counter, time.process_time):
        store.prepare(batch + 8)  # the warm-up takes one run
        costs = measure(
            {
                "create": store.create,
                "append": store.append,
                "append (full)": lambda: store.append(full=True),
                "final append": store.final,
                "append_many of 10, per append": store.many,
                "raw single-row commit": store.raw_commit,
            },
            batch,
            rounds,
            after=lambda name: store.prepare(batch) if name == "final append" else None,
            clock=clock,
        )
        costs["append_many of 10, per append"] /= 10
        rows.append(costs)
    wall, cpu = rows
    print_table(
        "SQLiteCheckpointer's writes (µs, median; ratio to a raw single-row commit)",
        ["write", "wall µs", "x raw", "CPU µs", "x raw"],
        [
            [name, us(wall[name]), f"{wall[name] / wall['raw single-row commit']:.2f}",
             us(cpu[name]), f"{cpu[name] / cpu['raw single-row commit']:.2f}"]
            for name in wall
        ],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    small_batch, big_batch = (300, 4) if args.quick else (3000, 12)
    small, big = os.urandom(200), os.urandom(1 << 20)
    with tempfile.TemporaryDirectory(prefix="durableflow-layout-") as tmp:
        # A database per layout and workload, so that 1 MB records do not weigh on the small ones' WAL.
        def benches(workload: str) -> dict[str, Bench]:
            (Path(tmp) / workload).mkdir()
            return {layout: Bench(Path(tmp) / workload, layout) for layout in LAYOUTS}

        small_runs, big_runs, load_runs = benches("small"), benches("big"), benches("load")
        for bench in load_runs.values():
            for _ in range(19):
                bench.append(small)
        cpu = time.process_time
        appends = measure({name: (lambda b=b: b.append(small)) for name, b in small_runs.items()}, small_batch, rounds)
        appends_cpu = measure(
            {name: (lambda b=b: b.append(small)) for name, b in small_runs.items()}, small_batch, rounds, clock=cpu
        )
        raw = measure({"raw": lambda: small_runs["packed_key"].raw_commit(small)}, small_batch, rounds)["raw"]
        raw_cpu = measure({"raw": lambda: small_runs["packed_key"].raw_commit(small)}, small_batch, rounds, clock=cpu)
        bigs = measure(
            {name: (lambda b=b: b.append(big)) for name, b in big_runs.items()},
            big_batch,
            rounds,
            after=lambda name: big_runs[name].trim(),
        )
        bigs_cpu = measure(
            {name: (lambda b=b: b.append(big)) for name, b in big_runs.items()},
            big_batch,
            rounds,
            after=lambda name: big_runs[name].trim(),
            clock=cpu,
        )
        raw_big = measure(
            {"raw": lambda: big_runs["packed_key"].raw_commit(big)},
            big_batch,
            rounds,
            after=lambda _: big_runs["packed_key"].db.execute("DELETE FROM raw"),
        )["raw"]
        loads = measure({name: (lambda b=b: b.load(b.run_id)) for name, b in load_runs.items()}, small_batch, rounds)
        rows = [
            [name, us(appends[name]), us(appends_cpu[name]), us(bigs[name]), us(bigs_cpu[name]), us(loads[name])]
            for name in LAYOUTS
        ]
        rows.append(["raw single-row commit", us(raw), us(raw_cpu["raw"]), us(raw_big), "-", "-"])
        print_table(
            "Records layouts: a fenced append of 200 B and of 1 MB, loading a run of 20 records (µs, median)",
            ["layout", "200 B wall", "200 B CPU", "1 MB wall", "1 MB CPU", "load"],
            rows,
        )

        packed = benches("ends")["packed_key"]
        costs = []
        for clock in (time.perf_counter, cpu):
            starts = measure(
                {
                    "create: statements": packed.create_statements,
                    "create: trigger": packed.create_trigger,
                    "plain append: INSERT ... SELECT": lambda: packed.append(small),
                    "plain append: INSERT OR IGNORE ... VALUES": lambda: packed.append_values(small),
                    "raw commit": lambda: packed.raw_commit(small),
                },
                small_batch,
                rounds,
                clock=clock,
            )
            packed.prepare(small_batch + 2)  # the warm-up takes one run each
            ends = measure(
                {"final: statements": packed.final_statements, "final: trigger": packed.final_trigger},
                small_batch,
                rounds,
                after=lambda _: packed.prepare(small_batch),
                clock=clock,
            )
            costs.append(starts | ends)
        wall, cpu_costs = costs
        print_table(
            "A run's first and last checkpoints, and a plain append, on packed_key (µs, median; ratio to a raw commit)",
            ["write", "wall µs", "x raw", "CPU µs", "x raw"],
            [
                [name, us(wall[name]), f"{wall[name] / wall['raw commit']:.2f}",
                 us(cpu_costs[name]), f"{cpu_costs[name] / cpu_costs['raw commit']:.2f}"]
                for name in wall
            ],
        )  # fmt: skip
        (Path(tmp) / "store").mkdir()
        checkpointer_costs(Path(tmp) / "store", small_batch, rounds)
        for group in (small_runs, big_runs, load_runs):
            for bench in group.values():
                bench.db.close()
        packed.db.close()


if __name__ == "__main__":
    main()
