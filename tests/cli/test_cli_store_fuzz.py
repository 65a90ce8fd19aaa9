"""Property-based fuzzing of stores edited by hand, on SQLite and a real redis-server: whatever a metadata
field or a record holds, the loader and the CLI end in success or a named error with its exit code, never
another exception, and nothing they print can steer the terminal."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from durableflow import DurableflowError, RedisCheckpointer, SQLiteCheckpointer
from durableflow._framing import HEADER_SIZE, seal
from durableflow._integrity import check_info

Cli = Callable[..., Any]

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
STEERING = ("\x1b", "\x9b", "\r", "\u202e", "\u2066", "\x07", "\x08")
# 0 done, 1 the run failed (its own data made a step raise), 2 the stored workflow name is not one named,
# 4 a lease edited to look held, 5 the store cannot be loaded, 7 the run waits for input, 9 the run is idle (a
# record edited so that no step is due: before exit 9, resume waited for ever)
ALLOWED = {0, 1, 2, 4, 5, 7, 9}

texts = st.text(max_size=12) | st.sampled_from(
    ["", "[/]", "[bold]x", "\x1b[31m", "\r", "\u202e", "running", "waiting", "completed", "failed", "interrupted",
     "Pipeline", "nan", "1e999", "-1", "9" * 30, "\udcff".encode("utf-8", "surrogateescape").decode("latin-1")]
)  # fmt: skip
numbers = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([0, -1, 1e300, -1e300, 2**62])
)
values = texts | numbers | st.binary(max_size=12) | st.none()


def assert_clean(outcome: Any) -> None:
    """Exit code among those a hostile store may cause, no traceback, nothing that steers a terminal."""
    assert outcome.code in ALLOWED, (outcome.code, outcome.err)
    assert "Traceback" not in outcome.err
    for char in STEERING:
        assert char not in outcome.out + outcome.err, f"{char!r} reached the terminal"


def exercise(cli: Cli, run_id: str, *store: str) -> None:
    """What a user does with a store: list it, show the run, resume it, in that order."""
    assert_clean(cli("runs", *store))
    assert_clean(cli("show", run_id, *store))
    assert_clean(cli("resume", run_id, "--workflow", "cliflows:Pipeline", *store))


def checked_directly(open_store: Callable[[], Any], run_id: str) -> None:
    """The library's own reading: info() either passes check_info or raises SnapshotError; runs() never fails."""
    store = open_store()
    try:
        with contextlib.suppress(DurableflowError):
            check_info(store.info(run_id), run_id)
        for info in store.runs():
            with contextlib.suppress(DurableflowError):
                check_info(info)
    finally:
        store.close()


def reseal(data: bytes, run_id: str, seq: int, change: Callable[[Any], Any]) -> bytes:
    """The record's JSON body changed by ``change`` and sealed again with a valid checksum, as a forger would."""
    try:
        body = json.loads(data[HEADER_SIZE:])
    except ValueError:  # not a record's body (a Redis item with its head): damage it some other way
        return data[:-1]
    return seal(json.dumps(change(body)), run_id, seq, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


@st.composite
def record_damage(draw: st.DrawFn) -> Callable[[bytes, str, int], bytes]:
    """A way of damaging one stored record: bytes flipped, cut, replaced, or its JSON edited and resealed."""
    how = draw(st.sampled_from(["flip", "cut", "random", "edit field", "drop field", "wrong type"]))
    at = draw(st.integers(0, 10_000))
    noise = draw(st.binary(max_size=40))
    value = draw(json_values)
    field = draw(
        st.sampled_from(["status", "next_eid", "deadline", "error", "state", "events", "deliveries", "buffers",
                         "effects", "awaiting", "result", "seq", "run_id", "kind", "at", "format", "workflow"])
    )  # fmt: skip

    def damage(data: bytes, run_id: str, seq: int) -> bytes:
        if how == "flip":
            raw = bytearray(data)
            raw[at % len(raw)] ^= 0x5A
            return bytes(raw)
        if how == "cut":
            return data[: at % len(data)]
        if how == "random":
            return noise
        if how == "drop field":
            return reseal(data, run_id, seq, lambda body: {k: v for k, v in body.items() if k != field})
        if how == "wrong type":
            return reseal(data, run_id, seq, lambda body: {**body, field: [value]})
        return reseal(data, run_id, seq, lambda body: {**body, field: value})

    return damage


# -- SQLite ----------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_run(cli: Cli, project: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A failed run of the pipeline whose cause is fixed (so resume completes it), and a reset to that store."""
    (project / "payments-down").touch()
    outcome = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1, 2]}')
    assert outcome.code == 1
    (project / "payments-down").unlink()
    SQLiteCheckpointer(project / "durableflow.db").close()
    pristine = project / "pristine.db"
    shutil.copyfile(project / "durableflow.db", pristine)

    def reset() -> None:  # through SQLite, so no connection finds its WAL replaced under it
        with sqlite3.connect(pristine) as source, sqlite3.connect(project / "durableflow.db") as target:
            source.backup(target)

    yield outcome.lines[0], reset


SQLITE_COLUMNS = ["workflow", "status", "created_at", "result", "error", "lease_owner", "lease_expires_at"]


@FUZZ
@given(edits=st.dictionaries(st.sampled_from(SQLITE_COLUMNS), values, min_size=1, max_size=3))
def test_sqlite_metadata_edited_by_hand(
    cli: Cli, sqlite_run: tuple[str, Callable[[], None]], edits: dict[str, Any]
) -> None:
    """Any values written into a SQLite run row's columns leave runs, show and resume ending cleanly."""
    run_id, reset = sqlite_run
    reset()
    assignments = ", ".join(f"{column} = ?" for column in edits)
    try:
        with sqlite3.connect("durableflow.db") as db:
            db.execute(f"UPDATE durableflow_runs SET {assignments} WHERE run_id = ?", (*edits.values(), run_id))
    except sqlite3.IntegrityError:  # NULL in a NOT NULL column: SQLite itself refuses that edit
        return
    checked_directly(lambda: SQLiteCheckpointer("durableflow.db"), run_id)
    exercise(cli, run_id)


@FUZZ
@given(row=st.fixed_dictionaries({column: values for column in SQLITE_COLUMNS}), run_id=texts)
def test_a_foreign_sqlite_row_does_not_hide_the_real_run(
    cli: Cli, sqlite_run: tuple[str, Callable[[], None]], row: dict[str, Any], run_id: str
) -> None:
    """A row inserted by something else, with any values and no records, is listed as unreadable (or as what it
    claims) while the real run still lists, shows and resumes."""
    real, reset = sqlite_run
    reset()
    try:
        with sqlite3.connect("durableflow.db") as db:
            db.execute(
                f"INSERT INTO durableflow_runs (run_id, {', '.join(row)}) VALUES (?{', ?' * len(row)})",
                (run_id, *row.values()),
            )
    except sqlite3.IntegrityError:
        return
    listed = cli("runs")
    assert_clean(listed)
    assert real in listed.out
    checked_directly(lambda: SQLiteCheckpointer("durableflow.db"), real)
    exercise(cli, real)


@FUZZ
@given(damage=record_damage(), which=st.integers(0, 20))
def test_sqlite_records_edited_by_hand(
    cli: Cli, sqlite_run: tuple[str, Callable[[], None]], damage: Callable[[bytes, str, int], bytes], which: int
) -> None:
    """A SQLite record damaged or rewritten with a valid checksum makes show and resume exit 5 or work."""
    run_id, reset = sqlite_run
    reset()
    with sqlite3.connect("durableflow.db") as db:
        rows = db.execute("SELECT key, data FROM durableflow_records ORDER BY key").fetchall()
        key, data = rows[which % len(rows)]
        db.execute(
            "UPDATE durableflow_records SET data = ? WHERE key = ?", (damage(data, run_id, key & 0xFFFFFFFF), key)
        )
    exercise(cli, run_id)


# -- Redis -----------------------------------------------------------------------------------------


@pytest.fixture
def redis_run(cli: Cli, project: Path, redis_url: str) -> Iterator[tuple[str, Any, Callable[[], None]]]:
    """The same failed run on a real redis-server, a raw client, and a reset of its keys to that state."""
    import redis

    (project / "payments-down").touch()
    outcome = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1, 2]}', "--store", redis_url)
    assert outcome.code == 1
    (project / "payments-down").unlink()
    client = redis.Redis.from_url(redis_url)
    pristine = {key: client.dump(key) for key in client.keys("*")}

    def reset() -> None:
        client.flushdb()
        for key, dumped in pristine.items():
            client.restore(key, 0, dumped)

    yield outcome.lines[0], client, reset
    client.close()


REDIS_FIELDS = ["workflow", "status", "created_at", "updated_at", "last_seq", "result", "error", "lease_owner",
                "lease_expires_at"]  # fmt: skip


@FUZZ
@given(edits=st.dictionaries(st.sampled_from(REDIS_FIELDS), st.binary(max_size=12) | st.none() | texts, min_size=1))
@example(edits={"last_seq": "9" * 30})  # beyond any record number: refused by info(), not by the append
def test_redis_metadata_edited_by_hand(
    cli: Cli, redis_run: tuple[str, Any, Callable[[], None]], redis_url: str, edits: dict[str, Any]
) -> None:
    """Any bytes written into (or fields deleted from) a Redis run hash leave runs, show and resume ending
    cleanly; the library's info() and runs() name the defect instead of failing the listing."""
    run_id, client, reset = redis_run
    reset()
    key = f"durableflow:run:{{{run_id}}}"
    for field, value in edits.items():
        if value is None:
            client.hdel(key, field)
        else:
            client.hset(key, field, value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value)
    checked_directly(lambda: RedisCheckpointer(redis_url), run_id)
    exercise(cli, run_id, "--store", redis_url)


@FUZZ
@given(damage=record_damage(), which=st.integers(0, 20), head=st.booleans())
def test_redis_records_edited_by_hand(
    cli: Cli,
    redis_run: tuple[str, Any, Callable[[], None]],
    redis_url: str,
    damage: Callable[[bytes, str, int], bytes],
    which: int,
    head: bool,
) -> None:
    """A Redis record damaged (its 9-byte head included, or only its sealed bytes) makes show and resume exit 5
    or work."""
    run_id, client, reset = redis_run
    reset()
    key = f"durableflow:records:{{{run_id}}}"
    items = client.lrange(key, 0, -1)
    index = which % len(items)
    item = items[index]
    seq = int.from_bytes(item[:8], "big")
    changed = damage(item, run_id, seq) if head else item[:9] + damage(item[9:], run_id, seq)
    client.lset(key, index, changed)
    exercise(cli, run_id, "--store", redis_url)
