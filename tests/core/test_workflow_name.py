"""A run is bound to its workflow's name, not its module: a script's run resumes in a process that imports it."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest

from durableflow import Context, MemoryCheckpointer, SnapshotError, StartEvent, StopEvent, Workflow, step

PIPELINE = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from durableflow import Context, Event, SQLiteCheckpointer, StartEvent, StopEvent, Workflow, step

    class Doubled(Event):
        value: int

    class Pipeline(Workflow):
        @step
        async def double(self, ev: StartEvent) -> Doubled:
            return Doubled(value=ev.n * 2, note=ev.note)

        @step
        async def finish(self, ev: Doubled, ctx: Context) -> StopEvent:
            if os.environ.get("DIE_IN_FINISH"):
                with open(os.environ["DIE_IN_FINISH"], "w") as saved:
                    json.dump(ctx.to_dict(), saved)
                os._exit(0)  # the process dies mid-run, after the first step's checkpoint
            return StopEvent(result=f"{ev.value} {ev.note}")

    async def start(db):
        handler = Pipeline(checkpointer=SQLiteCheckpointer(db)).run(run_id="r1", n=21, note="kept")
        await handler

    if __name__ == "__main__":
        asyncio.run(start(sys.argv[1]))
    """
)

RESUME = textwrap.dedent(
    """
    import asyncio, json, sys
    from durableflow import Context, SQLiteCheckpointer
    from pipeline import Pipeline

    async def main(db, saved):
        resumed = await Pipeline(checkpointer=SQLiteCheckpointer(db)).resume("r1")
        restored = Context.from_dict(Pipeline(), json.load(open(saved)))
        print(json.dumps([resumed, await Pipeline().run(ctx=restored)]))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_a_run_started_in_main_resumes_in_a_process_that_imports_the_script(tmp_path: Path) -> None:
    """`python pipeline.py` dies mid-run; another process that imports pipeline resumes it and restores its to_dict."""
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    (tmp_path / "resume.py").write_text(RESUME)
    db, saved = str(tmp_path / "runs.db"), str(tmp_path / "saved.json")
    env = {"DIE_IN_FINISH": saved, "PATH": "/usr/bin:/bin"}
    died = subprocess.run(
        [sys.executable, "pipeline.py", db], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert died.returncode == 0, died.stderr
    assert json.loads(Path(saved).read_text())["workflow"] == "Pipeline"
    resumed = subprocess.run(
        [sys.executable, "resume.py", db, saved], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == ["42 kept", "42 kept"]


class Report(Workflow):
    @step
    async def write(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="done")


class NamedReport(Report):
    workflow_name = "reports"


def test_the_default_name_is_the_class_qualname_and_can_be_set() -> None:
    """workflow_name defaults to the class's qualified name; a class attribute or the constructor sets another."""
    assert Report().workflow_name == "Report"
    assert NamedReport().workflow_name == "reports"
    assert Report(workflow_name="monthly").workflow_name == "monthly"
    assert NamedReport(workflow_name="weekly").workflow_name == "weekly"
    with pytest.raises(ValueError, match="workflow_name"):
        Report(workflow_name="")


class SavesMidRun(Workflow):
    saved: ClassVar[list[dict[str, Any]]] = []

    @step
    async def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("draft", "x")
        self.saved.append(ctx.to_dict())  # its StartEvent is still owed to this step
        return StopEvent(result="done")


async def test_a_run_of_another_name_is_refused_while_it_owes_work() -> None:
    """A stored run, or a context saved mid-run, resumes only under the workflow_name that started it."""
    store = MemoryCheckpointer()
    await Report(checkpointer=store, workflow_name="monthly").run(run_id="m1")
    assert store.info("m1").workflow == "monthly"
    await SavesMidRun(workflow_name="monthly").run()
    saved = SavesMidRun.saved[-1]
    with pytest.raises(SnapshotError, match="'monthly', not 'weekly'"):
        Context.from_dict(SavesMidRun(workflow_name="weekly"), saved)
    assert Context.from_dict(SavesMidRun(workflow_name="monthly"), saved).run_id == saved["run_id"]


class Seeder(Workflow):
    @step
    async def seed(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("existing", "orig")
        return StopEvent(result="seeded")


class Reader(Workflow):
    @step
    async def read(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=f"{await ctx.store.get('existing')}-{await ctx.store.get('added')}")


async def test_a_finished_context_of_another_workflow_seeds_only_its_state() -> None:
    """A completed run owes nothing to any step, so another workflow may take its state for a new run."""
    saved = (await _finished_context(Seeder())).to_dict()
    restored = Context.from_dict(Reader(), saved)
    assert restored.run_id == ""  # not the finished run: a new one starts
    await restored.store.set("added", "new")
    handler = Reader().run(ctx=restored)
    assert await handler == "orig-new"
    assert handler.run_id != saved["run_id"]


async def _finished_context(workflow: Workflow) -> Context:
    handler = workflow.run()
    await handler
    return handler.ctx
