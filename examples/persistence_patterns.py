"""Three ways to keep a workflow's state, each run for real, and what each of them survives.

The same word tally keeps its running total (1) on the workflow instance, (2) in its context, saved by
hand with ``ctx.to_dict()`` to a SQLite table, or (3) in its context, checkpointed by a ``SQLiteCheckpointer``:

=====================================  ====================  ====================  ============================
where the state is kept                across ``run`` calls  a process restart     a failed step
=====================================  ====================  ====================  ============================
1. attributes of the workflow          kept, on the same     lost: a new instance  kept in memory, but the run
   instance (``self.total``)           instance              starts empty          cannot resume: running it
                                                                                   again redoes its work
2. ``ctx.to_dict()`` saved to a        kept: load it, then   kept                  kept as of the save:
   database, ``Context.from_dict``     ``run(ctx=...)``                            ``run(ctx=restored)``
                                                                                   retries the failed step
3. automatic checkpoints               not shared: each      kept:                 kept: ``resume(run_id)``
   (``Workflow(checkpointer=...)``)    ``run()`` is a new    ``resume(run_id)``    after the fix; finished
                                       run, empty            continues the run     steps do not run again
=====================================  ====================  ====================  ============================

Attributes suit caches and configuration, not progress. Saving the context by hand suits state that
outlives one run (a conversation, say); checkpoints are what make one run survive a crash.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Annotated, Any

from durableflow import (
    Context,
    Event,
    Resource,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    override_resources,
    step,
)


class Texts(StartEvent):
    texts: list[str]


class Remaining(Event):
    """The texts still to count; one step per text, so each text's count is checkpointed on its own."""

    texts: list[str]


class WordCounter:
    """The service the steps ask to count words. It runs locally here; ``outage_after`` simulates it going down."""

    def __init__(self, outage_after: int | None = None) -> None:
        self.outage_after = outage_after
        """How many requests it answers before it goes down; ``None``: it never does."""
        self.answered = 0

    def count(self, text: str) -> int:
        if self.outage_after is not None and self.answered >= self.outage_after:
            raise ConnectionError("the word counter is down")
        self.answered += 1
        return len(text.split())


def get_word_counter() -> WordCounter:
    return WordCounter()


class InstanceTally(Workflow):
    """Pattern 1: the running total is an attribute of the workflow instance."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.total = 0

    @step
    async def count(
        self, ev: Texts | Remaining, counter: Annotated[WordCounter, Resource(get_word_counter)]
    ) -> Remaining | StopEvent:
        if not ev.texts:
            return StopEvent(result=self.total)
        text, *rest = ev.texts
        # Plain Python: no checkpoint sees this, and nothing undoes it if a later step fails.
        self.total += counter.count(text)
        return Remaining(texts=rest)


class Tally(Workflow):
    """Patterns 2 and 3: the running total is in the run's context, ``ctx.store``."""

    @step
    async def count(
        self, ev: Texts | Remaining, ctx: Context, counter: Annotated[WordCounter, Resource(get_word_counter)]
    ) -> Remaining | StopEvent:
        total: int = await ctx.store.get("total", default=0)
        if not ev.texts:
            return StopEvent(result=total)
        text, *rest = ev.texts
        # The new total and the Remaining event become durable in the same checkpoint, when this step
        # completes: a step interrupted before that runs again and counts this text once, not twice.
        await ctx.store.set("total", total + counter.count(text))
        return Remaining(texts=rest)


class ContextTable:
    """Pattern 2's database: contexts saved as JSON in a SQLite table, by name."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS contexts (name TEXT PRIMARY KEY, data TEXT NOT NULL)")

    def save(self, name: str, ctx: Context) -> None:
        with self.db:  # one transaction: the saved context is the old one or the new one, never half
            self.db.execute(
                "INSERT INTO contexts (name, data) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                (name, json.dumps(ctx.to_dict())),
            )

    def load(self, workflow: Workflow, name: str) -> Context:
        """The saved context, for ``workflow.run(ctx=...)``; a ``SnapshotError`` if it was edited or no longer fits."""
        (data,) = self.db.execute("SELECT data FROM contexts WHERE name = ?", (name,)).fetchone()
        return Context.from_dict(workflow, json.loads(data))

    def close(self) -> None:
        self.db.close()


async def main() -> None:
    """Run each pattern once and print what it kept."""
    texts = ["the quick brown fox", "jumps over", "the lazy dog"]  # 9 words
    with tempfile.TemporaryDirectory() as tmp:
        print("1. attributes of the workflow instance")
        tally = InstanceTally()
        first, second = await tally.run(texts=texts), await tally.run(texts=texts)
        print(f"   two runs on one instance: {first}, then {second}")
        print(f"   a new instance, as after a restart, starts over: {await InstanceTally().run(texts=texts)}")

        print("2. ctx.to_dict() saved to a SQLite table")
        table = ContextTable(Path(tmp) / "contexts.db")
        handler = Tally().run(texts=texts)
        print(f"   a run: {await handler}, saved")
        table.save("tally", handler.ctx)
        table.close()
        table = ContextTable(Path(tmp) / "contexts.db")  # as after a restart: a new connection, a new instance
        workflow = Tally()
        restored = table.load(workflow, "tally")
        print(f"   after a restart, a run from the saved context: {await workflow.run(ctx=restored, texts=texts)}")
        table.close()

        print("3. automatic checkpoints with a SQLiteCheckpointer")
        runs = Path(tmp) / "runs.db"
        counter = WordCounter(outage_after=1)
        with override_resources({get_word_counter: lambda: counter}):
            handler = Tally(checkpointer=SQLiteCheckpointer(runs)).run(texts=texts)
            try:
                await handler
            except ConnectionError as exc:
                print(f"   run {handler.run_id} failed: {exc}")
            counter.outage_after = None  # the service is back
            total = await Tally(checkpointer=SQLiteCheckpointer(runs)).resume(handler.run_id)
            print(f"   resumed by a new instance after the fix: {total}")
            print(
                f"   {counter.answered} texts counted in all: the one counted before the failure was not counted again"
            )


if __name__ == "__main__":
    asyncio.run(main())
