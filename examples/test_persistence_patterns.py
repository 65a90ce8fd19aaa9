"""Each row of the table in ``examples.persistence_patterns``, proved cell by cell, and the crash harness's verdicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durableflow import SQLiteCheckpointer, WorkflowRuntimeError
from examples.persistence_patterns import ContextTable, InstanceTally, Tally, WordCounter, get_word_counter

TEXTS = ["one two", "three", "four five six"]  # 6 words
MODES = ["inprocess", "kill"]


@pytest.fixture
def counter(fake_resources: Any) -> WordCounter:
    """The word counter this test's runs call; its calls are recorded in ``fake_resources.calls``."""
    served: WordCounter = fake_resources.override(get_word_counter, WordCounter(), record=True)
    return served


@pytest.fixture
def table(tmp_path: Path) -> Iterator[ContextTable]:
    table = ContextTable(tmp_path / "contexts.db")
    yield table
    table.close()


def counted(fake_resources: Any) -> list[str]:
    """The texts the counter was asked to count, in order."""
    return [call.removeprefix("get_word_counter.count(").removesuffix(")") for call in fake_resources.calls]


# -- 1. attributes of the workflow instance -----------------------------------------------


async def test_instance_attributes_are_kept_across_run_calls_on_the_same_instance(counter: WordCounter) -> None:
    """A second run on the same instance adds to the total the first run left on it."""
    tally = InstanceTally()
    assert await tally.run(texts=TEXTS) == 6
    assert await tally.run(texts=["seven"]) == 7


async def test_instance_attributes_are_lost_on_restart(counter: WordCounter) -> None:
    """A new instance, which is all a restarted process has, starts from zero."""
    assert await InstanceTally().run(texts=TEXTS) == 6
    assert await InstanceTally().run(texts=["seven"]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_instance_attributes_are_lost_when_a_run_resumes_after_a_crash(crash_harness: Any, mode: str) -> None:
    """Even a checkpointed run loses them: resumed after a crash, it forgets the texts counted before it."""
    outcome = crash_harness.run_scenario(InstanceTally, {"texts": TEXTS}, crash_at="step.count.end#2", mode=mode)
    assert outcome.kind == "divergent result"
    assert outcome.result == 4  # 6 words, less the 2 of the text counted before the crash


async def test_instance_attributes_survive_a_failed_step_but_the_run_does_not(
    counter: WordCounter, fake_resources: Any
) -> None:
    """After a failure the total is still on the instance, the run cannot resume, and running it again counts twice."""
    counter.outage_after = 1
    tally = InstanceTally()
    handler = tally.run(texts=TEXTS)
    with pytest.raises(ConnectionError):
        await handler
    assert tally.total == 2  # the first text's words, kept
    with pytest.raises(WorkflowRuntimeError, match="checkpointer"):
        tally.resume(handler.run_id)
    counter.outage_after = None
    assert await tally.run(texts=TEXTS) == 8  # "one two" is counted a second time
    assert counted(fake_resources) == ["'one two'", "'three'", "'one two'", "'three'", "'four five six'"]


# -- 2. ctx.to_dict() saved to a database ---------------------------------------------------


async def test_a_saved_context_is_kept_across_run_calls(counter: WordCounter, table: ContextTable) -> None:
    """A run started with the saved context of a finished run adds to its total."""
    workflow = Tally()
    handler = workflow.run(texts=TEXTS)
    assert await handler == 6
    table.save("tally", handler.ctx)
    assert await workflow.run(ctx=table.load(workflow, "tally"), texts=["seven"]) == 7


async def test_a_saved_context_is_kept_across_a_restart(counter: WordCounter, tmp_path: Path) -> None:
    """A new instance, with a new connection to the database, continues from the saved total."""
    first = ContextTable(tmp_path / "contexts.db")
    handler = Tally().run(texts=TEXTS)
    await handler
    first.save("tally", handler.ctx)
    first.close()

    after_restart = ContextTable(tmp_path / "contexts.db")
    workflow = Tally()
    assert await workflow.run(ctx=after_restart.load(workflow, "tally"), texts=["seven"]) == 7
    after_restart.close()


async def test_a_context_saved_after_a_failed_step_retries_only_that_step(
    counter: WordCounter, fake_resources: Any, table: ContextTable
) -> None:
    """Saved after the failure and restored after the fix, the run retries the failed text and counts the first once."""
    counter.outage_after = 1
    handler = Tally().run(texts=TEXTS)
    with pytest.raises(ConnectionError):
        await handler
    table.save("tally", handler.ctx)

    counter.outage_after = None
    workflow = Tally()
    assert await workflow.run(ctx=table.load(workflow, "tally")) == 6
    assert counted(fake_resources) == ["'one two'", "'three'", "'three'", "'four five six'"]


# -- 3. automatic checkpoints -----------------------------------------------------------------


async def test_checkpointed_state_is_not_shared_between_run_calls(counter: WordCounter, tmp_path: Path) -> None:
    """Each run() is a new run with its own empty state: the second total does not include the first."""
    workflow = Tally(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db"))
    first = workflow.run(texts=TEXTS)
    assert await first == 6
    second = workflow.run(texts=["seven"])
    assert await second == 1
    assert first.run_id != second.run_id


@pytest.mark.parametrize("mode", MODES)
def test_checkpointed_state_is_kept_across_a_restart(crash_harness: Any, mode: str) -> None:
    """A run killed mid-way (in kill mode, with SIGKILL) is resumed by a new process with its total intact."""
    outcome = crash_harness.run_scenario(Tally, {"texts": TEXTS}, crash_at="step.count.end#2", mode=mode)
    assert outcome.ok, outcome.diff
    assert outcome.result == 6


async def test_checkpointed_state_is_kept_across_a_failed_step(
    counter: WordCounter, fake_resources: Any, tmp_path: Path
) -> None:
    """Resumed after the fix by a new instance, a failed run does not count again what it counted before failing."""
    counter.outage_after = 1
    handler = Tally(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).run(texts=TEXTS)
    with pytest.raises(ConnectionError):
        await handler
    store = SQLiteCheckpointer(tmp_path / "runs.db")
    assert store.info(handler.run_id).status == "failed"

    counter.outage_after = None
    assert await Tally(checkpointer=store).resume(handler.run_id) == 6
    assert counted(fake_resources) == ["'one two'", "'three'", "'three'", "'four five six'"]


# -- the crash harness on the tally --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_crash_point_of_the_checkpointed_tally_gives_the_same_total(crash_harness: Any, mode: str) -> None:
    """Killed at any crash point, and again during the resume, the tally ends with the uninterrupted total."""
    report = crash_harness.explore(Tally, {"texts": ["one two", "three"]}, depth=2, mode=mode)
    report.assert_ok()
    assert report.reference == 3
    assert len(report.scenarios) == report.space
