"""Typed fan-out/fan-in: a step returning ``list[E]`` opens a batch; a step taking ``list[E]`` fires once
with what that batch produced, when all of its work is done — durably, across crashes."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any, ClassVar

import pytest

from durableflow import (
    Collect,
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    MemoryCheckpointer,
    Record,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Take,
    Workflow,
    WorkflowHandler,
    WorkflowRuntimeError,
    WorkflowValidationError,
    _crashpoints,
    _snapshot,
    catch_error,
    step,
)
from durableflow.testing import explore, run_scenario


class Task(Event):
    n: int


class Done(Event):
    n: int


class Again(Event):
    round: int


class FanInFive(Workflow):
    @step
    async def fan_out(self, ev: StartEvent) -> list[Task]:
        return [Task(n=i, skip=i in ev.get("skip", [])) for i in range(ev.get("count", 5))]

    @step(num_workers=5)
    async def work(self, ev: Task) -> Done | None:
        return None if ev.skip else Done(n=ev.n * 10)

    @step
    async def join(self, ctx: Context, events: list[Done]) -> StopEvent:
        await ctx.store.set("joins", await ctx.store.get("joins", default=0) + 1)
        return StopEvent(result={"got": sorted(e.n for e in events), "joins": await ctx.store.get("joins")})


async def test_a_returned_list_fans_out_and_a_list_parameter_gets_the_whole_batch_once() -> None:
    """Every item is worked on; the join fires once, with each item's result."""
    assert await FanInFive().run() == {"got": [0, 10, 20, 30, 40], "joins": 1}


async def test_branches_that_return_none_are_not_waited_for() -> None:
    """A branch that returns None adds nothing, and the batch still closes."""
    assert await FanInFive().run(skip=[1, 3]) == {"got": [0, 20, 40], "joins": 1}


async def test_an_empty_list_fires_the_join_once_with_nothing() -> None:
    """`return []` opens and closes a batch at once: the join fires with an empty list."""
    assert await FanInFive().run(count=0) == {"got": [], "joins": 1}


class Rounds(Workflow):
    @step
    async def fan_out(self, ev: StartEvent | Again) -> list[Task]:
        start = 100 * (ev.round if isinstance(ev, Again) else 0)
        return [Task(n=start + i) for i in range(3)]

    @step
    async def work(self, ev: Task) -> Done:
        return Done(n=ev.n)

    @step
    async def join(self, ctx: Context, events: list[Done]) -> Again | StopEvent:
        batches = [*await ctx.store.get("batches", default=[]), sorted(e.n for e in events)]
        await ctx.store.set("batches", batches)
        return StopEvent(result=batches) if len(batches) == 2 else Again(round=1)


async def test_each_returned_list_is_its_own_batch() -> None:
    """A second fan-out's results never mix with the first's."""
    assert await Rounds().run() == [[0, 1, 2], [100, 101, 102]]


class FirstTwo(Workflow):
    @step
    async def fan_out(self, ev: StartEvent) -> list[Task]:
        return [Task(n=i) for i in range(4)]

    @step(num_workers=1)
    async def work(self, ev: Task) -> Done:
        return Done(n=ev.n)

    @step
    async def first(self, ctx: Context, events: Annotated[list[Done], Collect(Take(2))]) -> StopEvent | None:
        calls = await ctx.store.get("calls", default=0) + 1
        await ctx.store.set("calls", calls)
        return StopEvent(result={"got": [e.n for e in events], "calls": calls})


async def test_take_fires_on_the_nth_arrival_with_the_first_n() -> None:
    """Collect(Take(2)) fires once, with the first two results."""
    assert await FirstTwo().run() == {"got": [0, 1], "calls": 1}


class Nested(Workflow):
    @step
    async def groups(self, ev: StartEvent) -> list[Task]:
        return [Task(n=1), Task(n=2)]

    @step
    async def split(self, ev: Task) -> list[Done]:
        return [Done(n=ev.n * 10 + i) for i in range(ev.n)]

    @step
    async def total(self, events: list[Done]) -> Again:
        return Again(round=sum(e.n for e in events))

    @step
    async def report(self, events: list[Again]) -> StopEvent:
        return StopEvent(result=sorted(e.round for e in events))


async def test_a_list_returned_inside_a_batch_is_collected_within_it() -> None:
    """Each inner list is summed on its own; the outer join waits for both sums."""
    assert await Nested().run() == [10, 41]


def test_the_step_config_describes_the_list_parameter() -> None:
    """`_step_config` names the collecting parameter and the element type, which routes to the step."""
    config = FanInFive.join._step_config  # type: ignore[attr-defined]
    assert config.collection_param == ("events", (Done,))
    assert Done in config.accepted_events
    assert FanInFive.fan_out._step_config.fan_out_types == (Task,)  # type: ignore[attr-defined]


async def test_a_single_event_where_the_annotation_says_list_is_refused() -> None:
    """`-> list[Task]` returning a bare Task is a mistake (a batch of one was meant, or a union): it fails."""

    class Bare(Workflow):
        @step
        async def fan_out(self, ev: StartEvent) -> list[Task]:
            return Task(n=1)  # type: ignore[return-value]

        @step
        async def work(self, ev: Task) -> StopEvent:
            return StopEvent(result=ev.n)

    with pytest.raises(WorkflowRuntimeError, match=r"single Task, which its annotation names only inside list"):
        await Bare().run()

    class Both(Workflow):
        @step
        async def fan_out(self, ev: StartEvent) -> list[Task] | Task:
            return Task(n=2)  # named bare too: an ordinary event

        @step
        async def work(self, ev: Task) -> StopEvent:
            return StopEvent(result=ev.n)

    assert await Both().run() == 2


def test_a_list_parameter_without_a_list_returning_producer_is_refused() -> None:
    """A list[E] parameter collects only what a fan-out starts; without one the workflow is refused."""

    class Unfed(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Done:
            return Done(n=1)

        @step
        async def join(self, events: list[Done]) -> StopEvent:
            return StopEvent(result=len(events))

    with pytest.raises(WorkflowValidationError, match="no returned-list producer"):
        Unfed().validate()


async def test_an_event_sent_by_hand_does_not_join_a_batch(caplog: pytest.LogCaptureFixture) -> None:
    """ctx.send_event of a collected type is ignored with a warning: only what the fan-out started joins."""

    class Sends(Workflow):
        @step
        async def fan_out(self, ev: StartEvent) -> list[Task]:
            return [Task(n=i) for i in range(3)]

        @step
        async def work(self, ctx: Context, ev: Task) -> Done:
            if ev.n == 2:
                ctx.send_event(Done(n=99))
            return Done(n=ev.n)

        @step
        async def join(self, events: list[Done]) -> StopEvent:
            return StopEvent(result=sorted(e.n for e in events))

    with caplog.at_level(logging.WARNING, logger="durableflow"):
        assert await Sends().run() == [0, 1, 2]
    assert any("Done" in r.getMessage() and "'join'" in r.getMessage() for r in caplog.records)


class SavesMidway(Workflow):
    saved: ClassVar[list[dict[str, Any]]] = []

    @step
    async def fan_out(self, ev: StartEvent) -> list[Task]:
        return [Task(n=i) for i in range(5)]

    @step(num_workers=1)
    async def work(self, ctx: Context, ev: Task) -> Done:
        if ev.n == 3 and not self.saved:
            self.saved.append(ctx.to_dict())  # three results are in the batch, two items still owed
        return Done(n=ev.n)

    @step
    async def join(self, events: list[Done]) -> StopEvent:
        return StopEvent(result=[e.n for e in sorted(events, key=lambda e: e.n)])


async def test_a_context_saved_mid_fan_in_resumes_with_each_result_once() -> None:
    """Saved with three of five results gathered and restored, the join gets all five, none twice."""
    assert await SavesMidway().run() == [0, 1, 2, 3, 4]
    restored = Context.from_dict(SavesMidway(), SavesMidway.saved[0])
    assert await SavesMidway().run(ctx=restored) == [0, 1, 2, 3, 4]


def test_a_crash_anywhere_loses_and_doubles_nothing() -> None:
    """Killed at every crash point (after 2 of 5 results too) and resumed, the join gets each result once."""
    report = explore(FanInFive, {"count": 5}, depth=1, seed=3)
    assert report.scenarios and report.ok, report.summary()
    assert any(o.id.startswith("step.work.end#3") for o in report.scenarios)
    assert any(o.id.startswith("step.join.") for o in report.scenarios)


def test_a_crash_after_two_of_five_results_resumes_with_all_five() -> None:
    """The scenario the feature exists for, named: crash once two results are in, resume, join all five once."""
    outcome = run_scenario(FanInFive, {"count": 5}, "step.work.end#2")
    assert outcome.ok, outcome.diff
    assert outcome.result == {"got": [0, 10, 20, 30, 40], "joins": 1}


class ArrivalOrder(Workflow):
    """Two workers finish the members in an order a resume does not repeat; ``ordered`` sorts, as the README says."""

    ordered: ClassVar[bool] = False

    @step
    async def split(self, ev: StartEvent) -> list[Task]:
        return [Task(n=n) for n in range(4)]

    @step(num_workers=2)
    async def work(self, ev: Task) -> Done:
        return Done(n=ev.n)

    @step
    async def gather(self, events: list[Done]) -> StopEvent:
        results = [ev.n for ev in events]
        return StopEvent(result=sorted(results) if self.ordered else results)


def test_a_result_that_depends_on_arrival_order_is_reported_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash harness calls it a divergent result, with the hint to sort; sorted, every scenario passes."""
    report = explore(ArrivalOrder, {}, depth=1, seed=1)
    assert {outcome.kind for outcome in report.failures} == {"divergent result"}
    with pytest.raises(AssertionError, match="do not depend on the order in which steps"):
        report.assert_ok()
    monkeypatch.setattr(ArrivalOrder, "ordered", True)
    explore(ArrivalOrder, {}, depth=1, seed=1).assert_ok()


class GatherFails(Workflow):
    """A collector that fails for good: its @catch_error handler gets the batch it was handed."""

    @step
    async def split(self, ev: StartEvent) -> list[Task]:
        return [Task(n=n) for n in range(3)]

    @step(num_workers=3)
    async def work(self, ev: Task) -> Done:
        return Done(n=ev.n)

    @step
    async def gather(self, events: list[Done]) -> StopEvent:
        raise RuntimeError(f"cannot gather {len(events)}")

    @catch_error
    async def recover(self, ev: StepFailedEvent) -> StopEvent:
        batch = ev.input_event
        return StopEvent(result=[type(batch).__name__, sorted((type(e).__name__, e.n) for e in batch.events)])


async def test_a_failed_collectors_handler_gets_the_batch() -> None:
    """The @catch_error handler of a failed list[E] step reads the batch as the step's input event."""
    assert await GatherFails().run() == ["CollectionReleaseEvent", [("Done", 0), ("Done", 1), ("Done", 2)]]


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_failed_collectors_batch_survives_a_crash_before_its_handler_runs(mode: str) -> None:
    """Killed anywhere, also after the failure is recorded and before the handler runs, the handler still
    gets the batch's members as their own classes (restored from the run's checkpoint, nothing imported)."""
    report = explore(GatherFails, {}, depth=1, mode=mode, seed=5)
    assert any(o.id.startswith("step.recover.") for o in report.scenarios)
    report.assert_ok()


class Forward(Event):
    n: int


class TwoMembers(Workflow):
    """Splits the start into two Tasks and counts the Done events gathered; each test adds the members' steps."""

    @step
    async def split(self, ev: StartEvent) -> list[Task]:
        return [Task(n=n) for n in range(2)]

    @step
    async def gather(self, events: list[Done]) -> StopEvent:
        return StopEvent(result=len(events))


async def test_work_forwarded_with_send_event_leaves_the_batch_and_the_error_says_so() -> None:
    """A member that forwards its work with ctx.send_event takes it out of the batch: what that work returns
    is refused with an error naming the step, saying sent events join no batch and to return the event."""

    class Forwards(TwoMembers):
        @step
        async def work(self, ctx: Context, ev: Task) -> Forward | None:
            ctx.send_event(Forward(n=ev.n))
            return None

        @step
        async def finish(self, ev: Forward) -> Done:
            return Done(n=ev.n)

    with pytest.raises(WorkflowRuntimeError) as caught:
        await Forwards().run()
    message = str(caught.value)
    assert "step 'finish' returned Done outside any fan-out batch" in message
    assert "ctx.send_event joins no batch" in message
    assert "return the event" in message and "'gather'" in message


class Ask(InputRequiredEvent):
    n: int


class Answer(HumanResponseEvent):
    n: int


async def answer_each_ask(handler: WorkflowHandler) -> None:
    """Answers every Ask on the run's stream with the Answer its member waits for."""
    async for ev in handler.stream_events():
        if isinstance(ev, Ask):
            handler.ctx.send_event(Answer(n=ev.n))


def test_a_member_answered_from_outside_is_refused_saying_to_wait_for_the_answer_inside_it() -> None:
    """A batch member that asks a human and ends there leaves its answer outside the batch (it comes from
    outside the run): validation says so and names ctx.wait_for_event, rather than 'no list producer'."""

    class AnsweredOutside(TwoMembers):
        @step
        async def work(self, ev: Task) -> Ask:
            return Ask(n=ev.n)

        @step
        async def answered(self, ev: Answer) -> Done:
            return Done(n=ev.n)

    with pytest.raises(WorkflowValidationError) as caught:
        AnsweredOutside().validate()
    message = str(caught.value)
    assert "'answered' makes it from Answer, an answer from outside the run" in message
    assert "joins no batch" in message and "ctx.wait_for_event(Answer" in message


class WaitsInside(Workflow):
    """What that error advises: each member waits for its own answer, so the work stays in the batch."""

    @step
    async def split(self, ev: StartEvent) -> list[Task]:
        return [Task(n=n) for n in range(2)]

    @step(num_workers=2)
    async def work(self, ctx: Context, ev: Task) -> Done:
        answer = await ctx.wait_for_event(Answer, waiter_event=Ask(n=ev.n), requirements={"n": ev.n})
        return Done(n=answer.n * 10)

    @step
    async def gather(self, events: list[Done]) -> StopEvent:
        return StopEvent(result=sorted(ev.n for ev in events))


async def test_a_member_that_waits_for_its_answer_stays_in_the_batch() -> None:
    handler = WaitsInside().run()
    await answer_each_ask(handler)
    assert await handler == [0, 10]


def test_a_list_of_stop_events_is_refused_at_validation() -> None:
    """-> list[StopEvent] can never work (a run ends once, a fan-out feeds other steps): refused when the
    workflow is validated, before any step runs."""

    class Stops(Workflow):
        @step
        async def split(self, ev: StartEvent) -> list[StopEvent] | None:
            return [StopEvent(result=1)]

    with pytest.raises(WorkflowValidationError, match=r"'split' .* list\[StopEvent\].*Return the StopEvent alone"):
        Stops().validate()


async def test_an_answer_turned_into_a_batch_result_at_run_time_is_refused_saying_to_wait_inside() -> None:
    """When validation cannot tell (the collected type is also made inside the batch), the run-time refusal of
    an answer's result says the answer came from outside and names ctx.wait_for_event, not ctx.send_event."""

    class SomeAsk(TwoMembers):
        @step(num_workers=2)
        async def work(self, ctx: Context, ev: Task) -> Ask | Done:
            if ev.n == 0:
                return Ask(n=ev.n)
            later = await ctx.wait_for_event(Answer, requirements={"n": -1})  # keeps the batch open
            return Done(n=later.n)

        @step
        async def answered(self, ev: Answer) -> Done:
            return Done(n=ev.n)

    handler = SomeAsk().run()
    await answer_each_ask(handler)
    with pytest.raises(WorkflowRuntimeError) as caught:
        await handler
    message = str(caught.value)
    assert "step 'answered' returned Done outside any fan-out batch" in message
    assert "Answer, an answer from outside the run" in message and "ctx.wait_for_event(Answer" in message


class Header(Event):
    n: int


class Body(Event):
    n: int


def test_a_join_of_events_made_inside_and_outside_a_batch_is_refused() -> None:
    """A join whose parameters are never made in one place (one inside a batch, one outside any) would pair
    across the batch's edge and strand the rest: refused at validation, naming where each is made."""

    class AcrossEdge(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> Again | Body:
            ctx.send_event(Again(round=1))
            return Body(n=0)

        @step
        async def split(self, ev: Again) -> list[Header]:
            return [Header(n=1), Header(n=2)]

        @step
        async def assemble(self, header: Header, body: Body) -> Done:
            return Done(n=header.n)

        @step
        async def gather(self, events: list[Done]) -> StopEvent:
            return StopEvent(result=sorted(ev.n for ev in events))

    with pytest.raises(WorkflowValidationError) as caught:
        AcrossEdge().validate()
    message = str(caught.value)
    assert "Step 'assemble' joins events that are never made in one place" in message
    assert "'header' (Header) is made in the batch of step 'split'" in message
    assert "'body' (Body) is made outside any batch" in message


async def test_a_join_of_events_made_inside_one_batch_runs(caplog: pytest.LogCaptureFixture) -> None:
    """Both parameters made by the batch's members: accepted, and the fan-in gets every joined result; a
    Header left without a Body does not hold the batch open, and is dropped with a warning when it closes."""

    class InsideOne(Workflow):
        @step
        async def split(self, ev: StartEvent) -> list[Task]:
            return [Task(n=n) for n in range(3)]

        @step(num_workers=1)
        async def work(self, ev: Task) -> Header | Body:
            return Body(n=ev.n) if ev.n == 1 else Header(n=ev.n)

        @step
        async def assemble(self, header: Header, body: Body) -> Done:
            return Done(n=header.n + body.n)

        @step
        async def gather(self, events: list[Done]) -> StopEvent:
            return StopEvent(result=[ev.n for ev in events])

    with caplog.at_level(logging.WARNING, logger="durableflow"):
        assert await InsideOne().run() == [1]
    assert any("join 'assemble' was left with 1 unpaired event" in r.getMessage() for r in caplog.records)


class Pair(Event):
    k: int


class Part(Event):
    k: int
    kind: str


class NestedJoins(Workflow):
    """Two batches, each making one Header and one Body that a join pairs, and the pairs gathered per batch."""

    second_body: ClassVar[asyncio.Event | None] = None  # when set: Body 1 is made only after Body 2

    @step
    async def split(self, ev: StartEvent) -> list[Pair]:
        return [Pair(k=1), Pair(k=2)]

    @step  # one worker: pair 1's parts are queued before pair 2's
    async def explode(self, ev: Pair) -> list[Part]:
        return [Part(k=ev.k, kind="header"), Part(k=ev.k, kind="body")]

    @step(num_workers=4)
    async def make(self, ev: Part) -> Header | Body:
        if ev.kind == "header":
            return Header(n=ev.k)
        if self.second_body is not None:
            await self.second_body.wait() if ev.k == 1 else self.second_body.set()
        return Body(n=ev.k)

    @step
    async def assemble(self, header: Header, body: Body) -> Done:
        return Done(n=header.n * 10 + body.n)

    @step
    async def pair_up(self, events: list[Done]) -> Again:
        return Again(round=sum(ev.n for ev in events))

    @step
    async def gather(self, events: list[Again]) -> StopEvent:
        return StopEvent(result=sorted(ev.round for ev in events))


async def test_a_join_pairs_only_events_of_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers 1 and 2 and Body 2 arrive before Body 1: each batch's Header still pairs with its own Body."""
    monkeypatch.setattr(NestedJoins, "second_body", asyncio.Event())
    assert await NestedJoins().run() == [11, 22]


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_joins_inside_batches_survive_a_crash_anywhere(mode: str) -> None:
    """Killed at every crash point, each batch's join still pairs its own two events, once."""
    report = explore(NestedJoins, {}, depth=1, mode=mode, seed=7)
    assert any(o.id.startswith("step.assemble.") for o in report.scenarios)
    report.assert_ok()


class Left(Event):
    n: int


class Seed(Event):
    n: int


class Right(Event):
    n: int


class Joined(Event):
    n: int


class Died(BaseException):
    """The process dies here (raised at a crash point)."""


class JoinInABatch(Workflow):
    """One batch: a Left, and a Seed a member turns into a Right; a join pairs the two, a fan-in gathers."""

    @step
    async def start(self, ev: StartEvent) -> list[Left | Seed]:
        return [Left(n=1), Seed(n=1)]

    @step
    async def make_right(self, ev: Seed) -> Right:
        return Right(n=ev.n)

    @step
    async def pair(self, left: Left, right: Right) -> Joined:
        return Joined(n=left.n + right.n)

    @step
    async def gather(self, events: list[Joined]) -> StopEvent:
        return StopEvent(result=[ev.n for ev in events])


async def test_a_run_stored_with_one_join_buffer_per_step_pairs_its_pending_event_on_resume(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run stored when a join's buffer was one per step (``join:<step>``, also inside batches), stopped with
    one half of a pair buffered: resumed, the other half pairs with it, and the fan-in gets the result — the
    half is neither left behind nor dropped when the batch closes."""
    checkpoints = 0

    def die_after_the_fourth_checkpoint(point: str) -> None:  # the one that stores the join's first arrival
        nonlocal checkpoints
        checkpoints += point == "checkpoint.write.after"
        if checkpoints == 4:
            raise Died(point)

    store = MemoryCheckpointer()
    with _crashpoints.armed(die_after_the_fourth_checkpoint), pytest.raises(Died):
        await JoinInABatch(checkpointer=store).run(run_id="per-batch")
    document = _snapshot.replay(store.load("per-batch"), "per-batch")
    (batch_buffer,) = (b for b in document["buffers"] if b.startswith("join:pair"))
    assert batch_buffer == "join:pair/start@1" and len(document["buffers"][batch_buffer]) == 1
    # The same run as the layout before stored it: the join's pending event under the step's one buffer.
    document["buffers"]["join:pair"] = document["buffers"].pop(batch_buffer)
    document["run_id"] = "per-step"
    record = Record(document["seq"], True, _snapshot.frame(json.dumps(document), "per-step", document["seq"]))
    store.create("per-step", store.info("per-batch").workflow, record, "earlier layout")
    store.release("per-step", "earlier layout")
    with caplog.at_level(logging.WARNING, logger="durableflow"):
        assert await JoinInABatch(checkpointer=store).resume("per-step") == [2]
        assert await JoinInABatch(checkpointer=store).resume("per-batch") == [2]
    assert not [r for r in caplog.records if "unpaired" in r.getMessage()]


async def test_a_typed_fan_in_writes_each_gathered_result_as_an_addition() -> None:
    """A member's result joins its batch's fan-in as an addition to the stored buffer: no checkpoint rewrites
    what the batch gathered (its cost per member would grow with the batch); the release drops it whole."""
    store = MemoryCheckpointer()
    assert await FanInFive(checkpointer=store).run(run_id="additions", count=20) == {
        "got": [n * 10 for n in range(20)],
        "joins": 1,
    }
    added: list[int] = []
    for record in store.load("additions"):
        document = _snapshot.unframe(record.data, "additions", record.seq)
        assert not record.full or record.seq == 1  # too small a run to fold its deltas
        rewritten = {b: eids for b, eids in document.get("buffers", {}).items() if b.startswith("fan-in:")}
        assert all(eids == [] for eids in rewritten.values()), (record.seq, rewritten)
        added += [eid for b, eids in document.get("buffers_add", {}).items() if b.startswith("fan-in:") for eid in eids]
    assert len(added) == 20
