"""Fixtures for driving the ``durableflow`` command as a user would: from a project directory holding a workflow."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from durableflow.cli import main

FLOWS = '''
"""Workflows of a user's project, driven by the CLI tests."""

import asyncio
import os
from pathlib import Path

from durableflow import (
    Context, Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent, Workflow, step,
)


class Converted(Event):
    ids: list[int]


class Pipeline(Workflow):
    """Converts documents one by one, durable after each, then charges once for them all."""

    @step
    async def convert(self, ev: StartEvent, ctx: Context) -> Converted:
        done = await ctx.store.get("converted_ids", default=[])
        for doc_id in ev.ids:
            if doc_id in done:
                continue
            with open("side_effects.log", "a") as log:
                log.write(f"{doc_id}\\n")
            done.append(doc_id)
            await ctx.store.set("converted_ids", done)
            await ctx.checkpoint()
            crash_flag = Path(f"crash-after-{doc_id}")
            if crash_flag.exists():
                crash_flag.unlink()
                os._exit(17)  # the process dies right after the checkpoint
        return Converted(ids=done)

    @step
    async def charge(self, ev: Converted, ctx: Context) -> StopEvent:
        if Path("payments-down").exists():
            raise RuntimeError("payment service is down")
        receipt = await ctx.effect("charge", lambda: f"paid for {len(ev.ids)}")
        return StopEvent(result={"converted": ev.ids, "receipt": receipt})


def make_pipeline() -> Pipeline:
    return Pipeline(timeout=60)


class Slow(Workflow):
    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(10)
        return StopEvent(result="too late")


def slow() -> Slow:
    return Slow(timeout=0.2)


class Napping(Workflow):
    @step
    async def nap(self, ev: StartEvent, ctx: Context) -> StopEvent:
        await ctx.sleep(60)
        return StopEvent(result="rested")


class OrderPlaced(StartEvent):
    order_id: int


class Orders(Workflow):
    @step
    async def place(self, ev: OrderPlaced) -> StopEvent:
        return StopEvent(result=ev.order_id)


class Approval(Workflow):
    """Asks a human to approve a payout, then pays it or not as they answer."""

    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(question=f"approve {ev.amount}?")

    @step
    async def decide(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


class InStepApproval(Workflow):
    """Asks from inside its step (ctx.wait_for_event) and pays as answered."""

    @step
    async def ask(self, ev: StartEvent, ctx: Context) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent, waiter_event=InputRequiredEvent(question="approve?"))
        return StopEvent(result=answer.response)


class NotAWorkflow:
    pass


def returns_text() -> str:
    return "not a workflow"


pipeline_instance = Pipeline()
'''


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's project directory holding ``cliflows.py``, made the current directory."""
    (tmp_path / "cliflows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COLUMNS", raising=False)  # xdist sets 80; tables piped elsewhere are not cropped
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds the cwd to sys.path (last)
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("cliflows", None)  # the next test's project has its own cliflows


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """``cli("run", ...)`` runs ``durableflow`` in-process in the project and gives its exit code and output."""

    def invoke(*argv: str) -> Outcome:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def shell(project: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``shell("run", ...)`` runs ``python -m durableflow`` in a fresh process in the project, as a shell would."""

    def invoke(
        *argv: str, command: Sequence[str] = (sys.executable, "-m", "durableflow")
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *argv], cwd=project, capture_output=True, text=True, timeout=60)

    return invoke
