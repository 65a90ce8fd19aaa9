"""The CLI facing hostile stores and input: every case ends in a named error with a clear message and its
exit code, output cannot steer the terminal, and one bad run never hides the others."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from durableflow import SnapshotError, SQLiteCheckpointer

Cli = Callable[..., Any]

# What a terminal would act on: ESC (colours, cursor moves, OSC 8 links, title changes), CSI as one C1 byte,
# a carriage return that overwrites the line, bidi overrides that reorder it, a bell.
STEERING = ["\x1b", "\x9b", "\r", "\u202e", "\u2066", "\x07", "\x08"]


def assert_inert(text: str) -> None:
    """Nothing in ``text`` can steer a terminal, and no traceback leaked."""
    for char in STEERING:
        assert char not in text, f"{char!r} reached the terminal"
    assert "Traceback" not in text


def start(cli: Cli, *extra: str, fields: str = '{"ids": [1]}') -> str:
    outcome = cli("run", "cliflows:Pipeline", "--input", fields, *extra)
    assert outcome.code in (0, 1), outcome.err
    return str(outcome.lines[0])


def edit_run(target: str, **columns: Any) -> None:
    """Change the run's metadata row by hand, as anyone who can write the file could."""
    assignments = ", ".join(f"{column} = ?" for column in columns)
    with sqlite3.connect("durableflow.db") as db:
        db.execute(f"UPDATE durableflow_runs SET {assignments} WHERE run_id = ?", (*columns.values(), target))


# -- terminal output -----------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["order-[/]", "[bold red]x[/]", "a:smile:b", "[link=file:///etc]x[/link]"])
def test_markup_in_a_run_id_is_printed_as_text(cli: Cli, run_id: str) -> None:
    """A run id holding rich markup is shown literally by runs and show, and does not break the listing."""
    start(cli, "--run-id", run_id)
    listed = cli("runs")
    assert listed.code == 0, listed.err
    assert run_id in listed.out
    shown = cli("show", run_id)
    assert shown.code == 0, shown.err
    assert run_id in shown.out


@pytest.mark.parametrize("steer", STEERING)
def test_a_run_id_that_steers_the_terminal_is_refused(cli: Cli, steer: str) -> None:
    """--run-id holding a control or format character exits 2, naming it escaped, before any run starts."""
    outcome = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--run-id", f"id{steer}x")
    assert outcome.code == 2
    assert "must be printable text" in outcome.err
    assert_inert(outcome.err)
    assert not Path("durableflow.db").exists()


@pytest.mark.parametrize("steer", STEERING)
def test_stored_text_that_steers_the_terminal_is_shown_escaped(cli: Cli, steer: str) -> None:
    """Run ids, workflow names, errors and results edited into the store reach runs and show escaped."""
    run_id = start(cli)
    hostile_id = f"evil{steer}[31mid"
    edit_run(
        run_id,
        run_id=hostile_id,
        workflow=f"wf{steer}]0;pwned\x07",
        error=f"boom{steer}[2J",
        result=json.dumps(f"r{steer}"),
        status="failed",
    )
    listed = cli("runs")
    assert listed.code == 0, listed.err
    assert_inert(listed.out + listed.err)
    assert "evil" in listed.out and steer.encode("unicode_escape").decode() in listed.out
    shown = cli("show", hostile_id)
    assert_inert(shown.out + shown.err)
    assert "boom" in shown.out


def test_a_result_that_steers_the_terminal_is_printed_as_json_escapes(cli: Cli) -> None:
    """`run` prints a result holding ESC and a bidi override as JSON escapes, which read back as the same text."""
    Path("evil.py").write_text(
        "from durableflow import StartEvent, StopEvent, Workflow, step\n\n"
        "class Evil(Workflow):\n"
        "    @step\n"
        "    async def go(self, ev: StartEvent) -> StopEvent:\n"
        "        return StopEvent(result='\\x1b[2J\\u202egnp.exe\\x85')\n"
    )
    outcome = cli("run", "evil:Evil")
    assert outcome.code == 0, outcome.err
    assert_inert(outcome.out)
    assert json.loads(outcome.lines[1]) == "\x1b[2J\u202egnp.exe\x85"


def test_an_error_that_steers_the_terminal_is_escaped_on_stderr(cli: Cli) -> None:
    """A step's error message holding escape sequences is printed escaped by `run`."""
    Path("evil_error.py").write_text(
        "from durableflow import StartEvent, StopEvent, Workflow, step\n\n"
        "class Evil(Workflow):\n"
        "    @step\n"
        "    async def go(self, ev: StartEvent) -> StopEvent:\n"
        "        raise RuntimeError('\\x1b]0;owned\\x07\\rfine')\n"
    )
    outcome = cli("run", "evil_error:Evil")
    assert outcome.code == 1
    assert_inert(outcome.err)
    assert "\\x1b]0;owned\\x07\\rfine" in outcome.err


# -- malformed metadata --------------------------------------------------------------------


MALFORMED = [
    {"created_at": "abc"},
    {"created_at": 1e300},
    {"created_at": b"\x00"},
    {"status": "exploded"},
    {"status": 7},
    {"workflow": ""},
    {"workflow": b"\xff\xfe"},
    {"lease_expires_at": "soon", "lease_owner": "w"},
    {"result": b"5", "status": "completed"},
    {"lease_owner": b"\x00", "lease_expires_at": 1.0},
]


@pytest.mark.parametrize("columns", MALFORMED, ids=lambda c: ",".join(f"{k}={v!r}" for k, v in c.items()))
def test_one_malformed_metadata_row_is_listed_as_unreadable_and_the_rest_still_show(
    cli: Cli, columns: dict[str, Any]
) -> None:
    """`runs` lists a run with a malformed row as unreadable (exit 0, a warning), the other runs as usual;
    `show` and `resume` of it exit 5 naming the field."""
    good = start(cli)
    bad = start(cli)
    edit_run(bad, **columns)
    listed = cli("runs")
    assert listed.code == 0, listed.err
    bad_line = next(line for line in listed.lines if bad in line)
    assert "unreadable" in bad_line
    assert "completed" in next(line for line in listed.lines if good in line)
    assert "malformed metadata" in listed.err
    field = next(iter(columns))
    shown = cli("show", bad)
    assert shown.code == 5 and field in shown.err and "Traceback" not in shown.err
    resumed = cli("resume", bad, "--workflow", "cliflows:Pipeline")
    assert resumed.code == 5 and field in resumed.err and "Traceback" not in resumed.err


def test_a_run_without_records_is_unreadable_not_a_crash(cli: Cli) -> None:
    """A metadata row whose records were deleted by hand: runs lists it as unreadable, show and resume exit 5."""
    run_id = start(cli)
    with sqlite3.connect("durableflow.db") as db:
        db.execute("DELETE FROM durableflow_records")
    assert "unreadable" in next(line for line in cli("runs").lines if run_id in line)
    assert cli("show", run_id).code == 5
    resumed = cli("resume", run_id, "--workflow", "cliflows:Pipeline")
    assert resumed.code == 5 and "Traceback" not in resumed.err


@pytest.mark.parametrize(
    ("full", "data"),
    [(0, "text, not bytes"), (0, 12345), (0, b"\x00" * 40), (1, b"DFR1" + b"\x00" * 500), ("yes", b"DFR1")],
    ids=["text data", "integer data", "zeroed record", "zeroed full record", "text flag"],
)
def test_a_foreign_record_row_exits_5(cli: Cli, full: Any, data: Any) -> None:
    """A record row of the wrong types written by hand in place of the last one makes show and resume exit 5."""
    Path("payments-down").touch()
    run_id = start(cli)
    with sqlite3.connect("durableflow.db") as db:
        db.execute(
            "UPDATE durableflow_records SET full = ?, data = ? WHERE key = (SELECT MAX(key) FROM durableflow_records)",
            (full, data),
        )
    shown = cli("show", run_id)
    assert shown.code == 5, shown.err
    assert "Traceback" not in shown.err
    resumed = cli("resume", run_id, "--workflow", "cliflows:Pipeline")
    assert resumed.code == 5, resumed.err
    assert "Traceback" not in resumed.err


def test_a_file_that_is_not_a_database_exits_5(cli: Cli) -> None:
    """A SQLite store whose file is garbage is a snapshot error (exit 5), not an unavailable store."""
    Path("durableflow.db").write_bytes(b"this is not SQLite" * 100)
    for argv in (("runs",), ("show", "x"), ("resume", "x", "--workflow", "cliflows:Pipeline")):
        outcome = cli(*argv)
        assert outcome.code == 5, (argv, outcome.err)
        assert "not a durableflow store" in outcome.err or "corrupt" in outcome.err
        assert "Traceback" not in outcome.err


def test_a_damaged_database_page_exits_5(cli: Cli) -> None:
    """Overwriting the pages after the header leaves a file SQLite calls malformed: exit 5 with what to do."""
    start(cli)
    SQLiteCheckpointer("durableflow.db").close()
    raw = bytearray(Path("durableflow.db").read_bytes())
    for offset in range(4096, len(raw), 997):
        raw[offset] ^= 0xFF
    Path("durableflow.db").write_bytes(bytes(raw))
    for name in ("durableflow.db-wal", "durableflow.db-shm"):
        Path(name).unlink(missing_ok=True)
    outcome = cli("runs")
    assert outcome.code == 5, outcome.err
    assert "Traceback" not in outcome.err


# -- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "levels deep"),
        ('{"a": ' + "[" * 300 + "]" * 300 + "}", "levels deep"),
        ('{"n": 1e999}', "too large for a float"),
        ('{"n": NaN}', "NaN is not a number"),
        ('{"n": -Infinity}', "-Infinity is not a number"),
        ('{"n": ' + "9" * 5000 + "}", "more than 4300 digits"),
        ('{"s": "\\ud800"}', "lone surrogate"),
        ('"just a string"', "must be a JSON object"),
        ("null", "must be a JSON object"),
        ("", "not valid JSON"),
        ('{"_data": {"x": 1}}', "do not start with '_'"),
        ('{"ids": [1]} trailing', "not valid JSON"),
    ],
    ids=[
        "deep array",
        "deep field",
        "huge float",
        "NaN",
        "-Infinity",
        "huge int",
        "surrogate",
        "string",
        "null",
        "empty",
        "private field",
        "trailing",
    ],
)
@pytest.mark.parametrize("option", ["--input", "--respond"])
def test_hostile_json_options_exit_2_with_a_message(cli: Cli, given: str, message: str, option: str) -> None:
    """--input and --respond that could not be stored and read back as they are exit 2 naming the problem,
    before any run is stored."""
    argv = ["run", "cliflows:Approval", "--input", '{"amount": 1}', "--respond", '{"response": "y"}']
    argv[argv.index(option) + 1] = given
    outcome = cli(*argv)
    assert outcome.code == 2, outcome.err
    assert message in outcome.err
    assert option in outcome.err
    assert_inert(outcome.err)
    assert not Path("durableflow.db").exists()


def test_a_start_event_that_cannot_be_stored_exits_8(cli: Cli) -> None:
    """A workflow whose start event holds what a checkpoint cannot keep exits 8 (SerializationError), no traceback."""
    Path("odd.py").write_text(
        "import math\n"
        "from durableflow import StartEvent, StopEvent, Workflow, step\n\n"
        "class Odd(StartEvent):\n"
        "    ratio: float = math.nan\n\n"
        "class Flow(Workflow):\n"
        "    @step\n"
        "    async def go(self, ev: Odd) -> StopEvent:\n"
        "        return StopEvent(result=1)\n"
    )
    outcome = cli("run", "odd:Flow")
    assert outcome.code == 8, outcome.err
    assert "float nan" in outcome.err and "Traceback" not in outcome.err


@pytest.mark.parametrize("which", ["first", "middle"])
def test_show_names_records_deleted_by_hand(cli: Cli, which: str) -> None:
    """A run whose oldest or a middle record was deleted: show marks what is missing and exits 5, like resume."""
    Path("payments-down").touch()
    run_id = start(cli)
    with sqlite3.connect("durableflow.db") as db:
        keys = [key for (key,) in db.execute("SELECT key FROM durableflow_records ORDER BY key")]
        db.execute("DELETE FROM durableflow_records WHERE key = ?", (keys[0] if which == "first" else keys[2],))
    shown = cli("show", run_id)
    assert shown.code == 5
    assert "missing" in shown.out or "no records" in shown.out or "not a full snapshot" in shown.out
    assert cli("resume", run_id, "--workflow", "cliflows:Pipeline").code == 5


@pytest.mark.parametrize("command", [("show",), ("resume", "--workflow", "cliflows:Pipeline")])
def test_a_run_id_that_is_not_text_exits_2(cli: Cli, command: tuple[str, ...]) -> None:
    """A RUN_ID whose bytes are not UTF-8 (Python hands it over with a lone surrogate) exits 2, not a traceback."""
    outcome = cli(command[0], "bad\udcffid", *command[1:])
    assert outcome.code == 2
    assert "not UTF-8 text" in outcome.err and "\\udcff" in outcome.err


@pytest.mark.parametrize(("store", "message"), [("sqlite:///", "needs a file"), ("sqlite:///.", "names a directory")])
def test_a_sqlite_url_without_a_file_exits_2(cli: Cli, store: str, message: str) -> None:
    """--store sqlite:/// with no path, or a directory, is a usage error, not 'no runs' or 'store unavailable'."""
    for argv in (("runs",), ("run", "cliflows:Orders", "--input", '{"order_id": 1}')):
        outcome = cli(*argv, "--store", store)
        assert outcome.code == 2 and message in outcome.err


def test_a_lease_expiry_edited_to_garbage_is_a_snapshot_error(cli: Cli) -> None:
    """A run held by an owner whose lease expiry is not a time cannot be judged free or held: resume exits 5
    saying how to clear it, and the library raises SnapshotError instead of a TypeError."""
    Path("payments-down").touch()
    run_id = start(cli)
    Path("payments-down").unlink()
    edit_run(run_id, lease_owner="other-host:1:w", lease_expires_at="soon")
    assert cli("resume", run_id, "--workflow", "cliflows:Pipeline").code == 5
    with pytest.raises(SnapshotError, match="lease expiry 'soon' is not a time"):
        SQLiteCheckpointer("durableflow.db").acquire(run_id, "me:2:w")


def test_a_redis_run_key_of_another_type_is_unreadable_not_fatal(cli: Cli, redis_url: str) -> None:
    """A Redis run key overwritten with a string: runs lists the others and this one as unreadable, show and
    resume exit 5 (data durableflow did not write), not 6 (store unavailable)."""
    import redis

    Path("payments-down").touch()
    broken = start(cli, "--store", redis_url)
    kept = start(cli, "--store", redis_url)
    client = redis.Redis.from_url(redis_url)
    client.delete(f"durableflow:run:{{{broken}}}")
    client.set(f"durableflow:run:{{{broken}}}", "not a hash")
    client.hset(f"durableflow:run:{{{kept}}}", "lease_owner", "other-host:1:w")
    client.hset(f"durableflow:run:{{{kept}}}", "lease_expires_at", "soon")
    client.close()
    listed = cli("runs", "--store", redis_url)
    assert listed.code == 0, listed.err
    assert "unreadable" in next(line for line in listed.lines if broken in line)
    assert kept in listed.out
    for run_id in (broken, kept):
        assert cli("show", run_id, "--store", redis_url).code == 5
        resumed = cli("resume", run_id, "--workflow", "cliflows:Pipeline", "--store", redis_url)
        assert resumed.code == 5, resumed.err
        assert "Traceback" not in resumed.err
