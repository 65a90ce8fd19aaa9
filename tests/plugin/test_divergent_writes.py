"""A resumed run that wrote the world otherwise than the uninterrupted one, where it cannot have done the same
work twice, is a divergent write told to read the time once; work done twice stays a duplicated effect."""

from __future__ import annotations

import pytest

from pytest_durableflow import KINDS, explore

from .flows import PAYMENT_FAKES, ChargeDirectly, CountThenRecord, PushThenRecord
from .restarts import ClockEscalation, HashCounterThenRecord, RestartedReminder

MODES = ["inprocess", "kill"]
SEED = 20261201


@pytest.mark.parametrize("mode", MODES)
def test_a_decision_taken_again_on_the_clock_is_a_divergent_write_told_to_read_the_time_once(mode: str) -> None:
    """An escalation the uninterrupted run never made is not an effect done twice: the report says what the
    step decided on and where to read it, not how to make a write idempotent."""
    report = explore(ClockEscalation, {}, mode=mode, seed=SEED)
    assert report.failures and {o.kind for o in report.failures} == {"divergent write"}
    text = report.failure_text()
    assert "divergent write: a step that ran again after the restart wrote the world otherwise" in text
    assert "time.time()" in text and "ctx.effect" in text and "ctx.sleep" in text and "ctx.attempt" in text
    assert "idempotent" not in text and "duplicated effect" not in text
    assert "redis key 'escalated':" in report.failures[0].diff  # the diff is as it was: what differs
    assert "divergent write" in KINDS


@pytest.mark.parametrize("mode", MODES)
def test_a_later_time_written_again_is_a_divergent_write_at_depth_2(mode: str) -> None:
    """A deadline computed anew writes a later time, also when the second crash came after the first write
    (the key was there at the last crash: what tells it from a counter is that it holds a time)."""
    report = explore(RestartedReminder, {}, depth=2, mode=mode, seed=SEED, max_scenarios=60 if mode == "kill" else None)
    assert any(">" in o.id for o in report.failures)
    assert {o.kind for o in report.failures} == {"divergent write"}


@pytest.mark.parametrize(
    ("workflow", "start"),
    [(PushThenRecord, {"ids": [1, 2]}), (CountThenRecord, {"ids": [1, 2]}),
     (HashCounterThenRecord, {"orders": [1, 2]}), (ChargeDirectly, {"order": "A-1", "cents": 500})],
    ids=["rpush", "incr", "hincrby", "charge"],
)  # fmt: skip
def test_work_done_twice_stays_a_duplicated_effect_at_depth_2(workflow: type, start: dict[str, object]) -> None:
    """A push, a count, a stock taken or a charge made again after a crash is a duplicated effect, at depth 2
    too: where the first crash fell before the write and the second after it, and where the first fell
    before the key was even created (HSETNX stock 10, then HINCRBY -1 goes down, not up from nothing)."""
    report = explore(workflow, start, depth=2, seed=SEED, **PAYMENT_FAKES)
    assert any(">" in o.id for o in report.failures)
    assert {o.kind for o in report.failures} == {"duplicated effect"}
