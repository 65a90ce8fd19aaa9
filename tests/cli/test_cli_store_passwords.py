"""Every store URL the CLI prints hides its password as ``***``, the commands it suggests too; those then say to
put the password back. A wrong password is told as one (exit 6), a URL that cannot be read as a usage error."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from durableflow import InputRequiredEvent, WorkflowRuntimeError
from durableflow._errors import password_note
from durableflow.cli._crashtest import _rerun_line
from durableflow.cli._exits import Interrupted, RunEnded, RunIdle, WaitsForInput, explain

from .conftest import Outcome

Cli = Callable[..., Outcome]
NOTE = "(with the store's password in place of ***)"


def _suggested(err: str) -> list[str]:
    return shlex.split(err.split("`")[1])


def _put_back(argv: list[str], url: str) -> list[str]:
    return [url if "***" in arg else arg for arg in argv]


def test_a_taken_run_id_and_a_missing_run_suggest_their_store_without_its_password(
    cli: Cli, secured_redis_url: str
) -> None:
    """The resume a taken id suggests and the listing a missing run suggests both hide the password and say to
    put it back; with it back, each works as printed."""
    shown = secured_redis_url.replace(":s3cret@", ":***@")
    start = ("run", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--run-id", "taken", "--store", secured_redis_url)
    assert cli(*start).code == 0
    taken = cli(*start)
    assert taken.code == 2 and "s3cret" not in taken.err + taken.out
    assert "never retrieved" not in taken.err
    told = _suggested(taken.err)
    assert told == ["durableflow", "resume", "taken", "--workflow", "cliflows:Pipeline", "--store", shown]
    assert taken.err.rstrip().endswith(f"continues it {NOTE}")
    resumed = cli(*_put_back(told, secured_redis_url)[1:])
    assert resumed.code == 0 and resumed.lines[0] == "taken"

    missing = cli("show", "nope", "--store", secured_redis_url)
    assert missing.code == 3 and "s3cret" not in missing.err
    listing = _suggested(missing.err)
    assert listing == ["durableflow", "runs", "--store", shown]
    assert missing.err.rstrip().endswith(f"lists the stored runs {NOTE}")
    listed = cli(*_put_back(listing, secured_redis_url)[1:])
    assert listed.code == 0 and "taken" in listed.out


def test_a_failed_run_and_the_next_page_hide_the_password(cli: Cli, project: Path, secured_redis_url: str) -> None:
    (project / "payments-down").touch()
    failed = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--store", secured_redis_url)
    assert failed.code == 1 and "s3cret" not in failed.err
    assert _suggested(failed.err)[-2:] == ["--store", secured_redis_url.replace(":s3cret@", ":***@")]
    assert failed.err.rstrip().endswith(NOTE)
    assert cli("run", "cliflows:Pipeline", "--input", '{"ids": [2]}', "--store", secured_redis_url).code == 1
    page = cli("runs", "--limit", "1", "--store", secured_redis_url)
    assert page.code == 0 and "s3cret" not in page.out
    next_page = next(line for line in page.lines if line.startswith("next page: "))
    assert next_page.endswith(shlex.quote(secured_redis_url.replace(":s3cret@", ":***@")))
    assert page.lines[page.lines.index(next_page) + 1] == NOTE
    empty = cli("runs", "--status", "waiting", "--store", secured_redis_url)
    assert empty.code == 0 and "s3cret" not in empty.out and ":***@" in empty.out


def test_every_suggested_resume_hides_the_password_and_says_to_put_it_back() -> None:
    store = "redis://app:s3cret@db:6379/0"
    again = " --workflow flows:Flow"
    request = InputRequiredEvent()
    ends = [
        Interrupted("r1", store, again),
        RunEnded("r1", store, RuntimeError("boom"), again),
        WaitsForInput("r1", store, request, again),
        RunIdle("r1", store, "Flow", [("s", "HumanResponseEvent", "")], "waiting", again),
        RunIdle("r1", store, "Flow", [], "waiting", again),
    ]
    for end in ends:
        told = "\n".join(explain(end))
        assert "s3cret" not in told, told
        assert "--store redis://app:***@db:6379/0" not in told  # quoted for a shell: *** is a glob
        assert "--store 'redis://app:***@db:6379/0'" in told, told
        assert NOTE in told, told
    pg = "\n".join(explain(RunEnded("r1", "postgresql://app:s3cret@db/app", WorkflowRuntimeError("boom"), again)))
    assert "s3cret" not in pg and "(with the store's password in place of ***, or without it and PGPASSWORD set)" in pg
    plain = "\n".join(explain(RunEnded("r1", "redis://db:6379/0", RuntimeError("boom"), again)))
    assert "password" not in plain


def test_a_rerun_line_hides_the_password() -> None:
    args = argparse.Namespace(
        target="flows:Flow", input="{}", respond=None, paths=[], mode="inprocess", store="redis://:s3cret@db/0",
        hang_after=10.0, downtime=0.0, seed=1,
    )  # fmt: skip
    line = _rerun_line(args, "step.start")
    assert "s3cret" not in line and "--store 'redis://:***@db/0'" in line


def test_crashtest_tells_a_wrong_password_without_it(cli: Cli, secured_redis_url: str) -> None:
    wrong = secured_redis_url.replace(":s3cret@", ":wrong-Pa55word@")
    done = cli("crashtest", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--store", wrong)
    assert done.code == 6
    assert "wrong-Pa55word" not in done.err + done.out
    assert f"the Redis store at {wrong.replace(':wrong-Pa55word@', ':***@')} refused to authenticate" in done.err
    assert "check the password (and user) in its URL, or pass --store sqlite" in done.err


def test_a_postgres_url_that_cannot_be_read_is_a_usage_error_without_its_password(cli: Cli) -> None:
    done = cli("runs", "--store", "postgresql://app:s3%zzcret@localhost:5432/db")
    assert done.code == 2
    assert "zzcret" not in done.err and "Traceback" not in done.err
    assert done.err.startswith("error: cannot read the PostgreSQL URL postgresql://app:***@localhost:5432/db")
    assert "PGPASSWORD" in done.err


def test_a_redis_url_that_cannot_be_read_is_a_usage_error_naming_it_without_its_password(cli: Cli) -> None:
    done = cli("runs", "--store", "redis://:s3cret@localhost:notaport/0")
    assert done.code == 2
    assert "s3cret" not in done.err and "Traceback" not in done.err
    assert done.err.startswith("error: redis://:***@localhost:notaport/0 is not a Redis URL that redis-py can read")
    assert "redis://[[USER]:PASSWORD@]HOST:PORT/DB" in done.err


def test_crashtest_names_a_redis_url_it_cannot_read(cli: Cli) -> None:
    done = cli("crashtest", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--store", "redis://:s3cret@db:99999/0")
    assert done.code == 2
    assert "s3cret" not in done.err and "Traceback" not in done.err
    assert "redis://:***@db:99999/0 is not a Redis URL that redis-py can read (Port out of range" in done.err


@pytest.mark.parametrize(
    ("shown", "note"),
    [
        ("redis://:***@host:6379/0", " (with the store's password in place of ***)"),
        ("redis://host/0?db=1&password=***", " (with the store's password in place of ***)"),
        ("postgresql://app:***@db:5432/app", " (with the store's password in place of ***, or without it and "
         "PGPASSWORD set)"),
        ("redis://host:6379/0", ""),
        ("sqlite:///a:***@b.db", ""),
    ],
)  # fmt: skip
def test_a_suggested_command_whose_store_password_is_hidden_says_to_put_it_back(shown: str, note: str) -> None:
    assert password_note(shown) == note


def test_a_worker_refused_by_its_store_stops_instead_of_polling(cli: Cli, secured_redis_url: str) -> None:
    """A worker whose store is down keeps polling (the store may come back); one whose password the store
    refuses exits 6 at once, saying so: it polled for ever, a WARNING each time."""
    wrong = secured_redis_url.replace(":s3cret@", ":wrong-Pa55word@")
    done = cli("worker", "--workflow", "cliflows:Pipeline", "--store", wrong, "--poll", "0.05")
    assert done.code == 6
    assert "wrong-Pa55word" not in done.err + done.out
    assert f"Redis at {wrong.replace(':wrong-Pa55word@', ':***@')} refused to authenticate" in done.err
