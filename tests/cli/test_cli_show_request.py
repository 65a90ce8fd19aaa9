"""`show` of a run that waits for input says what it asks, so that the answer can be written without the code."""

from __future__ import annotations

from collections.abc import Callable

from .conftest import Outcome


def test_show_of_a_waiting_run_prints_the_request_it_awaits(cli: Callable[..., Outcome]) -> None:
    asked = cli("run", "cliflows:Approval", "--input", '{"amount": 5}')
    assert asked.code == 7, asked.err
    run_id = asked.lines[0]
    shown = cli("show", run_id)
    assert shown.code == 0, shown.err
    assert "status waiting" in shown.out
    assert 'awaiting input 2 InputRequiredEvent {"question": "approve 5?"}' in " ".join(shown.out.split())


def test_show_of_a_run_that_awaits_nothing_says_none(cli: Callable[..., Outcome]) -> None:
    asked = cli("run", "cliflows:Approval", "--input", '{"amount": 5}')
    answered = cli("resume", asked.lines[0], "--workflow", "cliflows:Approval", "--respond", '{"response": "yes"}')
    assert answered.code == 0, answered.err
    shown = cli("show", asked.lines[0])
    assert "awaiting input none" in " ".join(shown.out.split())
