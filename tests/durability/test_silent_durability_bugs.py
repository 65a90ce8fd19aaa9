"""Durability bugs that leave a run looking fine until the crash it was meant to survive.

Each test here fails when its bug is put back: fsync durability that does not sync, a delta that forgets
deleted keys, a compaction that forgets effects, a lease renewed once and never again, a resume that runs
what a completed run still had pending, and a restored run waiting for input listed as running.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RunLeaseError,
    RunNotFoundError,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from durableflow._checkpointing import COMPACT_AFTER

from .conftest import Store
from .crashing import Crash, crash_at, settle, stored_document

# -- durability="fsync" -------------------------------------------------------------------------


class Counter(Workflow):
    @step
    async def count(self, ev: StartEvent, ctx: Context) -> StopEvent:
        for n in range(ev.times):
            await ctx.store.set("n", n)
            await ctx.checkpoint()
        return StopEvent(result=ev.times)


@pytest.mark.parametrize(("durability", "level"), [("fsync", 2), ("normal", 1)])
async def test_each_connection_a_checkpoint_goes_through_has_the_synchronous_level_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str, level: int
) -> None:
    """Every SQLite connection the checkpointer opens runs with PRAGMA synchronous FULL (2) for "fsync" and
    NORMAL (1) for "normal", read back from the connection itself after the run's commits."""
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        if args[0] != ":memory:":  # not the layout's own schema, built once per process to compare files with
            opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", recording)
    checkpointer = SQLiteCheckpointer(tmp_path / "runs.db", durability=durability)  # type: ignore[arg-type]
    assert await Counter(checkpointer=checkpointer).run(times=3) == 3
    assert opened, "the checkpointer wrote through no connection of its own"
    assert [conn.execute("PRAGMA synchronous").fetchone()[0] for conn in opened] == [level] * len(opened)
    checkpointer.close()


SYNCING = textwrap.dedent(
    """
    import asyncio, sys
    from durableflow import Context, SQLiteCheckpointer, StartEvent, StopEvent, Workflow, step

    class Counter(Workflow):
        @step
        async def count(self, ev: StartEvent, ctx: Context) -> StopEvent:
            for n in range(ev.times):
                await ctx.store.set("n", n)
                await ctx.checkpoint()
            return StopEvent(result=ev.times)

    async def main() -> None:
        await Counter(checkpointer=SQLiteCheckpointer(sys.argv[1], durability=sys.argv[2])).run(times=int(sys.argv[3]))

    asyncio.run(main())
    """
)


@pytest.mark.skipif(shutil.which("strace") is None, reason="counting fsync calls needs strace")
def test_fsync_durability_syncs_the_disk_at_every_checkpoint(tmp_path: Path) -> None:
    """Counted with strace: a run of 30 checkpoints with durability="fsync" calls fsync/fdatasync at least once
    per commit; with "normal", far fewer times (only when the WAL is checkpointed into the database)."""
    script = tmp_path / "syncing.py"
    script.write_text(SYNCING)
    syncs = {}
    for durability in ("fsync", "normal"):
        trace = tmp_path / f"{durability}.trace"
        done = subprocess.run(
            ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace), sys.executable, str(script),
             str(tmp_path / f"{durability}.db"), durability, "30"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0 and "ptrace" in done.stderr:
            pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
        assert done.returncode == 0, done.stderr
        syncs[durability] = sum("sync(" in line for line in trace.read_text().splitlines())
    assert syncs["fsync"] >= 30, syncs
    assert syncs["normal"] < 15, syncs


# -- deleted state keys -------------------------------------------------------------------------


class Scratch(Event):
    pass


class Tidy(Workflow):
    """Uses a scratch key, removes it (in one of several ways), then reads the state in a later step."""

    def __init__(self, how: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.how = how

    @step
    async def work(self, ev: StartEvent, ctx: Context) -> Scratch:
        await ctx.store.set("kept", 1)
        await ctx.store.set("scratch", "temporary")
        await ctx.checkpoint()
        if self.how == "delete":
            await ctx.store.delete("scratch")
        elif self.how == "clear":
            await ctx.store.clear()
            await ctx.store.set("kept", 1)
        elif self.how == "edit_state":
            async with ctx.store.edit_state() as state:
                del state["scratch"]
        else:
            await ctx.store.set_state({"kept": 1})
        return Scratch()

    @step
    async def read(self, ev: Scratch, ctx: Context) -> StopEvent:
        return StopEvent(result=await ctx.store.get_state())


@pytest.mark.parametrize("how", ["delete", "clear", "edit_state", "set_state"])
async def test_a_key_deleted_before_a_checkpoint_stays_deleted_after_a_resume(store: Store, how: str) -> None:
    """A state key removed in a step (delete, clear, edit_state, set_state) is gone from the stored run, and a
    resume after a crash in the next step does not bring it back."""
    with crash_at("step.read.start#1"), pytest.raises(Crash):
        await Tidy(how, checkpointer=store.open()).run(run_id="tidy")
    assert stored_document(store.open(), "tidy")["state"] == {"kept": 1}
    assert await Tidy(how, checkpointer=store.open()).resume("tidy") == {"kept": 1}


# -- compaction and effects ---------------------------------------------------------------------

CHARGES: list[str] = []


class LongRun(Workflow):
    """Charges once, then rewrites one small key until its deltas have been folded into a full snapshot."""

    @step
    async def charge(self, ev: StartEvent, ctx: Context) -> Scratch:
        await ctx.effect("charge", lambda idempotency_key: CHARGES.append(idempotency_key) or "receipt")
        return Scratch()

    @step
    async def churn(self, ev: Scratch, ctx: Context) -> StopEvent:
        start = await ctx.store.get("round", default=0)
        for n in range(start, ev_rounds()):
            await ctx.store.set("round", n + 1)
            await ctx.store.set("blob", "x" * 1024)
            await ctx.checkpoint()
        return StopEvent(result=await ctx.effect("charge", lambda: "charged again"))


def ev_rounds() -> int:
    return 3 * COMPACT_AFTER // 1024  # enough 1 kB deltas to pass the compaction threshold at least twice


async def test_effects_recorded_before_a_compaction_are_served_after_it(store: Store) -> None:
    """An effect recorded early stays recorded through compactions: after a crash late in the run, the resume
    serves its result instead of charging again."""
    CHARGES.clear()
    with crash_at(f"checkpoint.write.before#{ev_rounds() + 2}"), pytest.raises(Crash):
        await LongRun(checkpointer=store.open()).run(run_id="long")
    records = store.open().load("long")
    assert records[0].full and records[0].seq > 2, "the test must cross a compaction"
    assert "charge" in stored_document(store.open(), "long")["effects"]
    assert await LongRun(checkpointer=store.open()).resume("long") == "receipt"
    assert CHARGES == ["long:charge"]


# -- lease renewal ------------------------------------------------------------------------------


class Renewals:
    """Counts a checkpointer's lease renewals and what they answered."""

    def __init__(self, checkpointer: Any) -> None:
        self.answers: list[bool] = []
        renew = checkpointer.renew

        def counted(run_id: str, owner: str) -> bool:
            self.answers.append(renew(run_id, owner))
            return self.answers[-1]

        checkpointer.renew = counted


class Slow(Workflow):
    @step
    async def work(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await asyncio.sleep(ev.seconds)
        return StopEvent(result="done")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_lease_is_renewed_for_as_long_as_the_run_takes(make_store: Any, kind: str) -> None:
    """A step that runs for several lease lifetimes keeps its lease: renewed again and again (not once), so
    another worker cannot take the run over while it is driven."""
    store = make_store(kind)
    checkpointer = store.open()
    checkpointer.lease_ttl = 0.6  # renewed every 0.2 s
    renewals = Renewals(checkpointer)
    handler = Slow(checkpointer=checkpointer).run(run_id="slow", seconds=1.6)
    await asyncio.sleep(1.2)  # past two lease lifetimes: held only if renewed more than once
    rival = store.open() if kind != "memory" else checkpointer
    with pytest.raises(RunLeaseError):
        rival.acquire("slow", "rival-host:1:worker")
    assert await handler == "done"
    assert len(renewals.answers) >= 3 and all(renewals.answers), renewals.answers


# -- a completed run's leftovers ----------------------------------------------------------------

FOUND: list[int] = []


class Item(Event):
    n: int


class FirstWins(Workflow):
    """Fans out three items; the first one searched ends the run, leaving the others pending."""

    @step
    async def fan_out(self, ev: StartEvent, ctx: Context) -> Item | None:
        for n in range(3):
            ctx.send_event(Item(n=n))

    @step(num_workers=1)
    async def search(self, ev: Item) -> StopEvent:
        FOUND.append(ev.n)
        return StopEvent(result=f"found {ev.n}")


async def test_resuming_a_completed_run_runs_nothing_it_had_pending(store: Store) -> None:
    """A run that completed while deliveries were still pending returns its result on resume without running
    them, and writes nothing."""
    FOUND.clear()
    assert await FirstWins(checkpointer=store.open()).run(run_id="race") == "found 0"
    document = stored_document(store.open(), "race")
    assert document["status"] == "completed" and document["deliveries"], "the test needs leftovers"
    records = len(store.open().load("race"))
    assert await FirstWins(checkpointer=store.open()).resume("race") == "found 0"
    assert FOUND == [0]
    assert len(store.open().load("race")) == records
    assert store.open().info("race").status == "completed"


# -- a restored run waiting for input -----------------------------------------------------------


class Approval(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="approve?")

    @step
    async def decide(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


async def waiting_snapshot() -> dict[str, Any]:
    """ctx.to_dict() of a run that waits for input."""
    handler = Approval().run(run_id="approval")
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    saved = handler.ctx.to_dict()
    handler.cancel()
    with contextlib.suppress(Exception):
        await handler
    return saved


@pytest.mark.parametrize("stored_before", [False, True], ids=["new store", "store holding the run"])
async def test_a_restored_run_waiting_for_input_is_stored_as_waiting(store: Store, stored_before: bool) -> None:
    """Continuing a ctx.to_dict() of a run that waits for input stores it as waiting, both in a store that did
    not hold it (create writes every run as running) and in one whose process died while it waited; it is
    listed as waiting, and answered later."""
    await _restored_waiting_run_is_stored_as_waiting(store, stored_before)


async def test_a_restored_run_waiting_for_input_is_stored_as_waiting_by_a_slow_store(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, with every write 50 ms slow: the test waits for the write, however late it lands (it once
    looked 10 ms after the request was read, and failed on a loaded machine)."""
    kind = type(store.open())
    append = kind.append

    def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return append(self, *args, **kwargs)

    monkeypatch.setattr(kind, "append", slow)
    if hasattr(kind, "append_many"):
        append_many = kind.append_many

        def slow_many(self: Any, *args: Any, **kwargs: Any) -> Any:
            time.sleep(0.05)
            return append_many(self, *args, **kwargs)

        monkeypatch.setattr(kind, "append_many", slow_many)
    await _restored_waiting_run_is_stored_as_waiting(store, stored_before=False)


async def _restored_waiting_run_is_stored_as_waiting(store: Store, stored_before: bool) -> None:
    saved = await waiting_snapshot()
    if stored_before:
        with crash_at("checkpoint.write.after#2"), pytest.raises(Crash):
            await Approval(checkpointer=store.open()).run(run_id="approval")
        assert store.open().info("approval").status == "waiting"
    workflow = Approval(checkpointer=store.open())
    handler = workflow.run(ctx=Context.from_dict(workflow, saved))
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    reader = store.open()

    def status() -> str | None:
        try:
            return reader.info("approval").status
        except RunNotFoundError:  # not even created yet
            return None

    # a threaded store creates the run, then writes it as waiting, from its own thread, after the request is
    # shown: wait for that (with a deadline), not for a while
    await settle(lambda: status() == "waiting")
    assert [info.run_id for info in store.open().runs(status="waiting")] == ["approval"]
    handler.send_event(HumanResponseEvent(response="yes"))
    assert await handler == "yes"
