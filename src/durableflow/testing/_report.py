"""What a crash exploration found: one ``Outcome`` per scenario, gathered in a ``Report``, and the
plain-data summary of a report that the terminal summary, the HTML matrix and the CLI read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

KINDS = (
    "lost work",
    "duplicated effect",
    "divergent result",
    "divergent state",
    "divergent write",
    "hang",
    "error during resume",
    "unreached",
    "stolen lease",
    "not judgeable",
)
"""How a scenario can fail, from the user's point of view."""


SHOWN = 5
"""Failures shown with their diffs; the rest are counted and named."""

HINTS = {
    "lost work": "work was recorded as done before it happened: do the side effect first, then record it; a run "
    "left waiting lost its question with the process: ask by returning the InputRequiredEvent",
    "duplicated effect": "a side effect ran again after a restart: call it through ctx.effect with a fixed key "
    "and give the call a parameter named idempotency_key (the effect passes its key there, and the fake world "
    "counts one call per key), or make the write idempotent (SET, SADD, HSET); a counter (INCR, HINCRBY) has "
    "no idempotent form: add each item to a set (SADD) and count them (SCARD), or keep the count in ctx.store "
    "and SET it",
    "divergent result": "the resumed run computed another result: keep what it depends on in ctx.store, "
    "do not let it depend on ctx.attempt (a crash counts as a failed attempt, so a resumed step sees a higher "
    "one), read random values and the time inside ctx.effect, and do not depend on the order in which steps "
    "running at once finish (a fan-in's list, Take(n), a join): sort by a field the events carry",
    "divergent state": "the state (or the world) differs: keep progress in ctx.store, not on the instance "
    "or in globals; a value a step computes anew when it runs again after a restart (the time, a random value, "
    "ctx.attempt) differs too: read it once, inside ctx.effect; and write the world idempotently",
    "divergent write": "a step that ran again after the restart wrote the world otherwise (another value, or "
    "a key the uninterrupted run never wrote), not the same work twice: it decided anew on what a restart "
    "changes, the time (time.time(), datetime.now(): the downtime moves it), a random value or ctx.attempt (a "
    "crash counts as a failed attempt); read such a value once, inside ctx.effect (a resumed run is served its "
    "recorded answer), or keep it in ctx.store with the progress it decides, and wait with ctx.sleep (its "
    "deadline is stored) rather than computing a deadline anew from the clock",
    "hang": "a life did not finish: it may wait for something only the dead process would have done "
    "(an asyncio.Event on the instance, a thread)",
    "error during resume": "resuming failed: see the error; a WorkflowTimeoutError means the downtime "
    "(300 s unless --durableflow-downtime, downtime= or crashtest's --downtime says otherwise) outlasted "
    "Workflow(timeout=), which counts time spent crashed: raise the timeout above it or lower the downtime",
    "unreached": "the crash point was not reached again: the run takes another path on each run",
    "stolen lease": "a second worker could take over a live run: the lease is not kept alive",
    "not judgeable": "the harness could not judge it (its diff says why): if a thread of a run that had "
    "stopped (or paused) was still inside the fake world, let no thread outlive its step (await "
    "asyncio.to_thread, join what you start); if a check raised, fix what raised (often the checkpointer)",
}
"""What to do about each kind of failure, printed beside its count."""

INPROCESS_KEPT = (
    "; or keep in ctx.store what the run remembers (ids already sent, a counter): in-process, a module global "
    "or a class attribute outlives each run into the next, where a restart would empty it"
)
"""Why two uninterrupted in-process runs may differ, besides a random id or the time."""


@dataclass
class Outcome:
    """One scenario: the run killed at ``id``, resumed, and judged against the reference run."""

    id: str
    """The crash points, ``step.convert.end#2`` or ``a>b`` at depth 2: pass it back to re-run this one."""
    ok: bool
    kind: str | None = None
    """One of ``KINDS`` when the scenario failed."""
    diff: str = ""
    """What differs from the reference run, as a readable diff."""
    result: Any = None
    """The resumed run's result (decoded JSON), or ``None``."""
    error: str | None = None
    """The resumed run's error, if it ended failed."""
    seconds: float = 0.0
    rerun: str = ""
    """A command or call that re-runs just this scenario."""


@dataclass
class Report:
    """Every scenario of one exploration; ``assert_ok()`` fails the test on any failure."""

    workflow: str
    mode: str
    depth: int
    seed: int
    scenarios: list[Outcome] = field(default_factory=list)
    space: int = 0
    """How many scenarios the depth allows (more than ``scenarios`` when sampled or sharded)."""
    reference: Any = None
    """The uninterrupted run's result."""
    seconds: float = 0.0
    shard: tuple[int, int] | None = None
    """``(index, count)`` when this report holds one shard of an exploration."""
    interrupted: bool = False
    """Stopped by Ctrl-C before every planned scenario ran (``keep_partial=True``): perhaps before the first,
    during the uninterrupted run the scenarios are judged by."""
    notes: list[str] = field(default_factory=list)
    """What this exploration could not vary as a real restart would, and why."""

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.scenarios if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        failed = len(self.failures)
        verdict = (
            f"{failed} of {len(self.scenarios)} scenarios failed"
            if failed
            else f"all {len(self.scenarios)} scenarios passed"
        )
        sampled = f" (sampled from {self.space})" if self.space > len(self.scenarios) else ""
        if self.interrupted:
            sampled = (
                f" (interrupted: {len(self.scenarios)} ran, of the {self.space} found so far)"  # resumes find more
            )
            if not self.scenarios:
                verdict, sampled = "interrupted before any scenario ran", ""
        if self.shard is not None:
            sampled += f" in shard {self.shard[0] + 1} of {self.shard[1]}"
        return (
            f"crash exploration of {self.workflow}: {verdict}{sampled} "
            f"[mode={self.mode} depth={self.depth} seed={self.seed}, {self.seconds:.2f}s]"
        )

    def __str__(self) -> str:
        """What ``print(report)`` shows: the summary, and what failed as ``assert_ok()`` would tell it."""
        return (
            self.failure_text() if self.failures else "\n".join([self.summary(), *(f"note: {n}" for n in self.notes)])
        )

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` listing each failing scenario: its id, kind, diff and re-run line."""
        __tracebackhide__ = True
        if self.ok:
            return
        raise AssertionError(self.failure_text())

    def failure_text(self, shown: int = SHOWN) -> str:
        """The summary, the failures counted by kind with what to do about each, and the first ``shown``
        failures with their diff and re-run line."""
        __tracebackhide__ = True
        failures = in_shown_order(self.failures)
        lines = [self.summary(), *(f"note: {note}" for note in self.notes), "", *kind_lines(failures)]
        for outcome in failures[:shown]:
            lines += ["", f"--- {outcome.id}: {outcome.kind}"]
            lines += ["    " + line for line in outcome.diff.splitlines()]
            if outcome.rerun:
                lines.append(f"    re-run: {outcome.rerun}")
        if len(failures) > shown:
            rest = ", ".join(o.id for o in failures[shown : shown + 20])
            more = " ..." if len(failures) > shown + 20 else ""
            lines += ["", f"... and {len(failures) - shown} more failing scenarios: {rest}{more}"]
        return "\n".join(lines)


def kind_lines(failures: list[Outcome]) -> list[str]:
    """The failures counted by kind, the commonest first, each with what to do about it."""
    kinds = Counter(o.kind for o in failures)
    return [f"  {count:>4} {kind}: {HINTS.get(kind or '', '')}" for kind, count in kinds.most_common()]


def in_shown_order(failures: list[Outcome]) -> list[Outcome]:
    """The first of each kind and depth, then the rest in order: when only some diffs are shown, every
    sort of failure still gets its diff."""
    firsts: dict[tuple[str | None, int], Outcome] = {}
    for outcome in failures:
        firsts.setdefault((outcome.kind, outcome.id.count(">")), outcome)
    return [*firsts.values(), *(o for o in failures if o not in firsts.values())]


class ScenarioSummary(TypedDict):
    """One scenario of an ``ExplorationSummary``."""

    id: str
    kind: str | None
    """``None`` when the scenario passed."""
    diff: str
    rerun: str
    seconds: float


class ExplorationSummary(TypedDict):
    """An exploration as plain data: it crosses from xdist workers to the controller as a user property."""

    test: str
    workflow: str
    mode: str
    depth: int
    seed: int
    space: int
    seconds: float
    scenarios: list[ScenarioSummary]
    interrupted: NotRequired[bool]
    """Stopped by Ctrl-C: ``scenarios`` are those judged before it."""
    test_passed: NotRequired[bool]
    """The test that ran it passed: its failing scenarios were expected (a test of a wrong workflow)."""


def summary_of(test: str, report: Report) -> ExplorationSummary:
    """The summary of ``report``, an exploration that ``test`` (a node id, or a command line) ran."""
    return {
        "test": test,
        "workflow": report.workflow,
        "mode": report.mode,
        "depth": report.depth,
        "seed": report.seed,
        "space": report.space,
        "seconds": report.seconds,
        "scenarios": [
            {"id": o.id, "kind": o.kind, "diff": o.diff, "rerun": o.rerun, "seconds": o.seconds}
            for o in report.scenarios
        ],
        "interrupted": report.interrupted,
    }


def summary_lines(explorations: list[ExplorationSummary], seed: int) -> list[str]:
    """The session's terminal summary: one line for the session, one per exploration, slowest first (at most ten)."""
    scenarios = sum(len(e["scenarios"]) for e in explorations)
    failed = sum(1 for e in explorations for s in e["scenarios"] if s["kind"])
    expected = sum(1 for e in explorations if e.get("test_passed") for s in e["scenarios"] if s["kind"])
    of_them = f" ({expected} of them in tests that passed, which expect them)" if expected else ""
    lines = [
        f"{len(explorations)} explorations, {scenarios} scenarios, {failed} failed{of_them} (session seed {seed})",
    ]
    width = max(len(e["test"]) for e in explorations)
    for exploration in sorted(explorations, key=lambda e: -e["seconds"])[:10]:
        count = len(exploration["scenarios"])
        bad = sum(1 for s in exploration["scenarios"] if s["kind"])
        slowest = max(exploration["scenarios"], key=lambda s: s["seconds"], default=None)
        slow = f", slowest {slowest['id']} {slowest['seconds'] * 1000:.0f}ms" if slowest else ""
        lines.append(
            f"  {exploration['test']:<{width}}  {exploration['mode']:<9} depth {exploration['depth']}  "
            f"{count:>5} scenarios  {bad:>4} failed  {exploration['seconds']:6.2f}s{slow}"
        )
    return lines
