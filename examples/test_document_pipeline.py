"""Crash tests for the document pipeline: every crash point, both crash modes, depth 2."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from redis import Redis

from durableflow import Checkpointer, Context, Resource, StopEvent, Workflow, crashpoint, step
from examples.document_pipeline import DocumentBatch, DocumentPipeline, get_redis_client

MODES = ["inprocess", "kill"]


@pytest.mark.parametrize("mode", MODES)
def test_every_crash_point_converts_each_document_exactly_once(crash_harness: Any, mode: str) -> None:
    """Killed at any crash point, and again at any point of the resume, the pipeline ends like an uninterrupted run."""
    report = crash_harness.explore(DocumentPipeline, {"ids": [1, 2]}, depth=2, mode=mode)
    report.assert_ok()
    assert report.reference == [1, 2]
    assert len(report.scenarios) == report.space  # every crash point, none sampled
    assert any(s.id.startswith("user.converted#") for s in report.scenarios)  # the risky window was hit


class PushThenRecordPipeline(Workflow):
    """The loop as first written: RPUSH, then record progress. Not crash safe."""

    @step
    async def convert(
        self, ev: DocumentBatch, ctx: Context, redis: Annotated[Redis, Resource(get_redis_client)]
    ) -> StopEvent:
        done: list[int] = await ctx.store.get("converted_ids", default=[])
        for doc_id in ev.ids:
            if doc_id in done:
                continue
            redis.rpush("converted", doc_id)
            crashpoint("pushed")
            done.append(doc_id)
            await ctx.store.set("converted_ids", done)
            await ctx.checkpoint()
        return StopEvent(result=done)


@pytest.mark.parametrize("mode", MODES)
def test_a_non_idempotent_push_before_the_progress_record_is_caught(crash_harness: Any, mode: str) -> None:
    """A crash between RPUSH and the durable progress record pushes the document twice, and the harness says so."""
    outcome = crash_harness.run_scenario(PushThenRecordPipeline, {"ids": [1, 2]}, crash_at="user.pushed#2", mode=mode)
    assert not outcome.ok
    assert outcome.kind == "duplicated effect"
    assert outcome.result == [1, 2]  # the result looks right: only the outside world shows the duplicate


async def test_a_run_converts_every_document_into_redis(fake_redis: Any, checkpointer: Checkpointer) -> None:
    """An uninterrupted run writes each document's text to the ``converted`` hash and completes durably."""
    handler = DocumentPipeline(checkpointer=checkpointer).run(ids=[1, 2, 3])
    assert await handler == [1, 2, 3]
    assert fake_redis.hgetall("converted") == {
        "1": "converted text of document 1",
        "2": "converted text of document 2",
        "3": "converted text of document 3",
    }
    assert checkpointer.info(handler.run_id).status == "completed"


async def test_progress_is_checkpointed_after_every_document(fake_resources: Any, checkpointer: Checkpointer) -> None:
    """Each document adds one checkpoint, so a crash never redoes more than the document it interrupted."""
    workflow = DocumentPipeline(checkpointer=checkpointer)
    empty, three = workflow.run(ids=[]), workflow.run(ids=[1, 2, 3])
    await empty, await three
    assert checkpointer.info(three.run_id).last_seq == checkpointer.info(empty.run_id).last_seq + 3


async def test_a_restarted_step_skips_documents_its_progress_already_records(
    durable_context: Any, fake_redis: Any
) -> None:
    """A run resumed with document 1 recorded as done converts only documents 2 and 3."""
    workflow = DocumentPipeline()
    ctx = durable_context(workflow, state={"converted_ids": [1]}, events=[DocumentBatch(ids=[1, 2, 3])])
    assert await workflow.run(ctx=ctx) == [1, 2, 3]
    assert sorted(fake_redis.hkeys("converted")) == ["2", "3"]
