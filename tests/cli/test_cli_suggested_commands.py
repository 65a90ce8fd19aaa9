"""The commands an error suggests name the store it is about: a run not found points to the listing of the
store searched (a store file that does not exist is said to be missing), a taken run id to that store's resume."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from durableflow import RunNotFoundError, SQLiteCheckpointer

from .conftest import Outcome

Cli = Callable[..., Outcome]


def _listing(err: str) -> list[str]:
    return shlex.split(err.split("`")[1])


@pytest.mark.parametrize("command", ["show", "resume"])
def test_the_suggested_listing_names_the_store_searched(cli: Cli, project: Path, command: str) -> None:
    assert cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--store", "sqlite:///runs.db").code == 0
    done = cli(command, "nope", "--store", "sqlite:///runs.db")
    assert done.code == 3
    assert _listing(done.err) == ["durableflow", "runs", "--store", "sqlite:///runs.db"]
    listed = cli(*_listing(done.err)[1:])
    assert listed.code == 0 and "Pipeline" in listed.out  # it lists the store that was searched


def test_a_store_file_that_does_not_exist_is_named_missing(cli: Cli, project: Path) -> None:
    done = cli("show", "nope")
    assert done.code == 3
    assert "sqlite:///durableflow.db does not exist; name the store the run was started on with --store" in done.err
    assert not (project / "durableflow.db").exists()


def test_a_quoted_store_is_quoted_in_the_suggestion(tmp_path: Path) -> None:
    store = SQLiteCheckpointer(tmp_path / "my runs.db")
    try:
        with pytest.raises(RunNotFoundError) as caught:
            store.info("nope")
    finally:
        store.close()
    listing = str(caught.value).split("`")[1]
    assert shlex.split(listing) == ["durableflow", "runs", "--store", f"sqlite:///{tmp_path / 'my runs.db'}"]


def test_a_memory_store_suggests_no_listing() -> None:
    assert "`" not in str(RunNotFoundError("nope", "memory://1"))


def test_a_taken_run_id_points_to_the_resume_of_that_store(cli: Cli) -> None:
    """`run --run-id` of an id already stored in a store named with --store suggests a resume of that store,
    which, run as printed, continues the run there."""
    store = ["--store", "sqlite:///elsewhere.db"]
    assert cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--run-id", "taken", *store).code == 0
    taken = cli("run", "cliflows:Pipeline", "--input", '{"ids": [1]}', "--run-id", "taken", *store)
    assert taken.code == 2
    told = shlex.split(taken.err.split("`")[1])
    assert told == ["durableflow", "resume", "taken", "--workflow", "cliflows:Pipeline", *store]
    resumed = cli(*told[1:])
    assert resumed.code == 0 and resumed.lines[0] == "taken"
