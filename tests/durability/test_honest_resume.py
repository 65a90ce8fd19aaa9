"""Promise 6, honest resume: a stored run that no longer fits the code, or comes from another format, raises
SnapshotError naming what changed; loading it never imports a name the workflow did not declare."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TypeVar

import pytest

from durableflow import Context, Event, Record, SnapshotError, StartEvent, StopEvent, Workflow, _snapshot, step

from .conftest import Store
from .crashing import Crash, crash_at, stored_document

W = TypeVar("W", bound=type)
RUN_ID = "article"


def as_version_of(name: str) -> Any:
    """Give a class the module and name of an earlier version, as an edited source file would."""

    def rename(cls: W) -> W:
        cls.__qualname__ = cls.__name__ = name
        return cls

    return rename


class Draft(Event):
    text: str


class Review(Event):
    text: str


@as_version_of("DraftV")
class DraftV1(Event):
    text: str


@as_version_of("DraftV")
class DraftV2(Event):
    words: list[str]


@as_version_of("Article")
class Article(Workflow):
    @step
    async def write(self, ev: StartEvent, ctx: Context) -> Draft:
        return Draft(text=ev.topic)

    @step
    async def edit(self, ev: Draft, ctx: Context) -> StopEvent:
        return StopEvent(result=ev.text.upper())


@as_version_of("Article")
class ArticleWithRenamedStep(Workflow):
    @step
    async def write(self, ev: StartEvent, ctx: Context) -> Draft:
        return Draft(text=ev.topic)

    @step
    async def polish(self, ev: Draft, ctx: Context) -> StopEvent:
        return StopEvent(result=ev.text.upper())


@as_version_of("Article")
class ArticleWithRetypedStep(Workflow):
    @step
    async def write(self, ev: StartEvent, ctx: Context) -> Review:
        return Review(text=ev.topic)

    @step
    async def edit(self, ev: Review, ctx: Context) -> StopEvent:
        return StopEvent(result=ev.text.upper())


@as_version_of("Essay")
class Essay(Workflow):
    @step
    async def write(self, ev: StartEvent, ctx: Context) -> DraftV1:
        return DraftV1(text=ev.topic)

    @step
    async def edit(self, ev: DraftV1, ctx: Context) -> StopEvent:
        return StopEvent(result=ev.text.upper())


@as_version_of("Essay")
class EssayWithChangedEvent(Workflow):
    @step
    async def write(self, ev: StartEvent, ctx: Context) -> DraftV2:
        return DraftV2(words=ev.topic.split())

    @step
    async def edit(self, ev: DraftV2, ctx: Context) -> StopEvent:
        return StopEvent(result=" ".join(ev.words).upper())


async def _interrupted_before_edit(store: Store, workflow: type[Workflow]) -> None:
    """A run of ``workflow`` that crashed as step edit began: edit still owes the run its Draft."""
    with crash_at("step.edit.start#1"), pytest.raises(Crash):
        await workflow(checkpointer=store.open()).run(run_id=RUN_ID, topic="durable runs")


async def test_the_unchanged_workflow_resumes(store: Store) -> None:
    """The same code resumes the interrupted run, so the failures below come from the changes alone."""
    await _interrupted_before_edit(store, Article)
    assert await Article(checkpointer=store.open()).resume(RUN_ID) == "DURABLE RUNS"


async def test_a_renamed_pending_step_raises_snapshot_error_naming_it(store: Store) -> None:
    """Resuming with the pending step renamed raises SnapshotError naming the step that is gone."""
    await _interrupted_before_edit(store, Article)
    with pytest.raises(SnapshotError, match=r"step 'edit' was removed or renamed") as raised:
        await ArticleWithRenamedStep(checkpointer=store.open()).resume(RUN_ID)
    assert RUN_ID in str(raised.value)
    assert await Article(checkpointer=store.open()).resume(RUN_ID) == "DURABLE RUNS"  # nothing was overwritten


async def test_a_step_that_accepts_another_event_raises_snapshot_error_naming_both(store: Store) -> None:
    """Resuming with the pending step now accepting another event type names the step and both types."""
    await _interrupted_before_edit(store, Article)
    with pytest.raises(SnapshotError) as raised:
        await ArticleWithRetypedStep(checkpointer=store.open()).resume(RUN_ID)
    message = str(raised.value)
    assert "'edit'" in message and "Draft" in message and "Review" in message


async def test_an_event_whose_fields_changed_raises_snapshot_error_naming_it(store: Store) -> None:
    """Resuming with a stored event's class changed incompatibly raises SnapshotError naming the event and field."""
    await _interrupted_before_edit(store, Essay)
    with pytest.raises(SnapshotError, match=r"DraftV") as raised:
        await EssayWithChangedEvent(checkpointer=store.open()).resume(RUN_ID)
    assert "words" in str(raised.value)


def _forge(store: Store, run_id: str, edit: Any) -> int:
    """Store the interrupted run's document again, edited, as run ``run_id``: one correctly framed record.

    Returns the record's sequence number."""
    checkpointer = store.open()
    document = stored_document(checkpointer, RUN_ID)
    document["run_id"] = run_id
    edit(document)
    record = Record(document["seq"], True, _snapshot.frame(json.dumps(document), run_id, document["seq"]))
    checkpointer.create(run_id, checkpointer.info(RUN_ID).workflow, record, "forger")
    checkpointer.release(run_id, "forger")
    return record.seq


async def test_a_record_of_another_format_version_raises_snapshot_error(store: Store) -> None:
    """A record that names format 3 (newer than this durableflow) is refused with SnapshotError naming the format,
    even with a valid checksum."""
    await _interrupted_before_edit(store, Article)
    seq = _forge(store, "format-3", lambda document: document.update(format=3))
    with pytest.raises(SnapshotError, match=r"format 3") as raised:
        await Article(checkpointer=store.open()).resume("format-3")
    assert (raised.value.run_id, raised.value.seq) == ("format-3", seq)
    _forge(store, "copy", lambda document: None)
    assert await Article(checkpointer=store.open()).resume("copy") == "DURABLE RUNS"  # the copying alone is harmless


async def test_loading_never_imports_an_undeclared_event_type(store: Store, tmp_path: Path) -> None:
    """A record naming an event type from a module the workflow never declared fails without importing it."""
    trap = tmp_path / "durableflow_trap_module.py"
    marker = tmp_path / "imported"
    trap.write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom durableflow import Event\nclass Draft(Event):\n    text: str\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        await _interrupted_before_edit(store, Article)

        def point_at_trap(document: dict[str, Any]) -> None:
            for event in document["events"].values():
                if event[0] == "Draft":
                    event[0] = "durableflow_trap_module.Draft"

        _forge(store, "trapped", point_at_trap)
        with pytest.raises(SnapshotError, match=r"durableflow_trap_module\.Draft"):
            await Article(checkpointer=store.open()).resume("trapped")
    finally:
        sys.path.remove(str(tmp_path))
    assert not marker.exists()
    assert "durableflow_trap_module" not in sys.modules
