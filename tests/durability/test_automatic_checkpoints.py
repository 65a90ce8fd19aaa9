"""Promise 2, automatic checkpoints: at the start, after each step, at the end, and at each ctx.checkpoint()."""

from __future__ import annotations

import json
from typing import Any

import pytest

from durableflow import MemoryCheckpointer

from .conftest import HookRecorder
from .crashing import stored_document
from .workflows import Pipeline


def pending(document: dict[str, Any]) -> list[tuple[str, str]]:
    """The deliveries a stored run still owes, as (step, event type name)."""
    owed = []
    for key in document["deliveries"]:
        eid, _, step_name = key.partition(":")
        owed.append((step_name, document["events"][eid][0].rpartition(".")[2]))
    return sorted(owed)


async def _run(ids: list[int], hooks: HookRecorder) -> tuple[list[dict[str, Any]], MemoryCheckpointer, str]:
    checkpointer = MemoryCheckpointer()
    documents: list[dict[str, Any]] = []
    hooks.on_checkpoint = lambda run_id, seq: documents.append(stored_document(checkpointer, run_id))
    handler = Pipeline(checkpointer=checkpointer).run(ids=ids)
    await handler
    hooks.on_checkpoint = None
    return documents, checkpointer, handler.run_id


async def test_a_run_is_checkpointed_at_start_after_each_step_and_at_the_end(hooks: HookRecorder) -> None:
    """A three-step run writes four checkpoints: start, after fetch, after convert, and its end after publish."""
    documents, checkpointer, run_id = await _run([], hooks)
    assert [seq for _, seq, _ in hooks.checkpoints] == [1, 2, 3, 4]
    start, after_fetch, after_convert, end = documents
    assert (start["status"], pending(start), start["state"]) == ("running", [("fetch", "StartEvent")], {})
    # after a step: its input consumed, its output queued for the next step, its state written
    assert pending(after_fetch) == [("convert", "Fetched")]
    assert after_fetch["state"] == {"fetched": []}
    assert pending(after_convert) == [("publish", "Converted")]
    assert after_convert["state"] == {"fetched": []}  # convert had nothing to convert
    assert (end["status"], pending(end), end["state"]["published"]) == ("completed", [], 0)
    assert end["result"][1]["result"] == {"published": 0, "converted": []}
    info = checkpointer.info(run_id)
    assert (info.status, info.last_seq, json.loads(info.result or "null")) == (
        "completed",
        4,
        end["result"][1]["result"],
    )


@pytest.mark.parametrize("calls", [1, 3])
async def test_ctx_checkpoint_adds_one_checkpoint_mid_step(hooks: HookRecorder, calls: int) -> None:
    """Each ctx.checkpoint() in a step writes one more checkpoint holding the state so far, the input still owed."""
    ids = list(range(10, 10 + calls))
    documents, _, _ = await _run(ids, hooks)
    assert [seq for _, seq, _ in hooks.checkpoints] == list(range(1, 5 + calls))
    mid_step = documents[2 : 2 + calls]
    for done, document in enumerate(mid_step, start=1):
        assert pending(document) == [("convert", "Fetched")]  # the step has not completed
        assert document["state"]["converted"] == ids[:done]
    assert pending(documents[2 + calls]) == [("publish", "Converted")]


async def test_a_run_without_a_checkpointer_writes_nothing(hooks: HookRecorder) -> None:
    """Checkpoints need a checkpointer: a plain Workflow() run still finishes, and no checkpoint hook fires."""
    assert Pipeline().checkpointer is None
    assert await Pipeline().run(ids=[1]) == {"published": 1, "converted": [1]}
    assert hooks.checkpoints == []
