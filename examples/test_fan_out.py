"""Crash tests for the fan-out/fan-in word count: every crash point, both crash modes, depth 2."""

from __future__ import annotations

from typing import Any

import pytest

from durableflow import Checkpointer
from examples.fan_out import WordCount, WordsCounted


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_every_crash_point_counts_every_text_once(crash_harness: Any, mode: str) -> None:
    """Killed anywhere in the fan-out, the workers or the fan-in, the run resumes to the uninterrupted result."""
    report = crash_harness.explore(WordCount, {"texts": ["a b", "c d e"]}, depth=2, mode=mode)
    report.assert_ok()
    assert report.reference == {"words": [2, 3], "total": 5}
    assert len(report.scenarios) == report.space


async def test_a_run_counts_the_words_of_each_text(checkpointer: Checkpointer) -> None:
    """An uninterrupted run gives each text's word count, in the texts' order, and their total."""
    handler = WordCount(checkpointer=checkpointer).run(texts=["the quick brown fox", "jumps", "over the dog"])
    assert await handler == {"words": [4, 1, 3], "total": 8}
    assert checkpointer.info(handler.run_id).status == "completed"


async def test_the_fan_in_result_does_not_depend_on_arrival_order(durable_context: Any) -> None:
    """Results that reach the collector in reverse order give the same result as in-order ones."""
    workflow = WordCount()
    ctx = durable_context(
        workflow,
        state={"expected": 3},
        events=[WordsCounted(index=2, words=1), WordsCounted(index=1, words=5), WordsCounted(index=0, words=2)],
    )
    assert await workflow.run(ctx=ctx) == {"words": [2, 5, 1], "total": 8}
