"""A downstream project made with ``pytester``: its files, and what its runs print.

The project holds ``flows.py`` (a copy of this directory's workflows) beside
its generated tests, so that xdist workers and subprocess runs import it too.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

INI = """\
[pytest]
addopts = -p no:hypothesispytest
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""
"""Hypothesis's plugin imports hypothesis at every session's end, which in-process runs pay for each time."""


def make_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(flows=(Path(__file__).parent / "flows.py").read_text())
    write_ini(pytester)
    return pytester


def write_ini(pytester: pytest.Pytester, *lines: str) -> None:
    """Write the project's ``pytest.ini``: asyncio in auto mode, plus ``lines``."""
    pytester.makefile(".ini", pytest=INI + "".join(line + "\n" for line in lines))


def printed(result: pytest.RunResult, tag: str) -> list[str]:
    """What the run's tests printed after ``tag`` (run them with ``-s``), one entry per line."""
    return [line.split(tag, 1)[1].strip() for line in result.outlines if tag in line]


def header_seed(result: pytest.RunResult) -> int:
    """The session seed the report header shows."""
    match = re.search(r"^durableflow: seed=(\d+) ", result.stdout.str(), re.M)
    assert match, result.stdout.str()
    return int(match.group(1))


def failures_part(result: pytest.RunResult) -> str:
    """The output up to pytest's short test summary.

    Where the ``CI`` variable is set, pytest repeats each failure's whole message
    in that summary; the report is read once, from the failures section.
    """
    return re.split(r"^=+ short test summary info =+$", result.stdout.str(), maxsplit=1, flags=re.M)[0]


def failure_sections(result: pytest.RunResult) -> dict[str, str]:
    """The text of each failed test's section of the output, by the test's name."""
    parts = re.split(r"^_{3,} (.+?) _{3,}$", failures_part(result), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def failure_seeds(result: pytest.RunResult) -> dict[str, int]:
    """Each failed exploration's seed, from its failure text, by the test's name."""
    return {
        test: int(match.group(1))
        for test, text in failure_sections(result).items()
        if (match := re.search(r"crash exploration of \w+: .*? seed=(\d+)", text))
    }


def failures(text: pytest.RunResult | str) -> list[tuple[str, str]]:
    """Each failing scenario a run's output (or part of it) lists, as ``(id, kind)`` from its ``--- id: kind`` line."""
    if not isinstance(text, str):
        text = failures_part(text)
    return re.findall(r"^E?\s*--- (\S+): (.+)$", text, re.M)


def reruns(result: pytest.RunResult) -> list[tuple[list[str], str]]:
    """Each re-run line the run printed, as the arguments after ``pytest`` and the scenario id they replay."""
    lines = re.findall(r"re-run: (?:PYTHONHASHSEED=\d+ )?(pytest '.+)$", failures_part(result), re.M)
    assert all(re.match(r"pytest '[^']+' --durableflow-scenario='[^']+'", line) for line in lines), lines
    found = []
    for line in lines:
        args = shlex.split(line)[1:]
        (scenario,) = (arg.partition("=")[2] for arg in args if arg.startswith("--durableflow-scenario="))
        found.append((args, scenario))
    return found
