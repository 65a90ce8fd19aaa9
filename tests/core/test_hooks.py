"""pluggy hooks on a run's life, and crash points: durableflow.crashpoint and the armed listener."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import durableflow
from durableflow import (
    Event,
    MemoryCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    crashpoint,
    hookimpl,
    plugin_manager,
    retry_policy,
    step,
    stop_after_attempt,
    wait_fixed,
)
from durableflow._crashpoints import armed


class Parsed(Event):
    words: list[str]


class Recorder:
    """A plugin that writes down every hook call it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [call[1:] for call in self.calls if call[0] == name]

    @hookimpl
    def durableflow_run_started(self, run_id: str, workflow: Workflow, resumed: bool) -> None:
        self.calls.append(("run_started", run_id, type(workflow).__name__, resumed))

    @hookimpl
    def durableflow_run_finished(
        self, run_id: str, workflow: Workflow, status: str, result: Any, error: BaseException | None
    ) -> None:
        self.calls.append(("run_finished", run_id, status, result, error))

    @hookimpl
    def durableflow_step_started(self, run_id: str, step: str, event: Event, attempt: int) -> None:
        self.calls.append(("step_started", step, type(event).__name__, attempt))

    @hookimpl
    def durableflow_step_finished(
        self, run_id: str, step: str, event: Event, output: Event | None, error: Exception | None
    ) -> None:
        self.calls.append(("step_finished", step, type(output).__name__ if output else None, error))

    @hookimpl
    def durableflow_checkpoint_written(self, run_id: str, seq: int, full: bool) -> None:
        self.calls.append(("checkpoint_written", run_id, seq, full))

    @hookimpl
    def durableflow_crash_point_reached(self, point: str) -> None:
        self.calls.append(("crash_point", point))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    plugin = Recorder()
    plugin_manager.register(plugin)
    try:
        yield plugin
    finally:
        plugin_manager.unregister(plugin)


class WordCount(Workflow):
    @step
    async def parse(self, ev: StartEvent) -> Parsed:
        return Parsed(words=ev.text.split())

    @step
    async def count(self, ev: Parsed) -> StopEvent:
        crashpoint("counting")
        return StopEvent(result=len(ev.words))


async def test_hooks_see_a_run_start_and_finish(recorder: Recorder) -> None:
    """run_started and run_finished fire once each, with the run id, the workflow and the result."""
    handler = WordCount().run(text="a b c")
    assert await handler == 3
    assert recorder.named("run_started") == [(handler.run_id, "WordCount", False)]
    assert recorder.named("run_finished") == [(handler.run_id, "completed", 3, None)]
    assert recorder.calls[0][0] == "run_started"
    assert recorder.calls[-1][0] == "run_finished"


async def test_hooks_see_every_step_start_and_finish(recorder: Recorder) -> None:
    """Each step reports started (with its input and attempt) and finished (with its output), the last step too."""
    await WordCount().run(text="a b")
    assert recorder.named("step_started") == [("parse", "StartEvent", 1), ("count", "Parsed", 1)]
    assert recorder.named("step_finished") == [("parse", "Parsed", None), ("count", "StopEvent", None)]
    order = [call[0] for call in recorder.calls if call[0] in ("step_finished", "run_finished")]
    assert order == ["step_finished", "step_finished", "run_finished"]


async def test_hooks_see_each_checkpoint_written(recorder: Recorder) -> None:
    """With a checkpointer, checkpoint_written reports each durable checkpoint of the run, numbered from 1."""
    handler = WordCount(checkpointer=MemoryCheckpointer()).run(text="a b")
    await handler
    written = recorder.named("checkpoint_written")
    seqs = [seq for run_id, seq, _ in written if run_id == handler.run_id]
    # started, after parse, at the stop: at least those three, in order, without gaps
    assert len(seqs) >= 3
    assert seqs == list(range(1, len(seqs) + 1))
    assert written[0][2] is True  # the first record of a run is a full snapshot


async def test_no_checkpoint_hook_without_a_checkpointer(recorder: Recorder) -> None:
    """Without a checkpointer nothing is written, so checkpoint_written never fires."""
    await WordCount().run(text="a")
    assert recorder.named("checkpoint_written") == []
    assert recorder.named("run_finished")  # the plugin was listening


async def test_hooks_see_failed_attempts_and_a_failed_run(recorder: Recorder) -> None:
    """A step that keeps failing reports each attempt and error, then the run finishes as failed with the error."""
    boom = ValueError("bad input")

    class Failing(Workflow):
        @step(retry=retry_policy(wait=wait_fixed(0.001), stop=stop_after_attempt(2)))
        async def only(self, ev: StartEvent) -> StopEvent:
            raise boom

    with pytest.raises(ValueError):
        await Failing().run()
    assert recorder.named("step_started") == [("only", "StartEvent", 1), ("only", "StartEvent", 2)]
    assert recorder.named("step_finished") == [("only", None, boom), ("only", None, boom)]
    [(_, status, result, error)] = recorder.named("run_finished")
    assert (status, result, error) == ("failed", None, boom)


async def test_hooks_see_a_cancelled_run(recorder: Recorder) -> None:
    """A cancelled run finishes with status cancelled."""
    started = asyncio.Event()

    class Long(Workflow):
        @step
        async def wait(self, ev: StartEvent) -> StopEvent:
            started.set()
            await asyncio.sleep(10)
            return StopEvent()

    handler = Long().run()
    await asyncio.wait_for(started.wait(), 2)
    handler.cancel()
    with pytest.raises(WorkflowCancelledError):
        await handler
    assert [status for _, status, _, _ in recorder.named("run_finished")] == ["cancelled"]


async def test_hooks_see_crash_points_reached(recorder: Recorder) -> None:
    """The crash point hook sees the engine's points and user crashpoint() calls as user.<name>."""
    await WordCount(checkpointer=MemoryCheckpointer()).run(text="a")
    points = [point for (point,) in recorder.named("crash_point")]
    for expected in (
        "step.parse.start",
        "step.parse.end",
        "step.count.start",
        "user.counting",
        "checkpoint.write.before",
        "checkpoint.write.after",
    ):
        assert expected in points
    assert points.index("step.count.start") < points.index("user.counting")


async def test_unregistered_plugin_hears_nothing() -> None:
    """After unregister, a plugin receives no more calls."""
    plugin = Recorder()
    plugin_manager.register(plugin)
    await WordCount().run(text="a")
    heard = len(plugin.calls)
    plugin_manager.unregister(plugin)
    await WordCount().run(text="a")
    crashpoint("after")
    assert heard > 0
    assert len(plugin.calls) == heard


def test_crashpoint_is_a_no_op_when_nothing_listens() -> None:
    """crashpoint(name) outside any listener does nothing and returns None."""
    assert crashpoint("nobody.listens") is None


def test_armed_callback_sees_user_points() -> None:
    """Inside armed(callback), crashpoint("x") reaches the callback as "user.x"; after the block it does not."""
    seen: list[str] = []
    with armed(seen.append):
        crashpoint("charge")
        crashpoint("refund")
    crashpoint("outside")
    assert seen == ["user.charge", "user.refund"]


def test_armed_blocks_nest_and_restore_the_outer_callback() -> None:
    """An inner armed block replaces the listener for its duration only."""
    outer: list[str] = []
    inner: list[str] = []
    with armed(outer.append):
        with armed(inner.append):
            crashpoint("a")
        crashpoint("b")
    assert (outer, inner) == (["user.b"], ["user.a"])


class Crash(BaseException):
    """What a crash harness raises: not an Exception, so user code cannot swallow it."""


async def test_armed_callback_raising_crashes_the_run_and_it_resumes_from_its_checkpoint() -> None:
    """A callback raising at a crash point abandons the run; resume finishes it without redoing finished steps."""
    store = MemoryCheckpointer()
    ran: list[str] = []

    class Counted(Workflow):
        @step
        async def parse(self, ev: StartEvent) -> Parsed:
            ran.append("parse")
            return Parsed(words=ev.text.split())

        @step
        async def count(self, ev: Parsed) -> StopEvent:
            ran.append("count")
            crashpoint("before-result")
            return StopEvent(result=len(ev.words))

    def crash_once(point: str) -> None:
        if point == "user.before-result" and ran.count("count") == 1:
            raise Crash(point)

    with armed(crash_once):
        handler = Counted(checkpointer=store).run(text="x y z")
        with pytest.raises(Crash):
            await handler
        assert ran == ["parse", "count"]
        resumed = Counted(checkpointer=store).resume(handler.run_id)
        assert await resumed == 3
    assert ran == ["parse", "count", "count"]


def test_package_exports_the_hook_machinery() -> None:
    """hookimpl, HookSpecs and plugin_manager are public, and the specs cover the run's life."""
    assert durableflow.hookimpl is hookimpl
    specs = {name for name in dir(durableflow.HookSpecs) if name.startswith("durableflow_")}
    assert specs == {
        "durableflow_run_started",
        "durableflow_run_finished",
        "durableflow_step_started",
        "durableflow_step_finished",
        "durableflow_checkpoint_written",
        "durableflow_lease_ended",
        "durableflow_crash_point_reached",
    }


class Gate(Workflow):
    def __init__(self, gate: asyncio.Event, **options: Any) -> None:
        super().__init__(**options)
        self.gate = gate

    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        await self.gate.wait()
        return StopEvent(result="done")


async def test_lease_ended_reports_a_run_whose_lease_another_worker_took() -> None:
    """A run that finds at its next checkpoint that another worker holds its lease calls lease_ended(reason="lost")."""
    leases: list[tuple[str, str]] = []

    class Leases:
        @hookimpl
        def durableflow_lease_ended(self, run_id: str, reason: str) -> None:
            leases.append((run_id, reason))

    plugin = Leases()
    plugin_manager.register(plugin)
    try:
        store, gate = MemoryCheckpointer(), asyncio.Event()
        handler = Gate(gate, checkpointer=store).run(run_id="taken")
        await asyncio.sleep(0.01)
        holder = store.info("taken").lease_owner
        store.acquire("taken", "another-worker", steal_from=holder)
        gate.set()
        with pytest.raises(durableflow.RunLeaseError):
            await asyncio.wait_for(handler, 5)
    finally:
        plugin_manager.unregister(plugin)
    assert leases == [("taken", "lost")]
