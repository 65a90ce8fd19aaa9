"""Persistence by hand: ctx.to_dict() / Context.from_dict(), and what a restored run does and refuses."""

import asyncio
import copy
import json
import sys
import warnings
from typing import Any

import pytest

from durableflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    SnapshotError,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    step,
)


class Prepared(Event):
    n: int


class Reviewed(Event):
    n: int


class Pipeline(Workflow):
    """prepare -> review -> publish; review can be held at a gate so a snapshot catches it in flight."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        super().__init__(timeout=5)
        self.gate = gate
        self.calls: list[tuple[str, int]] = []

    @step
    async def prepare(self, ev: StartEvent, ctx: Context) -> Prepared:
        self.calls.append(("prepare", ev.n))
        await ctx.store.set("prepared", {"n": ev.n, "by": "prepare"})
        return Prepared(n=ev.n * 2)

    @step
    async def review(self, ev: Prepared, ctx: Context) -> Reviewed:
        self.calls.append(("review", ev.n))
        if self.gate is not None:
            await self.gate.wait()
        return Reviewed(n=ev.n + 1)

    @step
    async def publish(self, ev: Reviewed, ctx: Context) -> StopEvent:
        self.calls.append(("publish", ev.n))
        prepared = await ctx.store.get("prepared")
        return StopEvent(result={"published": ev.n, "from": prepared["n"]})


async def paused_snapshot(until: Any) -> dict[str, Any]:
    """A snapshot of a Pipeline run taken from handler code while `review` is in flight, as JSON text round-tripped."""
    wf = Pipeline(gate=asyncio.Event())
    handler = wf.run(n=5)
    await until(lambda: ("review", 10) in wf.calls)
    data = handler.ctx.to_dict()
    handler.cancel()  # the original run goes away; only the dict survives
    with pytest.raises(WorkflowCancelledError):
        await handler
    return json.loads(json.dumps(data))


async def test_to_dict_from_handler_code_is_json_compatible(until) -> None:
    """ctx.to_dict() of a running run survives a json.dumps/json.loads round trip unchanged."""
    wf = Pipeline(gate=asyncio.Event())
    handler = wf.run(n=1)
    await until(lambda: bool(wf.calls) and wf.calls[-1][0] == "review")
    data = handler.ctx.to_dict()
    assert isinstance(data, dict)
    assert json.loads(json.dumps(data)) == data
    wf.gate.set()
    assert await handler == {"published": 3, "from": 1}


async def test_restored_run_continues_without_redoing_completed_work(until) -> None:
    """A restored run skips completed steps, redelivers the in-flight event and ends like an uninterrupted run."""
    data = await paused_snapshot(until)
    uninterrupted = await Pipeline().run(n=5)

    wf = Pipeline()
    restored = Context.from_dict(wf, data)
    handler = wf.run(ctx=restored)
    assert await handler == uninterrupted == {"published": 11, "from": 5}
    assert wf.calls == [("review", 10), ("publish", 11)]
    assert handler.run_id == data["run_id"]


async def test_restored_context_keeps_the_state(until) -> None:
    """The store of a restored context holds what the run had stored."""
    data = await paused_snapshot(until)
    restored = Context.from_dict(Pipeline(), data)
    assert await restored.store.get("prepared") == {"n": 5, "by": "prepare"}


async def test_a_snapshot_can_be_restored_twice(until) -> None:
    """One dict restores into independent runs; restoring does not consume or alter it."""
    data = await paused_snapshot(until)
    kept = copy.deepcopy(data)
    first = await Pipeline().run(ctx=Context.from_dict(Pipeline(), data))
    second_wf = Pipeline()
    second = await second_wf.run(ctx=Context.from_dict(second_wf, data))
    assert first == second == {"published": 11, "from": 5}
    assert data == kept


class Snapshotting(Workflow):
    """A step that snapshots itself mid-way, once, and keeps going."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.snapshots: list[dict[str, Any]] = []
        self.inputs: list[int] = []

    @step
    async def begin(self, ev: StartEvent, ctx: Context) -> Prepared:
        return Prepared(n=ev.n)

    @step
    async def work(self, ev: Prepared, ctx: Context) -> StopEvent:
        self.inputs.append(ev.n)
        done = await ctx.store.get("done", default=[])
        done.append("half")
        await ctx.store.set("done", done)
        if not self.snapshots:
            self.snapshots.append(ctx.to_dict())
        return StopEvent(result={"n": ev.n, "done": await ctx.store.get("done")})


async def test_snapshot_inside_a_step_redelivers_that_steps_input() -> None:
    """A snapshot taken inside a step resumes with that step's input delivered again."""
    first = Snapshotting()
    assert await first.run(n=7) == {"n": 7, "done": ["half"]}
    data = json.loads(json.dumps(first.snapshots[0]))

    again = Snapshotting()
    result = await again.run(ctx=Context.from_dict(again, data))
    assert again.inputs == [7]
    # the write made before the snapshot is in it, so the re-run step finds it (at-least-once)
    assert result == {"n": 7, "done": ["half", "half"]}


async def test_a_snapshot_inside_a_step_warns_about_nothing_the_step_did_not_call() -> None:
    """``to_dict()`` records whether the run is running without asking ``is_running``, whose use in a step warns."""
    from durableflow._context import _warn_is_running_in_step

    _warn_is_running_in_step.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = Snapshotting()
        await first.run(n=7)

    assert first.snapshots[0]["is_running"] is True
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == []


async def test_snapshot_inside_a_plain_def_step() -> None:
    """ctx.to_dict() works from a thread-run `def` step too."""

    class Sync(Workflow):
        snapshot: dict[str, Any] | None = None

        @step
        def work(self, ev: StartEvent, ctx: Context) -> StopEvent:
            if self.snapshot is None:
                type(self).snapshot = ctx.to_dict()
            return StopEvent(result=ev.n * 3)

    assert await Sync().run(n=2) == 6
    assert Sync.snapshot is not None
    wf = Sync()
    assert await wf.run(ctx=Context.from_dict(wf, json.loads(json.dumps(Sync.snapshot)))) == 6


class Approval(Workflow):
    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.requests = 0

    @step
    async def request(self, ev: StartEvent, ctx: Context) -> InputRequiredEvent:
        self.requests += 1
        await ctx.store.set("amount", ev.amount)
        return InputRequiredEvent(prompt=f"approve {ev.amount}?")

    @step
    async def decide(self, ev: HumanResponseEvent, ctx: Context) -> StopEvent:
        return StopEvent(result=f"{ev.response} {await ctx.store.get('amount')}")


async def test_human_in_the_loop_run_snapshotted_while_waiting_is_finished_after_restore(finish) -> None:
    """A run saved while waiting for a human re-sends its InputRequiredEvent when restored, then finishes."""
    original = Approval()
    handler = original.run(amount=40)
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            data = json.loads(json.dumps(handler.ctx.to_dict()))
            break
    handler.cancel()
    with pytest.raises(WorkflowCancelledError):
        await handler

    wf = Approval()
    resumed = wf.run(ctx=Context.from_dict(wf, data))
    prompts = []
    async for ev in resumed.stream_events():
        if isinstance(ev, InputRequiredEvent):
            prompts.append(ev.prompt)
            resumed.send_event(HumanResponseEvent(response="approved"))
    assert prompts == ["approve 40?"]
    assert await finish(resumed) == "approved 40"
    assert wf.requests == 0  # the request step was not run again


async def test_events_stored_in_state_survive_the_round_trip() -> None:
    """An event kept in ctx.store comes back as the same event type after to_dict/from_dict."""

    class Keeper(Workflow):
        @step
        async def keep(self, ev: StartEvent, ctx: Context) -> Prepared:
            await ctx.store.set("kept", [Prepared(n=1), Prepared(n=2)])
            return Prepared(n=3)

        @step
        async def end(self, ev: Prepared, ctx: Context) -> StopEvent:
            return StopEvent(result=ev.n)

    handler = Keeper().run()
    await handler
    data = json.loads(json.dumps(handler.ctx.to_dict()))
    kept = await Context.from_dict(Keeper(), data).store.get("kept")
    assert kept == [Prepared(n=1), Prepared(n=2)]
    assert all(type(e) is Prepared for e in kept)


async def test_edited_dict_is_refused(until) -> None:
    """A dict changed after to_dict() (checksum mismatch) raises SnapshotError."""
    data = await paused_snapshot(until)
    data["state"]["state_data"]["_data"]["prepared"] = '{"n": 999}'
    with pytest.raises(SnapshotError, match="checksum"):
        Context.from_dict(Pipeline(), data)


async def test_dict_without_checksum_or_not_a_dict_is_refused(until) -> None:
    """Something that is not a to_dict() document raises SnapshotError, not a random exception."""
    data = await paused_snapshot(until)
    del data["checksum"]
    with pytest.raises(SnapshotError):
        Context.from_dict(Pipeline(), data)
    with pytest.raises(SnapshotError):
        Context.from_dict(Pipeline(), json.dumps(data))  # type: ignore[arg-type]
    with pytest.raises(SnapshotError):
        Context.from_dict(Pipeline(), {})


async def test_dict_of_another_workflow_is_refused(until) -> None:
    """A snapshot restores only into the workflow class that made it."""
    data = await paused_snapshot(until)
    with pytest.raises(SnapshotError, match="Pipeline"):
        Context.from_dict(Approval(), data)


def make_versioned(version: int) -> type[Workflow]:
    """Two versions of one workflow (same module and qualified name), as code evolves between deploys."""

    class Ask(InputRequiredEvent):
        question: str

    class Draft(Event):
        text: str

    if version == 1:

        class Versioned(Workflow):
            def __init__(self, gate: asyncio.Event | None = None) -> None:
                super().__init__(timeout=5)
                self.gate = gate
                self.editing = False

            @step
            async def write(self, ev: StartEvent, ctx: Context) -> Draft | Ask:
                await ctx.store.set("pending_question", Ask(question="title?"))
                return Draft(text="v1")

            @step
            async def edit(self, ev: Draft, ctx: Context) -> StopEvent:
                self.editing = True
                if self.gate is not None:
                    await self.gate.wait()
                return StopEvent(result=ev.text)

    elif version == 2:  # `edit` renamed to `polish`

        class Versioned(Workflow):  # type: ignore[no-redef]
            @step
            async def write(self, ev: StartEvent, ctx: Context) -> Draft | Ask:
                return Draft(text="v2")

            @step
            async def polish(self, ev: Draft, ctx: Context) -> StopEvent:
                return StopEvent(result=ev.text)

    else:  # same steps as version 1, but Ask is no longer declared anywhere

        class Versioned(Workflow):  # type: ignore[no-redef]
            @step
            async def write(self, ev: StartEvent, ctx: Context) -> Draft:
                return Draft(text="v3")

            @step
            async def edit(self, ev: Draft, ctx: Context) -> StopEvent:
                return StopEvent(result=ev.text)

    return Versioned


async def versioned_snapshot(until: Any) -> dict[str, Any]:
    """A version-1 run saved while `edit` is pending."""
    v1 = make_versioned(1)
    wf = v1(gate=asyncio.Event())  # type: ignore[call-arg]
    handler = wf.run()
    await until(lambda: wf.editing)
    data = handler.ctx.to_dict()
    handler.cancel()
    with pytest.raises(WorkflowCancelledError):
        await handler
    return data


async def test_dict_from_a_workflow_whose_pending_step_was_renamed_is_refused_naming_it(until) -> None:
    """Restoring into code where a pending step no longer exists raises SnapshotError naming that step."""
    data = await versioned_snapshot(until)
    v2 = make_versioned(2)
    with pytest.raises(SnapshotError, match="'edit'"):
        Context.from_dict(v2(), data)


async def test_dict_naming_an_event_type_the_workflow_no_longer_declares_is_refused(until) -> None:
    """A snapshot holding an event type the current code does not declare raises SnapshotError naming the type."""
    data = await versioned_snapshot(until)
    v3 = make_versioned(3)
    with pytest.raises(SnapshotError, match="Ask"):
        Context.from_dict(v3(), data)


async def test_same_code_restores_the_versioned_snapshot(until) -> None:
    """The version-1 snapshot the two tests above refuse does restore into version 1 (so they test the change)."""
    data = await versioned_snapshot(until)
    v1 = make_versioned(1)
    wf = v1()
    assert await wf.run(ctx=Context.from_dict(wf, data)) == "v1"


async def test_loading_never_imports_an_undeclared_name(tmp_path, monkeypatch, until) -> None:
    """A sealed dict naming an importable but undeclared event type raises SnapshotError and imports nothing."""
    from durableflow import _snapshot  # the seal: as an attacker who knows the format would re-sign the dict

    canary = tmp_path / "df_canary_module.py"
    canary.write_text("from durableflow import Event\nIMPORTED = True\nclass Evil(Event):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = await paused_snapshot(until)
    for where in ("state", "events"):
        forged = copy.deepcopy(data)
        if where == "state":
            forged["state"]["state_data"]["_data"]["payload"] = '{"__event__": "df_canary_module.Evil", "data": {}}'
        else:
            eid = next(iter(forged["events"]))
            forged["events"][eid] = ["df_canary_module.Evil", {}]
        forged["checksum"] = _snapshot.checksum(forged)
        with pytest.raises(SnapshotError, match=r"df_canary_module\.Evil"):
            Context.from_dict(Pipeline(), forged)
    assert "df_canary_module" not in sys.modules


async def test_restored_context_takes_no_new_start_fields(until) -> None:
    """A context that continues a run refuses start fields or a run id: it already has both."""
    from durableflow import WorkflowRuntimeError

    data = await paused_snapshot(until)
    wf = Pipeline()
    with pytest.raises(WorkflowRuntimeError, match="continues run"):
        wf.run(ctx=Context.from_dict(wf, data), n=1)
    with pytest.raises(WorkflowRuntimeError, match="continues run"):
        wf.run(ctx=Context.from_dict(wf, data), run_id="other")


async def test_a_restored_context_drives_one_run_at_a_time(until) -> None:
    """Running the same restored context twice at once is refused."""
    from durableflow import WorkflowRuntimeError

    data = await paused_snapshot(until)
    wf = Pipeline()
    restored = Context.from_dict(wf, data)
    handler = wf.run(ctx=restored)
    with pytest.raises(WorkflowRuntimeError, match="already running"):
        wf.run(ctx=restored)
    assert await handler == {"published": 11, "from": 5}


async def test_snapshot_of_a_finished_run_seeds_a_new_run_with_its_state() -> None:
    """A completed run's dict restores to a context whose next run is new but starts from the saved state."""

    class Visits(Workflow):
        @step
        async def visit(self, ev: StartEvent, ctx: Context) -> StopEvent:
            visits = await ctx.store.get("visits", default=0) + 1
            await ctx.store.set("visits", visits)
            return StopEvent(result=visits)

    first = Visits().run()
    assert await first == 1
    data = json.loads(json.dumps(first.ctx.to_dict()))
    wf = Visits()
    second = wf.run(ctx=Context.from_dict(wf, data))
    assert await second == 2
    assert second.run_id != first.run_id


class Ping(Event):
    n: int


class Sender(Workflow):
    """A step that sends one event, snapshots itself, then sends another."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.snapshot: dict[str, Any] | None = None
        self.received: list[int] = []

    @step
    async def send(self, ev: StartEvent, ctx: Context) -> Ping:
        ctx.send_event(Ping(n=1))
        if self.snapshot is None:
            self.snapshot = json.loads(json.dumps(ctx.to_dict()))
        ctx.send_event(Ping(n=2))
        return None

    @step(num_workers=1)
    async def receive(self, ev: Ping, ctx: Context) -> StopEvent | None:
        self.received.append(ev.n)
        got = ctx.collect_events(ev, [Ping, Ping])
        return None if got is None else StopEvent(result=[p.n for p in got])


async def test_events_a_step_sent_before_a_snapshot_are_not_sent_again_when_it_reruns() -> None:
    """The re-run step's first send, already in the snapshot, is not accepted twice; its later send is."""
    first = Sender()
    assert await first.run() == [1, 2]
    wf = Sender()
    assert await wf.run(ctx=Context.from_dict(wf, first.snapshot)) == [1, 2]  # type: ignore[arg-type]
    assert sorted(wf.received) == [1, 2]


async def test_typed_state_survives_the_round_trip_and_a_changed_state_type_is_refused() -> None:
    """A typed state restores as its model; a dict whose state type differs from the code's raises SnapshotError."""
    from pydantic import BaseModel

    class Totals(BaseModel):
        count: int = 0
        names: list[str] = []

    class Other(BaseModel):
        count: int = 0

    def make(state: type[BaseModel]) -> type[Workflow]:
        class Tally(Workflow):
            @step
            async def tally(self, ev: StartEvent, ctx: Context[state]) -> StopEvent:  # type: ignore[valid-type]
                await ctx.store.set("count", 3)
                return StopEvent(result="ok")

        return Tally

    original = make(Totals)
    handler = original().run()
    await handler
    data = json.loads(json.dumps(handler.ctx.to_dict()))
    restored = Context.from_dict(original(), data)
    assert await restored.store.get_state() == Totals(count=3)
    with pytest.raises(SnapshotError, match="state type"):
        Context.from_dict(make(Other)(), data)


async def test_an_event_that_cannot_be_serialised_fails_to_dict_naming_it() -> None:
    """to_dict() of a run holding an event with a non-JSON field raises SerializationError naming the event type."""
    from durableflow import SerializationError

    class Carrier(Event):
        handle: object

    class Holds(Workflow):
        def __init__(self) -> None:
            super().__init__(timeout=5)
            self.error: str | None = None

        @step
        async def begin(self, ev: StartEvent) -> Carrier:
            return Carrier(handle=object())

        @step
        async def end(self, ev: Carrier, ctx: Context) -> StopEvent:
            try:
                ctx.to_dict()
            except SerializationError as exc:
                self.error = str(exc)
            return StopEvent(result="done")

    wf = Holds()
    assert await wf.run() == "done"
    assert wf.error is not None and "Carrier" in wf.error
