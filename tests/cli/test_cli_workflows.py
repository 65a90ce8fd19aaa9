"""Which workflows the CLI runs: only those the user names, matched to a stored run by name, never imported from it."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Cli = Callable[..., Any]
Shell = Callable[..., Any]

DEPLOY = """
from pathlib import Path
Path("deploy-was-imported").touch()

class Flow:
    def __init__(self):
        Path("deploy-was-called").touch()
"""


def start(cli: Cli, target: str = "cliflows:Pipeline", fields: str = '{"ids": [1]}') -> str:
    outcome = cli("run", target, "--input", fields)
    assert outcome.code in (0, 1, 7), outcome.err
    return str(outcome.lines[0])


def rename_stored_workflow(run_id: str, name: str) -> None:
    """Edit the store by hand, as anyone who can write it could: the run now names another workflow."""
    with sqlite3.connect("durableflow.db") as db:
        db.execute("UPDATE durableflow_runs SET workflow = ? WHERE run_id = ?", (name, run_id))


@pytest.mark.parametrize("stored", ["deploy:Flow", "this:x", "os:system", "subprocess:run"])
@pytest.mark.parametrize("named", [[], ["--workflow", "cliflows:Pipeline"]])
def test_a_workflow_named_by_the_store_is_never_imported(cli: Cli, stored: str, named: list[str]) -> None:
    """A run whose stored row names MODULE:NAME is not resumed by importing it: `resume` exits 2 saying how to
    name the workflow, and neither the module in the current directory nor a standard module is imported."""
    Path("deploy.py").write_text(DEPLOY)
    Path("payments-down").touch()
    run_id = start(cli)
    rename_stored_workflow(run_id, stored)
    module = stored.partition(":")[0]
    was_loaded = module in sys.modules
    outcome = cli("resume", run_id, *named)
    assert outcome.code == 2, outcome.err
    assert f"belongs to workflow {stored!r}" in outcome.err and "--workflow MODULE:Class" in outcome.err
    assert "Traceback" not in outcome.err
    assert not Path("deploy-was-imported").exists() and not Path("deploy-was-called").exists()
    assert (module in sys.modules) == was_loaded
    sys.modules.pop("deploy", None)


def test_os_abort_named_by_the_store_does_not_kill_the_command(shell: Shell, project: Path) -> None:
    """In a fresh process, a stored `os:abort` is compared, not called: `resume` exits 2 instead of dumping core."""
    (project / "payments-down").touch()
    ran = shell("run", "cliflows:Pipeline", "--input", '{"ids": [1]}')
    run_id = ran.stdout.splitlines()[0]
    rename_stored_workflow(run_id, "os:abort")
    resumed = shell("resume", run_id)
    assert resumed.returncode == 2, resumed.stderr
    assert "belongs to workflow 'os:abort'" in resumed.stderr


def test_resume_without_a_named_workflow_exits_2_and_says_how_to_name_it(cli: Cli) -> None:
    """With no --workflow and no config, `resume` exits 2 naming the stored workflow and both ways to name it."""
    Path("payments-down").touch()
    run_id = start(cli)
    outcome = cli("resume", run_id)
    assert outcome.code == 2
    assert "belongs to workflow 'Pipeline'" in outcome.err and "no workflow is named" in outcome.err
    assert "--workflow MODULE:Class" in outcome.err and "[tool.durableflow]" in outcome.err


@pytest.mark.parametrize("stored", ["Pipeline", "deploy:Flow"])
def test_resume_of_a_completed_run_prints_its_result_with_no_workflow_named(cli: Cli, stored: str) -> None:
    """A completed run's result is stored as data: `resume` prints the run id and the result without any workflow
    named, and imports nothing, whatever workflow the store names. A run that is not completed still needs one."""
    Path("deploy.py").write_text(DEPLOY)
    run_id = start(cli)
    rename_stored_workflow(run_id, stored)
    outcome = cli("resume", run_id)
    assert outcome.code == 0, outcome.err
    assert outcome.lines[0] == run_id
    assert json.loads(outcome.lines[1]) == {"converted": [1], "receipt": "paid for 1"}
    assert not Path("deploy-was-imported").exists() and "deploy" not in sys.modules
    with sqlite3.connect("durableflow.db") as db:
        db.execute("UPDATE durableflow_runs SET status = 'failed' WHERE run_id = ?", (run_id,))
    assert cli("resume", run_id).code == 2


def test_resume_of_a_completed_run_whose_stored_result_is_not_json_exits_5(cli: Cli) -> None:
    """A completed run's result edited into something that is not JSON is named as malformed metadata."""
    run_id = start(cli)
    with sqlite3.connect("durableflow.db") as db:
        db.execute("UPDATE durableflow_runs SET result = '{\"converted\": [1' WHERE run_id = ?", (run_id,))
    outcome = cli("resume", run_id)
    assert outcome.code == 5
    assert f"run {run_id!r}: malformed metadata: the completed run's result" in outcome.err
    assert "Traceback" not in outcome.err


def test_resume_with_other_workflows_lists_the_ones_named(cli: Cli) -> None:
    """Naming workflows that are not the run's exits 2 and lists the names that were compared."""
    Path("payments-down").touch()
    run_id = start(cli)
    outcome = cli("resume", run_id, "--workflow", "cliflows:Orders", "--workflow", "cliflows:Approval")
    assert outcome.code == 2
    assert "'Approval', 'Orders'" in outcome.err


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("pyproject.toml", '[project]\nname = "mine"\n\n[tool.durableflow]\nworkflows = ["cliflows:Pipeline"]\n'),
        ("durableflow.toml", 'workflows = ["cliflows:Orders", "cliflows:make_pipeline"]\n'),
    ],
)
def test_resume_finds_the_workflow_the_config_lists(cli: Cli, filename: str, text: str) -> None:
    """Workflows listed in ./pyproject.toml or ./durableflow.toml resume a stored run without --workflow."""
    Path("payments-down").touch()
    run_id = start(cli)
    Path("payments-down").unlink()
    Path(filename).write_text(text)
    outcome = cli("resume", run_id)
    assert outcome.code == 0, outcome.err
    assert json.loads(outcome.lines[1]) == {"converted": [1], "receipt": "paid for 1"}


def test_run_takes_a_name_the_config_lists(cli: Cli) -> None:
    """`run NAME` starts the configured workflow stored under NAME; an unlisted name exits 2 listing the known ones."""
    Path("durableflow.toml").write_text('workflows = ["cliflows:Orders"]\n')
    outcome = cli("run", "cliflows:Orders", "--input", '{"order_id": 3}')
    assert outcome.code == 0 and outcome.lines[1] == "3"
    by_name = cli("run", "Orders", "--input", '{"order_id": 4}')
    assert by_name.code == 0 and by_name.lines[1] == "4"
    unknown = cli("run", "Invoices", "--input", '{"order_id": 3}')
    assert unknown.code == 2
    assert "durableflow.toml lists 'Orders'" in unknown.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tool.durableflow\n", "cannot read"),
        ('[tool.durableflow]\nworkflows = "cliflows:Pipeline"\n', "workflows must be a list of strings"),
        ('[tool.durableflow]\nworkflow = ["cliflows:Pipeline"]\n', "unknown durableflow setting(s) 'workflow'"),
        ('[tool.durableflow]\nworkflows = ["cliflows:Missing"]\n', "has no attribute 'Missing'"),
    ],
)
def test_a_broken_config_exits_2_naming_the_file(cli: Cli, text: str, message: str) -> None:
    """A config file that is not TOML, has wrong types or unknown keys, or names nothing importable exits 2."""
    Path("payments-down").touch()
    run_id = start(cli)
    Path("pyproject.toml").write_text(text)
    outcome = cli("resume", run_id)
    assert outcome.code == 2
    assert message in outcome.err and "Traceback" not in outcome.err


def test_two_workflows_under_one_name_exit_2(cli: Cli) -> None:
    """Two different workflows that their runs would store under one name cannot both be named."""
    Path("other.py").write_text("import cliflows\n\nclass Pipeline(cliflows.Pipeline):\n    pass\n")
    Path("other.py").write_text(Path("other.py").read_text() + "Pipeline.__module__ = 'cliflows'\n")
    Path("payments-down").touch()
    run_id = start(cli)
    outcome = cli("resume", run_id, "--workflow", "cliflows:Pipeline", "--workflow", "other:Pipeline")
    assert outcome.code == 2
    assert "are both workflow 'Pipeline'" in outcome.err
    sys.modules.pop("other", None)


def test_the_current_directory_is_searched_after_installed_modules(cli: Cli) -> None:
    """The CLI adds the current directory to sys.path last, so a file there cannot replace an installed module."""
    start(cli)
    assert sys.path[-1] == str(Path.cwd()) and str(Path.cwd()) not in sys.path[:-1]


def test_python_m_searches_the_current_directory_last(shell: Shell, project: Path) -> None:
    """`python -m durableflow` moves the directory Python put first to the end: a `rich.py` there is not run."""
    (project / "rich.py").write_text("from pathlib import Path\nPath('rich-was-imported').touch()\n")
    done = shell("run", "cliflows:Orders", "--input", '{"order_id": 1}')
    assert done.returncode == 0, done.stderr
    assert shell("runs").returncode == 0
    assert not (project / "rich-was-imported").exists()


def test_path_puts_a_directory_first(cli: Cli) -> None:
    """`--path DIR` imports the workflow module from DIR, before modules of that name elsewhere."""
    Path("src").mkdir()
    Path("src/srcflows.py").write_text(Path("cliflows.py").read_text())
    outcome = cli("run", "srcflows:Orders", "--path", "src", "--input", '{"order_id": 9}')
    assert outcome.code == 0, outcome.err
    assert sys.modules["srcflows"].__file__ == str(Path("src/srcflows.py").resolve())
    sys.modules.pop("srcflows", None)


def test_a_target_that_is_not_an_import_path_exits_2_without_importing(cli: Cli) -> None:
    """`MODULE:Class` with characters an import path cannot hold exits 2 before anything is imported."""
    outcome = cli("run", "../evil:Flow")
    assert outcome.code == 2 and "is not MODULE:Workflow" in outcome.err
