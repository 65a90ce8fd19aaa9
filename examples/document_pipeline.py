"""Convert documents one by one, keeping progress in ``ctx.store`` and checkpointing after each document.

Shows the crash-safe shape of a loop with side effects: an idempotent write to Redis, then the durable
progress record, so a step that re-runs after a crash neither loses nor repeats a document.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from redis import Redis
from redis.exceptions import RedisError

from durableflow import (
    Context,
    Resource,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    crashpoint,
    override_resources,
    step,
)


class DocumentBatch(StartEvent):
    """The documents to convert, by id: ``wf.run(ids=[1, 2, 3])``."""

    ids: list[int]


def get_redis_client() -> Redis:
    # redis-py connects lazily, so building the client costs nothing until the first command;
    # the crash harness replaces it with fakeredis (decoding the same way) without being told.
    return Redis(host="localhost", port=6379, decode_responses=True)


def convert_document(doc_id: int) -> str:
    """The conversion itself; deterministic, so converting a document twice gives the same text."""
    return f"converted text of document {doc_id}"


class DocumentPipeline(Workflow):
    """Converts each document of a batch into the Redis hash ``converted``; the result is the ids converted."""

    @step
    async def convert(
        self,
        ev: DocumentBatch,
        ctx: Context,
        redis: Annotated[Redis, Resource(get_redis_client)],
    ) -> StopEvent:
        # After a crash this step runs again from the top; the progress a checkpoint caught tells it
        # which documents to skip.
        done: list[int] = await ctx.store.get("converted_ids", default=[])
        for doc_id in ev.ids:
            if doc_id in done:
                continue
            # The side effect must be idempotent: a crash after it and before the checkpoint below
            # leaves it done in Redis but not in the durable progress, so the resumed step does it
            # again. HSET of the same field to the same value changes nothing the second time;
            # RPUSH would append the document twice (the crash harness reports "duplicated effect").
            redis.hset("converted", str(doc_id), convert_document(doc_id))
            crashpoint("converted")  # the crash harness also dies here, inside that window
            done.append(doc_id)
            await ctx.store.set("converted_ids", done)
            await ctx.checkpoint()  # durable now: a crash from here on does not convert doc_id again
        return StopEvent(result=done)


def demo_redis() -> Callable[[], Redis] | None:
    """A factory of clients for the demo: the real Redis if one answers, else fakeredis, else ``None``."""
    try:
        get_redis_client().ping()
        return get_redis_client
    except RedisError:
        pass
    try:
        import fakeredis
    except ImportError:
        return None
    server = fakeredis.FakeServer()  # one server, so every client sees what the run wrote
    return lambda: fakeredis.FakeRedis(server=server, decode_responses=True)


async def main(ids: list[int]) -> None:
    """Convert ``ids`` once, end to end, with a SQLite checkpointer in a temporary directory."""
    redis_factory = demo_redis()
    if redis_factory is None:
        print("No Redis on localhost:6379 and no fakeredis (pip install '.[pytest]' in durableflow's clone).")
        print(f"With either, this would HSET converted <id> <text> for the ids {ids}.")
        return
    with tempfile.TemporaryDirectory() as tmp, override_resources({get_redis_client: redis_factory}):
        workflow = DocumentPipeline(checkpointer=SQLiteCheckpointer(Path(tmp) / "runs.db"))
        handler = workflow.run(ids=ids)
        print(f"run {handler.run_id} converted documents {await handler}")
        for doc_id, text in sorted(redis_factory().hgetall("converted").items()):
            print(f"  converted[{doc_id!s}] = {text!r}")


if __name__ == "__main__":
    asyncio.run(main([1, 2, 3]))
