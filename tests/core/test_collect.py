"""Sending and collecting: ctx.send_event (also to one step), collect_events fan-in, and big fan-outs."""

import asyncio

import pytest

from durableflow import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
    step,
)


class A(Event):
    tag: str = "a"


class B(Event):
    tag: str = "b"


class Chunk(Event):
    n: int


class Squared(Event):
    n: int
    value: int


class Stray(Event):
    """Named by no step annotation: nobody accepts it."""


async def test_collect_events_returns_the_set_in_the_requested_order() -> None:
    """collect_events(ev, [A, B]) gives [A, B] even when B arrived first, and None until both are in."""
    calls: list[object] = []

    class FanIn(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> A | B:
            ctx.send_event(B())
            await asyncio.sleep(0.01)
            ctx.send_event(A())
            return None

        @step(num_workers=1)
        async def join(self, ev: A | B, ctx: Context) -> StopEvent | None:
            got = ctx.collect_events(ev, [A, B])
            calls.append(None if got is None else [type(e).__name__ for e in got])
            return None if got is None else StopEvent(result=[e.tag for e in got])

    assert await FanIn().run() == ["a", "b"]
    assert calls == [None, ["A", "B"]]


async def test_fan_out_of_a_hundred_is_collected_in_full(finish) -> None:
    """A hundred events sent by one step are all processed and collected into one result."""

    class SumOfSquares(Workflow):
        @step
        async def split(self, ev: StartEvent, ctx: Context) -> Chunk:
            for n in range(ev.count):
                ctx.send_event(Chunk(n=n))
            return None

        @step(num_workers=8)
        async def square(self, ev: Chunk) -> Squared:
            await asyncio.sleep(0)
            return Squared(n=ev.n, value=ev.n * ev.n)

        @step
        async def total(self, ev: Squared, ctx: Context) -> StopEvent | None:
            got = ctx.collect_events(ev, [Squared] * 100)
            if got is None:
                return None
            return StopEvent(result=(sorted(s.n for s in got), sum(s.value for s in got)))

    ns, total = await finish(SumOfSquares().run(count=100))
    assert ns == list(range(100))
    assert total == sum(n * n for n in range(100))


async def test_collect_matches_subclasses_and_keeps_extras_for_the_next_set() -> None:
    """An expected type also matches its subclasses, and events beyond one set wait for the next."""

    class Special(A):
        pass

    class Pairs(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> A | B | Special:
            for event in (Special(tag="s1"), A(tag="a2"), B(tag="b1"), B(tag="b2")):
                ctx.send_event(event)
            return None

        @step(num_workers=1)
        async def join(self, ev: A | B, ctx: Context) -> StopEvent | None:
            got = ctx.collect_events(ev, [A, B])
            if got is None:
                return None
            pairs = await ctx.store.get("pairs", default=[])
            pairs.append([e.tag for e in got])
            await ctx.store.set("pairs", pairs)
            return StopEvent(result=pairs) if len(pairs) == 2 else None

    assert await Pairs().run() == [["s1", "b1"], ["a2", "b2"]]


async def test_separate_buffer_ids_collect_independently() -> None:
    """collect_events(..., buffer_id=...) keeps separate sets in one step."""

    class Buffers(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> A:
            for tag in ("x1", "y1", "x2"):
                ctx.send_event(A(tag=tag))
            return None

        @step(num_workers=1)
        async def join(self, ev: A, ctx: Context) -> StopEvent | None:
            got = ctx.collect_events(ev, [A, A], buffer_id=ev.tag[0])
            return None if got is None else StopEvent(result=[e.tag for e in got])

    assert await Buffers().run() == ["x1", "x2"]


async def test_send_event_with_step_targets_only_that_step() -> None:
    """ctx.send_event(ev, step="name") delivers to that step alone, though others accept the type."""
    received: list[str] = []

    class Targeted(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> A:
            ctx.send_event(A(tag="only-right"), step="right")
            return None

        @step
        async def left(self, ev: A) -> StopEvent:
            received.append("left")
            return StopEvent(result="left")

        @step
        async def right(self, ev: A) -> StopEvent:
            received.append("right")
            return StopEvent(result="right")

    assert await Targeted().run() == "right"
    assert received == ["right"]


async def test_send_event_to_an_unknown_step_raises_in_the_step() -> None:
    """ctx.send_event(step=...) naming no step (or a step that does not take the event) raises WorkflowRuntimeError."""

    class Misaddressed(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> A | StopEvent:
            errors = []
            for target in ("nope", "begin"):
                try:
                    ctx.send_event(A(), step=target)
                except WorkflowRuntimeError as exc:
                    errors.append(str(exc))
            return StopEvent(result=errors)

        @step
        async def take(self, ev: A) -> StopEvent:
            return StopEvent(result="should not run")

    errors = await Misaddressed().run()
    assert len(errors) == 2
    assert errors[0].startswith("Step nope does not exist (steps: ")  # the wording llama-index-workflows uses
    assert errors[1].startswith("Step begin does not accept event of type <class ")
    assert "begin, take" in errors[0] and "A'>" in errors[1]


async def test_sending_an_event_nobody_accepts_raises_and_fails_the_run_if_uncaught() -> None:
    """ctx.send_event of a type no step accepts raises WorkflowRuntimeError naming the type."""

    class Lost(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> StopEvent:
            ctx.send_event(Stray())
            return StopEvent(result="unreachable")

    with pytest.raises(WorkflowRuntimeError, match="Stray"):
        await Lost().run()


async def test_sending_a_stop_event_from_a_step_ends_the_run() -> None:
    """A StopEvent sent with ctx.send_event ends the run with its result."""

    class EarlyExit(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> StopEvent:
            ctx.send_event(StopEvent(result="sent"))
            return None

    assert await EarlyExit().run() == "sent"


async def test_send_event_from_a_plain_def_step() -> None:
    """A thread-run `def` step can send events to other steps."""

    class Threaded(Workflow):
        @step
        def begin(self, ev: StartEvent, ctx: Context) -> A:
            ctx.send_event(A(tag="from thread"))
            return None

        @step
        async def end(self, ev: A) -> StopEvent:
            return StopEvent(result=ev.tag)

    assert await Threaded().run() == "from thread"


async def test_context_methods_need_a_running_run_or_a_step() -> None:
    """send_event, collect_events and write_event_to_stream on a context that is not running raise."""

    class Tiny(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    ctx = Context(Tiny())
    with pytest.raises(WorkflowRuntimeError, match="not running"):
        ctx.send_event(A())
    with pytest.raises(WorkflowRuntimeError, match="not running"):
        ctx.write_event_to_stream(A())
    with pytest.raises(WorkflowRuntimeError, match="within a step"):
        ctx.collect_events(A(), [A])


async def test_a_collector_that_fails_after_collecting_gets_the_same_set_on_retry() -> None:
    """Events a failed attempt had collected go back to the buffer, so the retry collects them again."""
    from durableflow import retry_policy, stop_after_attempt, wait_fixed

    attempts: list[list[str] | None] = []

    class Retrying(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> A | B:
            ctx.send_event(A(tag="a1"))
            ctx.send_event(B(tag="b1"))
            return None

        @step(num_workers=1, retry=retry_policy(wait=wait_fixed(0.001), stop=stop_after_attempt(2)))
        async def join(self, ev: A | B, ctx: Context) -> StopEvent | None:
            got = ctx.collect_events(ev, [A, B])
            attempts.append(None if got is None else [e.tag for e in got])
            if got is None:
                return None
            if ctx.attempt == 1:
                raise RuntimeError("downstream hiccup after collecting")
            return StopEvent(result=[e.tag for e in got])

    assert await Retrying().run() == ["a1", "b1"]
    assert attempts == [None, ["a1", "b1"], ["a1", "b1"]]


class _CountingList(list[int]):
    """A buffer that counts the elements its insertions move: what putting events back costs."""

    moved = 0

    def insert(self, index: object, value: int) -> None:  # type: ignore[override]
        self.moved += len(self) - int(index)  # type: ignore[call-overload]
        super().insert(index, value)  # type: ignore[arg-type]

    def __setitem__(self, index: object, value: object) -> None:  # type: ignore[override]
        if isinstance(index, slice):
            self.moved += len(self)
        super().__setitem__(index, value)  # type: ignore[index, assignment]


def test_a_failed_attempt_puts_back_what_it_took_in_order_and_in_linear_time() -> None:
    """Events taken from two buffers go back to their fronts in the order they were taken, each buffer
    moved once: putting N events back one at a time at the front moved the buffer N times, O(N²)."""
    from durableflow._runstate import Delivery, RunState
    from durableflow._step_calls import undo_takes

    run, delivery, n = RunState("r"), Delivery(1, "join"), 2000
    big, small = _CountingList(range(n, n + 10)), _CountingList([99])
    run.buffers = {"big": big, "small": small}
    for eid in range(n):
        delivery.take("big", eid)
        if eid == 5:
            delivery.take("small", 7)
    undo_takes(run, delivery)
    assert run.buffers["big"] == [*range(n), *range(n, n + 10)]
    assert run.buffers["small"] == [7, 99]
    assert delivery.taken == ()
    assert run.dirty_buffers == {"big", "small"}  # rewritten whole by the next record
    assert big.moved <= 2 * (n + 10)  # one at a time: about n * n / 2 = 2,000,000


class Part(Event):
    n: int


class Assembler(Workflow):
    """Collects three parts; snapshots itself once, right after the full set came in."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.snapshot: dict | None = None  # type: ignore[type-arg]

    @step
    async def begin(self, ev: StartEvent, ctx: Context) -> Part:
        for n in range(3):
            ctx.send_event(Part(n=n))
        return None

    @step(num_workers=1)
    async def assemble(self, ev: Part, ctx: Context) -> StopEvent | None:
        parts = ctx.collect_events(ev, [Part, Part, Part])
        if parts is None:
            return None
        if self.snapshot is None:
            self.snapshot = ctx.to_dict()
        return StopEvent(result=[p.n for p in parts])


async def test_snapshot_taken_after_collecting_restores_the_whole_set(finish) -> None:
    """A snapshot taken inside the collecting step after its set was complete loses none of the collected events."""
    first = Assembler()
    assert await first.run() == [0, 1, 2]
    wf = Assembler()
    restored = Context.from_dict(wf, first.snapshot)  # type: ignore[arg-type]
    assert await finish(wf.run(ctx=restored), timeout=2) == [0, 1, 2]


class CrashHere(BaseException):
    """Raised at a crash point, like the crash harness does."""


async def test_checkpoint_after_collecting_then_crash_resumes_with_the_whole_set(finish) -> None:
    """A collector that checkpoints after its set was complete and then crashes resumes with every collected event."""
    from durableflow import MemoryCheckpointer, crashpoint
    from durableflow._crashpoints import armed

    class Durable(Workflow):
        @step
        async def begin(self, ev: StartEvent, ctx: Context) -> Part:
            for n in range(3):
                ctx.send_event(Part(n=n))
            return None

        @step(num_workers=1)
        async def assemble(self, ev: Part, ctx: Context) -> StopEvent | None:
            parts = ctx.collect_events(ev, [Part, Part, Part])
            if parts is None:
                return None
            await ctx.checkpoint()
            crashpoint("assembled")
            return StopEvent(result=[p.n for p in parts])

    def crash(point: str) -> None:
        if point == "user.assembled":
            raise CrashHere(point)

    store = MemoryCheckpointer()
    with armed(crash):
        handler = Durable(checkpointer=store).run()
        with pytest.raises(CrashHere):
            await finish(handler, timeout=2)
    resumed = Durable(checkpointer=store).resume(handler.run_id)
    assert await finish(resumed, timeout=2) == [0, 1, 2]
