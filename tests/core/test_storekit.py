"""durableflow.storekit: the public helpers the README's "Writing a checkpointer" points to, and a README that
names no private module."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from durableflow import RunInfo
from durableflow.storekit import Page, check_status, list_runs, parse_cursor, reported, terminal_statuses

README = Path(__file__).resolve().parents[2] / "README.md"


def _row(run_id: str, created_at: float, status: str, expires: float | None = None) -> RunInfo:
    owner = None if expires is None else "another-host:1:worker"
    return RunInfo(run_id, "Flow", status, created_at, created_at, 1, lease_owner=owner, lease_expires_at=expires)  # type: ignore[arg-type]


def test_the_readme_names_only_public_api() -> None:
    """No `durableflow._module` in the README, and every `durableflow.module.name` it names exists."""
    text = README.read_text()
    assert re.findall(r"durableflow\._\w+", text) == []
    for module, name in re.findall(r"`durableflow\.(storekit|otel|testing)\.(\w+)", text):
        assert hasattr(importlib.import_module(f"durableflow.{module}"), name), f"durableflow.{module}.{name}"


def test_reported_shows_a_running_run_nobody_holds_as_interrupted() -> None:
    assert reported(_row("a", 1.0, "running", expires=50.0), now=10.0).status == "running"
    assert reported(_row("a", 1.0, "running", expires=5.0), now=10.0).status == "interrupted"
    assert reported(_row("a", 1.0, "running"), now=10.0).status == "interrupted"
    assert reported(_row("a", 1.0, "completed"), now=10.0).status == "completed"


def test_list_runs_pages_newest_first_through_one_indexed_query() -> None:
    """Given one page query, list_runs filters derived statuses and goes on from a cursor without repeats."""
    rows = [_row(f"r{n}", float(n), "running" if n % 2 else "completed") for n in range(10)]
    asked: list[tuple[tuple[str, ...] | None, int]] = []

    def page(statuses: tuple[str, ...] | None, limit: int, after: tuple[float, str] | None) -> list[RunInfo]:
        asked.append((statuses, limit))
        newest = sorted(rows, key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [
            r
            for r in newest
            if (statuses is None or r.status in statuses) and (after is None or (r.created_at, r.run_id) < after)
        ][:limit]

    typed: Page = page
    first = list_runs(typed, "interrupted", 3, None)
    assert [r.run_id for r in first] == ["r9", "r7", "r5"] and {r.status for r in first} == {"interrupted"}
    rest = list_runs(typed, "interrupted", 3, first[-1].cursor)
    assert [r.run_id for r in rest] == ["r3", "r1"]
    assert all(statuses == ("running",) for statuses, _ in asked)  # only the stored status was queried
    assert [r.run_id for r in list_runs(typed, None, 2, None)] == ["r9", "r8"]


def test_the_argument_checks_refuse_what_a_store_must_refuse() -> None:
    with pytest.raises(ValueError, match="interrupted"):
        check_status("interrupted")  # derived, never stored
    with pytest.raises(ValueError, match="running"):
        terminal_statuses("running")  # purge deletes only ended runs
    with pytest.raises(ValueError, match="not a run cursor"):
        parse_cursor("garbage")
    assert terminal_statuses(["failed", "completed"]) == ("completed", "failed")
