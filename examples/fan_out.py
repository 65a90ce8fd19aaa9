"""Fan out one event per text to a step with four workers, then fan in with ``ctx.collect_events``.

Shows ``ctx.send_event`` from a step, ``@step(num_workers=4)``, and a collector whose result does not
depend on the order in which the workers finish.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from durableflow import Context, Event, SQLiteCheckpointer, StartEvent, StopEvent, Workflow, step


class Texts(StartEvent):
    """The texts to count words in: ``wf.run(texts=["a b", "c"])``."""

    texts: list[str]


class CountWords(Event):
    """One text to count, with its position in the batch."""

    index: int
    text: str


class WordsCounted(Event):
    index: int
    words: int


class WordCount(Workflow):
    """Counts the words of every text in parallel; the result is the per-text counts and their total."""

    @step
    async def fan_out(self, ev: Texts, ctx: Context) -> CountWords | None:
        # The collector needs to know how many results to wait for; state is durable with the
        # checkpoint that records this step's completion, together with the events it sent.
        await ctx.store.set("expected", len(ev.texts))
        for index, text in enumerate(ev.texts):
            # If this step re-runs after a crash, the engine matches sends by order and does not
            # deliver again the ones it had already accepted.
            ctx.send_event(CountWords(index=index, text=text))
        return None

    @step(num_workers=4)
    async def count(self, ev: CountWords) -> WordsCounted:
        await asyncio.sleep(0)  # stands in for real I/O: lets the four workers interleave
        return WordsCounted(index=ev.index, words=len(ev.text.split()))

    @step
    async def fan_in(self, ev: WordsCounted, ctx: Context) -> StopEvent | None:
        expected: int = await ctx.store.get("expected")
        results = ctx.collect_events(ev, [WordsCounted] * expected)
        if results is None:
            return None  # not all in yet; the buffer is part of the run's checkpoints
        # With several workers, results arrive in whatever order the workers finish, and a run
        # resumed after a crash can see another order than the first attempt did. Sort by index
        # (and sum) so the result is the same whatever that order was.
        counted = sorted((r for r in results if isinstance(r, WordsCounted)), key=lambda r: r.index)
        return StopEvent(result={"words": [r.words for r in counted], "total": sum(r.words for r in counted)})


async def main(texts: list[str]) -> None:
    """Count the words of ``texts`` once, end to end, with a SQLite checkpointer in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        workflow = WordCount(checkpointer=SQLiteCheckpointer(Path(tmp) / "runs.db"))
        handler = workflow.run(texts=texts)
        result = await handler
        print(f"run {handler.run_id}: words per text {result['words']}, total {result['total']}")


if __name__ == "__main__":
    asyncio.run(main(["the quick brown fox", "jumps over", "the lazy dog", "again"]))
