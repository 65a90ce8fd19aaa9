"""Durable runs side by side: durableflow against LangGraph, DBOS and llama-agents-dbos, all on SQLite.

Every contender writes to its own SQLite file in one temporary directory, in WAL mode with
``synchronous=NORMAL``, in this one process; batches alternate over several rounds and medians are shown,
with the range of the rounds. The peers are benchmark-only dependencies: a missing one is skipped, with
the line that installs it.

* LangGraph with ``SqliteSaver`` and ``durability="sync"`` (each checkpoint written before the next step).
* DBOS on a SQLite system database (each step's output recorded before the next step).
* llama-agents-dbos: llama-index-workflows on the DBOS runtime, sharing that DBOS instance.

What is measured:

1. a durable 3-step run (start -> a -> b -> stop), µs per run;
2. durableflow's 3-step run against its floor: the four single-row commits it makes, timed raw;
3. resuming a run interrupted at step 500 of 1,000 (each step writes one more key of state), through its
   next step, where it is interrupted again: durableflow and LangGraph (DBOS resumes by replaying the
   workflow function when a process recovers, or by forking the run onto a queue polled every second;
   neither is comparable in one process);
4. a 2-step run whose first step writes 1 MB of state and whose second writes a few bytes;
5. the cost per step of a run of N steps (N = 10, 1,000, 10,000), each step writing one more key of state;
6. durableflow: 1,000 concurrent 3-step runs in one process against the same runs one after another; and 300
   on ``durability="fsync"``, where each commit waits for the disk and sharing commits is what group commit is for.

    python tests/benchmarks/bench_peers.py [--quick] [--rounds R] [--clock wall|thread|process]
        [--skip langgraph,dbos,llama-agents-dbos]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import logging
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from _timing import Batch, interleave, print_table, raw_commit, us

from durableflow import Context, Event, SQLiteCheckpointer, StartEvent, StopEvent, Workflow, step

INSTALL = {
    "LangGraph": "pip install langgraph langgraph-checkpoint-sqlite",
    "DBOS": "pip install dbos",
    "llama-agents-dbos": "pip install llama-agents-dbos llama-index-workflows",
}
BLOB = "x" * (1 << 20)
RESUME_AT, RESUME_OF = 500, 1000
TARGETS = {"3-step": 20.0, "floor": 2.0, "concurrent": 3.0, "flat": 2.0}


class Interrupted(BaseException):
    """Stands for the process dying in a step: nothing catches it, nothing is written after it."""


class InterruptedStep(Exception):
    """The same for a peer whose steps may raise only exceptions (it writes nothing for the failed step)."""


# -- durableflow --------------------------------------------------------------------------------


class A(Event):
    pass


class B(Event):
    pass


class ThreeSteps(Workflow):
    @step
    async def first(self, ev: StartEvent) -> A:
        return A()

    @step
    async def second(self, ev: A) -> B:
        return B()

    @step
    async def third(self, ev: B) -> StopEvent:
        return StopEvent(result="done")


class Tick(Event):
    i: int
    n: int


class Ticks(Workflow):
    """``n`` steps, each writing one more key of state; interrupted at step ``stop_at`` (if set)."""

    stop_at: int | None = None
    step_crash_limit = None  # it is interrupted in the same step over and over, on purpose

    @step
    async def begin(self, ev: StartEvent) -> Tick:
        return Tick(i=0, n=ev.n)

    @step
    async def tick(self, ev: Tick, ctx: Context) -> Tick | StopEvent:
        if ev.i == self.stop_at:
            raise Interrupted
        await ctx.store.set(f"k{ev.i}", ev.i)
        if ev.i + 1 >= ev.n:
            return StopEvent(result=ev.n)
        return Tick(i=ev.i + 1, n=ev.n)


class Blob(Event):
    pass


class BigWrite(Workflow):
    @step
    async def big(self, ev: StartEvent, ctx: Context) -> Blob:
        await ctx.store.set("blob", BLOB)
        return Blob()

    @step
    async def small(self, ev: Blob, ctx: Context) -> StopEvent:
        await ctx.store.set("small", 1)
        return StopEvent(result="done")


class Durableflow:
    name = "durableflow"

    def __init__(self, directory: Path) -> None:
        self.store = SQLiteCheckpointer(directory / "durableflow.db")
        self.three = ThreeSteps(checkpointer=self.store)
        self.ticks = Ticks(checkpointer=self.store)
        self.big = BigWrite(checkpointer=self.store)

    @property
    def stop_at(self) -> int | None:
        return self.ticks.stop_at

    @stop_at.setter
    def stop_at(self, step: int | None) -> None:
        self.ticks.stop_at = step

    async def three_steps(self) -> Any:
        return await self.three.run()

    async def steps(self, n: int) -> Any:
        return await self.ticks.run(n=n)

    async def big_write(self) -> Any:
        return await self.big.run()

    async def interrupted(self) -> Callable[[], Any]:
        """A run interrupted at step RESUME_AT; returns what resumes it through its next step."""
        self.stop_at = RESUME_AT
        handler = self.ticks.run(n=RESUME_OF)
        with contextlib.suppress(Interrupted):
            await handler
        run_id = handler.run_id

        async def resume() -> None:
            try:
                await self.ticks.resume(run_id)
            except Interrupted:
                return
            raise AssertionError("the resumed run was not interrupted again")

        return resume


# -- LangGraph ------------------------------------------------------------------------------------


def _merge(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    return {**left, **right}


class Out(TypedDict):
    out: str


class Counting(TypedDict):
    i: int
    n: int
    values: Annotated[dict[str, int], _merge]  # one more key per step, as durableflow's runs write


class Big(TypedDict, total=False):
    blob: str
    small: int


class LangGraph:
    name = "LangGraph"

    def __init__(self, directory: Path) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph

        conn = sqlite3.connect(directory / "langgraph.db", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        saver = SqliteSaver(conn)
        self.version = importlib.metadata.version("langgraph")
        self.runs = 0
        self.stop_at: int | None = None

        three = StateGraph(Out)
        for name, value in (("first", "a"), ("second", "b"), ("third", "done")):
            three.add_node(name, lambda state, value=value: {"out": value})
        three.add_edge(START, "first")
        three.add_edge("first", "second")
        three.add_edge("second", "third")
        three.add_edge("third", END)
        self.three = three.compile(checkpointer=saver)

        def tick(state: Counting) -> dict[str, Any]:
            i = state["i"]
            if i == self.stop_at:
                raise InterruptedStep
            return {"i": i + 1, "values": {f"k{i}": i}}

        loop = StateGraph(Counting)
        loop.add_node("tick", tick)
        loop.add_edge(START, "tick")
        loop.add_conditional_edges("tick", lambda state: END if state["i"] >= state["n"] else "tick")
        self.loop = loop.compile(checkpointer=saver)

        big = StateGraph(Big)
        big.add_node("big", lambda state: {"blob": BLOB})
        big.add_node("small", lambda state: {"small": 1})
        big.add_edge(START, "big")
        big.add_edge("big", "small")
        big.add_edge("small", END)
        self.big = big.compile(checkpointer=saver)

    def _config(self) -> dict[str, Any]:
        self.runs += 1
        return {"configurable": {"thread_id": f"t{self.runs}"}, "recursion_limit": 100_000}

    async def three_steps(self) -> Any:
        return self.three.invoke({"out": ""}, self._config(), durability="sync")["out"]

    async def steps(self, n: int) -> Any:
        return self.loop.invoke({"i": 0, "n": n, "values": {}}, self._config(), durability="sync")["i"]

    async def big_write(self) -> Any:
        return self.big.invoke({}, self._config(), durability="sync")

    async def interrupted(self) -> Callable[[], Any]:
        self.stop_at = RESUME_AT
        config = self._config()
        with contextlib.suppress(InterruptedStep):
            self.loop.invoke({"i": 0, "n": RESUME_OF, "values": {}}, config, durability="sync")

        async def resume() -> None:
            try:
                self.loop.invoke(None, config, durability="sync")
            except InterruptedStep:
                return
            raise AssertionError("the resumed run was not interrupted again")

        return resume


# -- DBOS and llama-agents-dbos ---------------------------------------------------------------------


class Dbos:
    name = "DBOS"
    stop_at = None

    def __init__(self, directory: Path, with_llama: bool) -> None:
        from dbos import DBOS
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        @event.listens_for(Engine, "connect")
        def same_settings(connection: Any, record: Any) -> None:
            if type(connection).__module__.startswith("sqlite3"):
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        logging.getLogger("dbos").setLevel(logging.WARNING)
        self.version = importlib.metadata.version("dbos")

        @DBOS.step()
        def first() -> str:
            return "a"

        @DBOS.step()
        def second() -> str:
            return "b"

        @DBOS.step()
        def third() -> str:
            return "done"

        @DBOS.workflow()
        def three_steps() -> str:
            first()
            second()
            return third()

        @DBOS.step()
        def tick(i: int) -> dict[str, int]:
            return {f"k{i}": i}

        @DBOS.workflow()
        def ticks(n: int) -> int:
            for i in range(n):
                tick(i)
            return n

        @DBOS.step()
        def big() -> str:
            return BLOB

        @DBOS.step()
        def small() -> int:
            return 1

        @DBOS.workflow()
        def big_write() -> str:
            big()
            small()
            return "done"

        self._three, self._ticks, self._big = three_steps, ticks, big_write
        instance = DBOS(config={"name": "bench-peers", "system_database_url": f"sqlite:///{directory / 'dbos.db'}"})
        self.llama: LlamaAgentsDbos | None = None
        if with_llama:
            if not hasattr(instance, "_app_db"):  # what llama-agents-dbos 0.7 reads; DBOS 3.4 has no such thing
                print(
                    f"note: llama-agents-dbos does not run on DBOS {self.version} (it needs DBOS._app_db), so it"
                    " is skipped; in an environment of its own: pip install llama-agents-dbos 'dbos<3.4'"
                )
            else:
                self.llama = LlamaAgentsDbos()

    async def launch(self) -> None:
        from dbos import DBOS

        if self.llama is not None:
            await self.llama.runtime.launch()  # launches DBOS too
        else:
            DBOS.launch()

    async def three_steps(self) -> Any:
        return self._three()

    async def steps(self, n: int) -> Any:
        return self._ticks(n)

    async def big_write(self) -> Any:
        return self._big()

    def close(self) -> None:
        from dbos import DBOS

        DBOS.destroy()


class LlamaAgentsDbos:
    name = "llama-agents-dbos"
    stop_at = None

    def __init__(self) -> None:
        from llama_agents.dbos import DBOSRuntime
        from workflows import Workflow as PeerWorkflow
        from workflows import step as peer_step
        from workflows.events import Event as PeerEvent
        from workflows.events import StartEvent as PeerStart
        from workflows.events import StopEvent as PeerStop

        self.version = importlib.metadata.version("llama-agents-dbos")
        _queues_as_llama_agents_dbos_expects()
        self.runtime = DBOSRuntime()

        class PA(PeerEvent):
            pass

        class PB(PeerEvent):
            pass

        class PeerThreeSteps(PeerWorkflow):
            @peer_step
            async def first(self, ev: PeerStart) -> PA:
                return PA()

            @peer_step
            async def second(self, ev: PA) -> PB:
                return PB()

            @peer_step
            async def third(self, ev: PB) -> PeerStop:
                return PeerStop(result="done")

        self.three = PeerThreeSteps(runtime=self.runtime, timeout=None)

    async def three_steps(self) -> Any:
        return await self.three.run()


def _queues_as_llama_agents_dbos_expects() -> None:
    """llama-agents-dbos 0.7 builds its DBOS queues directly, which DBOS 3.4 refuses unless DBOS itself asks:
    let it, as the DBOS versions it was written against did (the runs it times never wait in a queue)."""
    import functools

    from dbos import _queue
    from llama_agents.dbos import runtime

    token = getattr(_queue, "_INTERNAL_QUEUE_CONSTRUCTION", None)
    if token is not None and not isinstance(runtime.Queue, functools.partial):
        runtime.Queue = functools.partial(_queue.Queue, token=token)  # type: ignore[misc]


# -- measuring ------------------------------------------------------------------------------------


def raw_commits(path: Path) -> Callable[[], Any]:
    """One ``BEGIN; INSERT a 100-byte row; COMMIT`` on the same settings: the unit of durableflow's floor."""
    commit = raw_commit(path)

    async def commit_on_the_loop() -> None:
        commit()

    return commit_on_the_loop


CLOCK: Callable[[], float] = time.perf_counter
"""What a batch is timed with: the wall clock, or the CPU time, system calls included, of this thread
(``--clock thread``) or of all this process's threads (``--clock process``), which other processes on a busy
machine inflate less; ``process`` also counts the work a peer hands to its own threads."""


async def batch_of(call: Callable[[], Any], seconds: float) -> Batch:
    """A batch of as many calls as fill about ``seconds`` (after a warm-up), timed per call."""
    await call()
    calls, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds / 4:
        await call()
        calls += 1
    calls = max(1, round(seconds * calls / elapsed))

    async def batch() -> float:
        began = CLOCK()
        for _ in range(calls):
            await call()
        return (CLOCK() - began) / calls

    return batch


async def spread(contenders: dict[str, Batch], rounds: int) -> dict[str, tuple[float, float, float]]:
    """Median, lowest and highest of each contender's rounds, batches alternating."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}

    async def recorded(name: str, batch: Batch) -> float:
        value = await batch()
        samples[name].append(value)
        return value

    await interleave({name: (lambda n=name, b=batch: recorded(n, b)) for name, batch in contenders.items()}, rounds)
    return {name: (statistics.median(v), min(v), max(v)) for name, v in samples.items()}


def _ratios(ratios: list[float]) -> str:
    return ", ".join(f"{r:.2f}x" for r in ratios)


def cell(figure: tuple[float, float, float] | None) -> str:
    if figure is None:
        return "-"
    median, low, high = figure
    return f"{us(median)} ({us(low)}-{us(high)})"


async def concurrency(
    directory: Path, runs: int, rounds: int, durability: Literal["normal", "fsync"] = "normal"
) -> tuple[float, float, list[float]]:
    """Runs per second one after another and all at once, on one SQLite store: medians and each ratio."""
    store = SQLiteCheckpointer(directory / f"concurrent-{durability}.db", durability=durability)
    workflow = ThreeSteps(checkpointer=store)
    await asyncio.gather(*(workflow.run() for _ in range(runs)))  # warm-up, and a store of the same size
    sequential, concurrent, ratios = [], [], []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(runs):
            await workflow.run()
        one_by_one = runs / (time.perf_counter() - began)
        began = time.perf_counter()
        results = await asyncio.gather(*(workflow.run() for _ in range(runs)))
        together = runs / (time.perf_counter() - began)
        assert results == ["done"] * runs
        sequential.append(one_by_one)
        concurrent.append(together)
        ratios.append(together / one_by_one)
    return statistics.median(sequential), statistics.median(concurrent), ratios


async def measure(args: argparse.Namespace, directory: Path) -> None:
    ours = Durableflow(directory)
    peers: list[Any] = []
    skip = set(filter(None, (args.skip or "").split(",")))
    missing = []
    if "langgraph" not in skip:
        try:
            peers.append(LangGraph(directory))
        except ImportError:
            missing.append("LangGraph")
    dbos: Dbos | None = None
    if "dbos" not in skip:
        try:
            dbos = Dbos(directory, with_llama="llama-agents-dbos" not in skip)
        except ImportError:
            missing += ["DBOS", "llama-agents-dbos"]
        else:
            await dbos.launch()
            peers.append(dbos)
            if dbos.llama is not None:
                peers.append(dbos.llama)
    for name in missing:
        print(f"note: {name} is not installed, so it is skipped: {INSTALL[name]}")
    versions = ", ".join(f"{p.name} {p.version}" for p in peers)
    print(f"durableflow {importlib.metadata.version('durableflow')} vs {versions or 'no peer'};")
    print(
        f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL; {args.rounds} rounds, median (lowest-highest);"
        f" {args.clock} clock"
    )
    everyone = [ours, *peers]
    seconds = args.batch_seconds

    # 1, 2: the 3-step run, and durableflow's floor
    contenders = {c.name: await batch_of(c.three_steps, seconds) for c in everyone}
    contenders["4 raw commits"] = await batch_of(raw_commits(directory / "raw.db"), seconds / 4)
    three = await spread(contenders, args.rounds)
    floor = 4 * three["4 raw commits"][0]
    del three["4 raw commits"]
    best = min((three[p.name][0] for p in peers), default=None)
    rows = [[name, cell(f), f"{f[0] / three['durableflow'][0]:.1f}x"] for name, f in three.items()]
    rows.append(["4 raw single-row commits (durableflow's floor)", us(floor), "-"])
    print_table("1, 2. a durable 3-step run, µs per run", ["", "µs", "x durableflow"], rows)

    # 3: resume at step 500 of 1,000
    resumes = {}
    for c in everyone:
        if hasattr(c, "interrupted"):
            resumes[c.name] = await batch_of(await c.interrupted(), seconds)
    resumed = await spread(resumes, args.rounds)
    for c in everyone:
        c.stop_at = None
    rows = [[name, cell(f), f"{f[0] / resumed['durableflow'][0]:.2f}x"] for name, f in resumed.items()]
    print_table(
        f"3. resuming a run interrupted at step {RESUME_AT} of {RESUME_OF}, through its next step, µs",
        ["", "µs", "x durableflow"],
        rows,
    )

    # 4: 1 MB written in a step
    big = await spread({c.name: await batch_of(c.big_write, seconds) for c in everyone if hasattr(c, "big_write")}, 3)
    rows = [[name, cell(f), f"{f[0] / big['durableflow'][0]:.2f}x"] for name, f in big.items()]
    print_table("4. a 2-step run whose first step writes 1 MB of state, µs per run", ["", "µs", "x durableflow"], rows)

    # 5: per-step cost at 10 / 1,000 / 10,000 steps
    sizes = [10, 1000] if args.quick else [10, 1000, 10_000]
    per_step: dict[str, dict[int, float]] = {c.name: {} for c in everyone if hasattr(c, "steps")}
    for n in sizes:
        contenders = {}
        for c in everyone:
            if not hasattr(c, "steps") or (c is not ours and n > args.peer_steps):
                continue
            contenders[c.name] = await batch_of(lambda c=c, n=n: c.steps(n), seconds if n < 10_000 else 0)
        for name, f in (await spread(contenders, 3 if n >= 1000 else args.rounds)).items():
            per_step[name][n] = f[0] / n
    rows = []
    for name, costs in per_step.items():
        growth = f"{costs[max(costs)] / costs[min(costs)]:.2f}x" if len(costs) > 1 else "-"
        rows.append([name, *(us(costs[n]) if n in costs else "-" for n in sizes), growth])
    print_table(
        "5. µs per step of an N-step run (each step writes one more key); growth = largest N / smallest",
        ["", *(f"N={n:,}" for n in sizes), "growth"],
        rows,
    )

    # 6: concurrency
    sequential, concurrent, ratios = await concurrency(directory, args.concurrent, max(3, args.rounds // 2))
    rows = [[f"{args.concurrent:,}, normal", f"{sequential:,.0f}", f"{concurrent:,.0f}", _ratios(ratios)]]
    if args.concurrent_fsync:
        fsync = await concurrency(directory, args.concurrent_fsync, 3, "fsync")
        rows.append([f"{args.concurrent_fsync:,}, fsync", f"{fsync[0]:,.0f}", f"{fsync[1]:,.0f}", _ratios(fsync[2])])
    print_table(
        "6. durableflow: 3-step runs on one SQLite store, runs per second (median), by durability",
        ["runs, durability", "one after another", "all at once", "ratio (each round)"],
        rows,
    )

    ours_three = three["durableflow"][0]
    print()
    if best is not None:
        ratio = best / ours_three
        verdict = "meets" if ratio >= TARGETS["3-step"] else "MISSES"
        print(f"3-step run: {ratio:.1f}x faster than the fastest peer (target {TARGETS['3-step']:.0f}x): {verdict}")
    ratio = ours_three / floor
    verdict = "meets" if ratio <= TARGETS["floor"] else "MISSES"
    print(f"3-step run: {ratio:.2f}x its floor of four raw commits (target <= {TARGETS['floor']:.0f}x): {verdict}")
    if "LangGraph" in resumed:
        ratio = resumed["LangGraph"][0] / resumed["durableflow"][0]
        verdict = "meets" if ratio >= 1 else "MISSES"
        print(f"resume at {RESUME_AT} of {RESUME_OF}: {ratio:.2f}x LangGraph's speed (target >= 1x): {verdict}")
    for peer in ("LangGraph", "DBOS"):
        if peer in big:
            ratio = big[peer][0] / big["durableflow"][0]
            verdict = "meets" if ratio >= 1 else "MISSES"
            print(f"1 MB write then a small one: {ratio:.2f}x {peer}'s speed (target >= 1x): {verdict}")
    costs = per_step["durableflow"]
    growth = costs[max(costs)] / costs[min(costs)]
    verdict = "meets" if growth <= TARGETS["flat"] else "MISSES"
    print(f"per-step cost from N={min(costs):,} to N={max(costs):,}: {growth:.2f}x (flat: <= 2x): {verdict}")
    ratio = concurrent / sequential
    verdict = "meets" if ratio >= TARGETS["concurrent"] else "MISSES"
    print(f"{args.concurrent:,} concurrent runs: {ratio:.2f}x sequential throughput (target >= 3x): {verdict}")
    if dbos is not None:
        dbos.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="alternating batches of each contender (default 7, quick 3)")
    parser.add_argument("--batch-seconds", type=float, help="length of one batch (default 0.5, quick 0.2)")
    parser.add_argument("--concurrent", type=int, default=1000, help="concurrent runs in part 6 (default 1,000)")
    parser.add_argument(
        "--concurrent-fsync",
        type=int,
        default=300,
        help="the same on durability='fsync', where commits cost a disk flush (default 300; 0 leaves it out)",
    )
    parser.add_argument("--peer-steps", type=int, default=1000, help="longest N-step run to time on peers (1,000)")
    parser.add_argument("--skip", help="peers to leave out: langgraph,dbos,llama-agents-dbos")
    parser.add_argument("--quick", action="store_true", help="a smoke run: the quick defaults, N up to 1,000")
    parser.add_argument(
        "--clock",
        choices=["wall", "thread", "process"],
        default="wall",
        help="time batches by the wall clock (default), by this thread's CPU time, or by the CPU time of every"
        " thread of this process (system calls included): steadier on a busy machine, blind to waiting; 'process'"
        " also counts the threads a peer hands its writes to (part 6 is always wall-clock)",
    )
    args = parser.parse_args()
    global CLOCK
    CLOCK = {"wall": time.perf_counter, "thread": time.thread_time, "process": time.process_time}[args.clock]
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.batch_seconds = args.batch_seconds or (0.2 if args.quick else 0.5)
    with tempfile.TemporaryDirectory(prefix="durableflow-peers-") as tmp:
        asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
