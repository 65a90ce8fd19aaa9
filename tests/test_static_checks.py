"""The code stays as STYLE.md asks: ruff and mypy --strict clean on both packages (tests and examples lint-clean)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    """ruff check passes on the packages, the tests and the examples, and ruff format leaves the packages alone."""
    pytest.importorskip("ruff")
    lint = _run("ruff", "check", "src", "pytest_durableflow", "tests", "examples")
    assert lint.returncode == 0, lint.stdout
    layout = _run("ruff", "format", "--check", "src", "pytest_durableflow")
    assert layout.returncode == 0, layout.stdout


def test_mypy_strict_finds_nothing() -> None:
    """mypy --strict (configured in pyproject.toml) passes on src/durableflow and pytest_durableflow."""
    pytest.importorskip("mypy")
    checked = _run("mypy")
    assert checked.returncode == 0, checked.stdout
