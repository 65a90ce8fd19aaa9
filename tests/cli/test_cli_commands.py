"""The ``durableflow`` command driven in-process through ``durableflow.cli.main(argv)``."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from durableflow import SQLiteCheckpointer

Cli = Callable[..., Any]  # the ``cli`` fixture: argv in, an outcome with .code, .out, .err, .lines out

RESULT = {"converted": [1, 2, 3], "receipt": "paid for 3"}


def start(cli: Cli, *extra: str) -> str:
    """Run the pipeline over three documents and return its run id."""
    outcome = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1, 2, 3]}', *extra)
    assert outcome.code == 0, outcome.err
    return outcome.lines[0]


def rows(out: str) -> dict[str, str]:
    """The rows of ``show``'s checkpoint table, by sequence number."""
    found = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0].isdigit() and len(cells) > 2 and cells[1] in ("full", "delta"):
            found[cells[0]] = line
    return found


# -- run, runs, show, resume ----------------------------------------------------------------


def test_run_prints_the_run_id_then_the_result_as_json(cli: Cli) -> None:
    """`run` prints the new run's id on the first line and its result as JSON on the second, exiting 0."""
    outcome = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1, 2, 3]}')
    assert outcome.code == 0, outcome.err
    run_id, result = outcome.lines
    assert len(run_id) == 32 and int(run_id, 16) >= 0
    assert json.loads(result) == RESULT
    assert outcome.err == ""


def test_runs_lists_the_run_with_workflow_status_and_result(cli: Cli) -> None:
    """`runs` shows each stored run with its workflow path, status, last sequence number and result."""
    run_id = start(cli)
    outcome = cli("runs")
    assert outcome.code == 0, outcome.err
    line = next(line for line in outcome.lines if run_id in line)
    assert "Pipeline" in line and "completed" in line
    assert '{"converted": [1, 2, 3], "receipt": "paid for 3"}' in line
    last_seq = len(SQLiteCheckpointer("durableflow.db").load(run_id))
    assert f" {last_seq} " in line


def test_show_names_what_caused_each_checkpoint_and_what_it_changed(cli: Cli) -> None:
    """`show` prints the run's metadata and, per record, its kind, its cause and what it changed."""
    run_id = start(cli)
    outcome = cli("show", run_id)
    assert outcome.code == 0, outcome.err
    assert run_id in outcome.out and "Pipeline" in outcome.out and "completed" in outcome.out
    table = rows(outcome.out)
    assert "full" in table["1"] and "start" in table["1"] and "pending convert<-1" in table["1"]
    checkpoints = [line for line in table.values() if "ctx.checkpoint in convert" in line]
    assert len(checkpoints) == 3 and all("state set converted_ids" in line for line in checkpoints)
    step = next(line for line in table.values() if "step convert" in line)
    assert "events added 2 Converted" in step and "events consumed 1" in step
    assert "deliveries added charge<-2" in step and "deliveries finished convert<-1" in step
    effect = next(line for line in table.values() if "effect charge" in line)
    assert "effects recorded charge" in effect
    last = table[max(table, key=int)]
    assert "status completed" in last and '"receipt": "paid for 3"' in last


def test_resume_of_a_completed_run_prints_its_result(cli: Cli) -> None:
    """`resume` of a completed run prints the same id and result as the run did, and runs nothing again."""
    run_id = start(cli)
    outcome = cli("resume", run_id, "--workflow", "cliflows:Pipeline")
    assert outcome.code == 0, outcome.err
    assert outcome.lines[0] == run_id
    assert json.loads(outcome.lines[1]) == RESULT
    assert Path("side_effects.log").read_text().split() == ["1", "2", "3"]


def test_a_factory_and_a_chosen_run_id_are_accepted(cli: Cli) -> None:
    """`run` takes a zero-argument factory as the target and stores the run under `--run-id`."""
    outcome = cli("run", "cliflows:make_pipeline", "--input", '{"ids": [7]}', "--run-id", "order-7")
    assert outcome.code == 0, outcome.err
    assert outcome.lines == ["order-7", '{"converted": [7], "receipt": "paid for 1"}']
    assert SQLiteCheckpointer("durableflow.db").info("order-7").status == "completed"


def test_memory_store_runs_without_touching_the_disk(cli: Cli) -> None:
    """`run --store memory://` completes the run and leaves no SQLite file behind."""
    outcome = cli("run", "cliflows:Pipeline", "--input", '{"ids": [4]}', "--store", "memory://")
    assert outcome.code == 0, outcome.err
    assert json.loads(outcome.lines[1]) == {"converted": [4], "receipt": "paid for 1"}
    assert not Path("durableflow.db").exists()


# -- runs that end without a result ---------------------------------------------------------


def test_failed_run_exits_1_and_resume_after_the_fix_completes_it(cli: Cli) -> None:
    """A run whose step raises exits 1 naming the error; once the cause is fixed, `resume` finishes it."""
    Path("payments-down").touch()
    failed = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1, 2, 3]}')
    assert failed.code == 1
    run_id = failed.lines[0]
    assert f"run {run_id} failed: RuntimeError: payment service is down" in failed.err
    assert f"durableflow resume {run_id} --workflow cliflows:Pipeline" in failed.err
    assert "Traceback" not in failed.err
    assert SQLiteCheckpointer("durableflow.db").info(run_id).status == "failed"

    Path("payments-down").unlink()
    resumed = cli("resume", run_id, "--workflow", "cliflows:Pipeline")
    assert resumed.code == 0, resumed.err
    assert json.loads(resumed.lines[1]) == RESULT
    assert Path("side_effects.log").read_text().split() == ["1", "2", "3"]  # no document converted twice


def test_timed_out_run_exits_1(cli: Cli) -> None:
    """A run that passes its deadline exits 1 and says it timed out."""
    outcome = cli("run", "cliflows:slow")
    assert outcome.code == 1
    assert "timed out" in outcome.err and "Traceback" not in outcome.err


# -- errors scripts can tell apart ----------------------------------------------------------


@pytest.mark.parametrize("command", ["resume", "show"])
def test_unknown_run_id_exits_3(cli: Cli, command: str) -> None:
    """`resume` and `show` of a run the store does not hold exit 3 and say so."""
    start(cli)
    outcome = cli(command, "no-such-run")
    assert outcome.code == 3
    assert "no run 'no-such-run'" in outcome.err and "Traceback" not in outcome.err


def test_unknown_run_in_a_missing_sqlite_file_exits_3_without_creating_it(cli: Cli) -> None:
    """Asking a SQLite file that does not exist for a run exits 3 and does not create the file."""
    outcome = cli("resume", "abc", "--store", "sqlite:///elsewhere.db")
    assert outcome.code == 3
    assert "no run 'abc': sqlite:///elsewhere.db does not exist" in outcome.err
    assert not Path("elsewhere.db").exists()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ('{"ids": [1,', "--input is not valid JSON"),
        ("[1, 2]", "--input must be a JSON object"),
    ],
)
def test_bad_input_json_exits_2_and_starts_nothing(cli: Cli, given: str, message: str) -> None:
    """`--input` that is not a JSON object exits 2 before any run is stored."""
    outcome = cli("run", "cliflows:Pipeline", "--input", given)
    assert outcome.code == 2
    assert message in outcome.err and "Traceback" not in outcome.err
    assert not Path("durableflow.db").exists()


def test_input_that_does_not_fit_a_typed_start_event_exits_2(cli: Cli) -> None:
    """Start fields that fail the workflow's own StartEvent model exit 2 naming the field, without a traceback."""
    outcome = cli("run", "cliflows:Orders", "--input", '{"order_id": "seven"}')
    assert outcome.code == 2
    assert "--input does not fit OrderPlaced: order_id:" in outcome.err and "Traceback" not in outcome.err
    assert cli("run", "cliflows:Orders", "--input", '{"order_id": 7}').lines[1] == "7"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("cliflows", "is not MODULE:Workflow"),
        ("no_such_module:Flow", "cannot import 'no_such_module'"),
        ("cliflows:Missing", "has no attribute 'Missing'"),
        ("cliflows:NotAWorkflow", "is not a Workflow subclass or a factory of one"),
        ("cliflows:returns_text", "returned a str, not a Workflow"),
        ("cliflows:pipeline_instance", "is a Workflow instance"),
    ],
)
def test_bad_workflow_target_exits_2(cli: Cli, target: str, message: str) -> None:
    """A MODULE:Workflow that cannot be imported or is not a Workflow exits 2 with one clear line."""
    outcome = cli("run", target, "--input", "{}")
    assert outcome.code == 2
    assert message in outcome.err
    assert "Traceback" not in outcome.err


def test_reusing_a_run_id_exits_2(cli: Cli) -> None:
    """`run --run-id` with an id already stored exits 2 and points to `resume`."""
    start(cli, "--run-id", "taken")
    outcome = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--run-id", "taken")
    assert outcome.code == 2
    assert "durableflow resume taken" in outcome.err


def test_reusing_a_run_id_on_redis_exits_2_before_anything_runs(cli: Cli, redis_url: str) -> None:
    """On Redis, where the store is called off the event loop, a taken run id is refused as on SQLite: exit 2,
    no run id printed, no step run."""
    run_id = f"taken-{uuid.uuid4().hex[:8]}"
    start(cli, "--store", redis_url, "--run-id", run_id)
    Path("side_effects.log").unlink()
    outcome = cli("run", "cliflows:Pipeline", "--input", '{"ids": [7]}', "--run-id", run_id, "--store", redis_url)
    assert outcome.code == 2, outcome.err
    assert f"durableflow resume {run_id}" in outcome.err
    assert outcome.out == "" and not Path("side_effects.log").exists()


def test_an_empty_run_id_exits_2(cli: Cli) -> None:
    outcome = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--run-id", "")
    assert outcome.code == 2
    assert "argument --run-id: must not be empty" in outcome.err
    assert not Path("durableflow.db").exists()


def test_run_leased_by_another_worker_exits_4_even_after_waiting(cli: Cli) -> None:
    """`resume` of a run another live worker holds exits 4; with `--wait` it first waits that long."""
    Path("payments-down").touch()
    run_id = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}').lines[0]
    Path("payments-down").unlink()
    SQLiteCheckpointer("durableflow.db").acquire(run_id, "another-host:4242:worker")

    outcome = cli("resume", run_id, "--workflow", "cliflows:Pipeline")
    assert outcome.code == 4
    assert "leased by worker another-host:4242:worker" in outcome.err and "--wait" in outcome.err

    began = time.monotonic()
    waited = cli("resume", run_id, "--workflow", "cliflows:Pipeline", "--wait", "0.5")
    assert waited.code == 4
    assert time.monotonic() - began >= 0.4


def test_corrupted_record_makes_resume_exit_5_and_show_an_error_row(cli: Cli) -> None:
    """A record whose bytes were altered makes `resume` exit 5 and shows as an error row in `show`."""
    Path("payments-down").touch()  # a failed run: resuming it reads its records (a completed one prints its result)
    failed = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1, 2, 3]}')
    assert failed.code == 1, failed.err
    run_id = failed.lines[0]
    with sqlite3.connect("durableflow.db") as db:
        (data,) = db.execute(
            "SELECT data FROM durableflow_records"
            " WHERE key = (SELECT (run_key << 32) + 2 FROM durableflow_runs WHERE run_id = ?)",
            (run_id,),
        ).fetchone()
        tampered = data.replace(b"converted_ids", b"CONVERTED_IDS")
        db.execute(
            "UPDATE durableflow_records SET data = ?"
            " WHERE key = (SELECT (run_key << 32) + 2 FROM durableflow_runs WHERE run_id = ?)",
            (tampered, run_id),
        )

    resumed = cli("resume", run_id, "--workflow", "cliflows:Pipeline")
    assert resumed.code == 5
    assert f"run '{run_id}', record 2: checksum mismatch" in resumed.err and "Traceback" not in resumed.err

    shown = cli("show", run_id)
    assert shown.code == 5
    table = rows(shown.out)
    assert "error: run" in table["2"] and "checksum mismatch" in table["2"]
    assert "start" in table["1"] and "ctx.checkpoint in convert" in table["3"]
    assert "record" in shown.err


def test_redis_store_keeps_runs_for_runs_show_and_resume(cli: Cli, redis_url: str) -> None:
    """With `--store redis://...`, a run is stored in Redis and `runs`, `show` and `resume` find it there."""
    run_id = start(cli, "--store", redis_url)
    listed = cli("runs", "--store", redis_url)
    assert run_id in listed.out and "completed" in listed.out
    shown = cli("show", run_id, "--store", redis_url)
    assert shown.code == 0 and "effect charge" in shown.out
    resumed = cli("resume", run_id, "--workflow", "cliflows:Pipeline", "--store", redis_url)
    assert resumed.code == 0 and json.loads(resumed.lines[1]) == RESULT
    assert not Path("durableflow.db").exists()


def test_unreachable_redis_exits_6_within_seconds(cli: Cli) -> None:
    """With nothing listening at the Redis URL, `run` and `runs` exit 6 quickly instead of hanging."""
    began = time.monotonic()
    ran = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--store", "redis://127.0.0.1:1/0")
    listed = cli("runs", "--store", "redis://127.0.0.1:1/0")
    assert (ran.code, listed.code) == (6, 6)
    assert "unreachable" in ran.err and "Traceback" not in ran.err + listed.err
    assert time.monotonic() - began < 5


def test_runs_of_a_sqlite_file_not_yet_made_says_so_and_makes_none(cli: Cli) -> None:
    outcome = cli("runs", "--store", "sqlite:///typo/runs.db")
    assert outcome.code == 0
    assert "no runs in sqlite:///typo/runs.db: the file does not exist yet" in outcome.out
    assert not Path("typo").exists()


def test_sqlite_file_that_is_not_a_database_exits_5(cli: Cli) -> None:
    """A `--store` SQLite path holding something other than a database exits 5: the data cannot be loaded,
    and retrying, as exit 6 (store unavailable) would suggest, cannot help."""
    Path("notes.db").write_text("not a database")
    outcome = cli("runs", "--store", "sqlite:///notes.db")
    assert outcome.code == 5
    assert "notes.db" in outcome.err and "not a durableflow store" in outcome.err and "Traceback" not in outcome.err


def test_unknown_store_scheme_exits_2(cli: Cli) -> None:
    """A `--store` URL of no known kind exits 2 and lists the kinds there are."""
    outcome = cli("runs", "--store", "mongodb://db/runs")
    assert outcome.code == 2
    assert "sqlite:///path" in outcome.err


# -- runs that ask for input ----------------------------------------------------------------

ANSWER_HINT = "--respond '{\"response\": ...}'"


def test_a_run_that_asks_for_input_exits_7_and_resume_respond_answers_it(cli: Cli) -> None:
    """`run` stops at an input request: it prints the request, exits 7 and tells how to answer;
    `resume RUN_ID` asks again, and `resume RUN_ID --respond JSON` answers it and prints the result."""
    asked = cli("run", "cliflows:Approval", "--input", '{"amount": 5}')
    assert asked.code == 7, asked.err
    run_id, request = asked.lines
    assert json.loads(request) == {"question": "approve 5?"}
    assert (
        f"durableflow resume {run_id} --workflow cliflows:Approval {ANSWER_HINT}" in asked.err
        and "Traceback" not in asked.err
    )
    listed = cli("runs")
    assert "waiting" in next(line for line in listed.lines if run_id in line)

    asked_again = cli("resume", run_id, "--workflow", "cliflows:Approval")
    assert asked_again.code == 7, asked_again.err
    assert asked_again.lines == [run_id, request]

    answered = cli("resume", run_id, "--workflow", "cliflows:Approval", "--respond", '{"response": "yes"}')
    assert answered.code == 0, answered.err
    assert answered.lines == [run_id, '"yes"']
    assert "completed" in next(line for line in cli("runs").lines if run_id in line)


def test_a_run_asking_from_inside_its_step_says_why_it_is_listed_as_interrupted(cli: Cli) -> None:
    """ctx.wait_for_event keeps the run in flight: exit 7 says `runs` lists it as interrupted, and why;
    a run parked by a step that returned the request is listed as waiting and is not told so."""
    asked = cli("run", "cliflows:InStepApproval")
    assert asked.code == 7, asked.err
    assert "lists it as interrupted, not waiting: its step waits in ctx.wait_for_event" in asked.err
    assert "interrupted" in next(line for line in cli("runs").lines if asked.lines[0] in line)

    parked = cli("run", "cliflows:Approval", "--input", '{"amount": 5}')
    assert parked.code == 7 and "lists it as interrupted" not in parked.err


def test_run_with_respond_answers_every_request_in_one_go(cli: Cli) -> None:
    """`run --respond JSON` answers the run's input request itself and prints the result: exit 0."""
    outcome = cli("run", "cliflows:Approval", "--input", '{"amount": 5}', "--respond", '{"response": "no"}')
    assert outcome.code == 0, outcome.err
    assert json.loads(outcome.lines[1]) == "no"


def test_a_waiting_run_in_a_memory_store_says_to_answer_in_the_same_command(cli: Cli) -> None:
    """With a memory:// store the waiting run dies with the command, so exit 7 points to --respond, not resume."""
    outcome = cli("run", "cliflows:Approval", "--input", '{"amount": 5}', "--store", "memory://")
    assert outcome.code == 7
    assert "--respond" in outcome.err and "durableflow resume" not in outcome.err


@pytest.mark.parametrize("given", ["not json", "[1]"])
def test_bad_respond_json_exits_2_and_starts_nothing(cli: Cli, given: str) -> None:
    """A `--respond` that is not a JSON object exits 2 before any run starts."""
    outcome = cli("run", "cliflows:Approval", "--input", '{"amount": 5}', "--respond", given)
    assert outcome.code == 2 and "--respond" in outcome.err and "JSON" in outcome.err
    assert not Path("durableflow.db").exists()


def test_resume_that_gives_up_waiting_for_a_lease_exits_4_when_the_run_asks_for_input(cli: Cli) -> None:
    """`resume --wait` of a waiting run another worker holds exits 4 once the wait is over, instead of hanging."""
    run_id = cli("run", "cliflows:Approval", "--input", '{"amount": 5}').lines[0]
    SQLiteCheckpointer("durableflow.db").acquire(run_id, "another-host:4242:worker")
    began = time.monotonic()
    outcome = cli(
        "resume", run_id, "--workflow", "cliflows:Approval", "--wait", "0.3", "--respond", '{"response": "yes"}'
    )
    assert outcome.code == 4
    assert time.monotonic() - began < 5


# -- help, rich and the harness's subcommand ------------------------------------------------


def test_help_documents_every_exit_code(cli: Cli) -> None:
    """`--help` lists the subcommands, crashtest included, and every exit code: 0 to 7, and 130."""
    outcome = cli("--help")
    assert outcome.code == 0
    for command in ("run", "resume", "runs", "show", "crashtest"):
        assert f"    {command} " in outcome.out or f"    {command}\n" in outcome.out
    meanings = {
        0: "success", 1: "failed", 2: "usage error", 3: "run not found", 4: "leased", 5: "cannot be loaded",
        6: "refusing the password", 7: "waits for input", 130: "interrupted",
    }  # fmt: skip
    for code, meaning in meanings.items():
        assert any(line.split()[:1] == [str(code)] and meaning in line for line in outcome.lines), meaning


@pytest.fixture
def without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import rich`` fail, as it does when the ``cli`` extra is not installed."""
    for name in [name for name in sys.modules if name == "rich" or name.startswith("rich.")] + ["rich"]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("argv", [[], ["run"], ["resume"], ["runs"], ["show"], ["crashtest"]])
def test_help_works_without_rich(cli: Cli, without_rich: None, argv: list[str]) -> None:
    """`durableflow --help` and each subcommand's `--help` work with only the core dependencies."""
    outcome = cli(*argv, "--help")
    assert outcome.code == 0
    assert "usage: durableflow" in outcome.out


@pytest.mark.parametrize("command", ["runs", "show"])
def test_tables_without_rich_exit_2_naming_the_extra(cli: Cli, without_rich: None, command: str) -> None:
    """`runs` and `show` without rich exit 2 and say to install durableflow[cli]."""
    outcome = cli(command, *(["some-run"] if command == "show" else []))
    assert outcome.code == 2
    assert "install the durableflow[cli] extra (pip install '.[cli]'" in outcome.err


def test_missing_arguments_exit_2(cli: Cli) -> None:
    """A command line without a subcommand, or `run` without its target, is a usage error: exit 2."""
    assert cli().code == 2
    assert cli("run").code == 2
    assert cli("runs", "--limit", "0").code == 2
