"""The advice for a duplicated effect says what to do for a counter, which no idempotent command replaces."""

from __future__ import annotations

import pytest

from durableflow.testing import explore

from .flows import CountThenRecord

SEED = 20260301


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_counter_incremented_twice_is_told_how_to_count_once(mode: str) -> None:
    pytest.importorskip("fakeredis")
    report = explore(CountThenRecord, {"ids": [1, 2]}, mode=mode, seed=SEED)

    assert {o.kind for o in report.failures} == {"duplicated effect"}, report.failure_text()
    advice = report.failure_text()
    assert "a counter (INCR, HINCRBY)" in advice
    assert "SADD" in advice and "SCARD" in advice and "ctx.store" in advice
