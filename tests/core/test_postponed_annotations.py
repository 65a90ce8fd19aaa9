"""Steps whose annotations name classes defined inside a function resolve under postponed annotations."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated

import pytest

from durableflow import Context, Event, Resource, StartEvent, StopEvent, Workflow, WorkflowValidationError, step


async def test_a_workflow_defined_in_a_function_with_local_events_and_resources_runs() -> None:
    """Every annotation is a string here; the local Draft, Counter and make_counter still resolve."""

    class Draft(Event):
        text: str

    class Counter:
        def __init__(self) -> None:
            self.calls = 0

    def make_counter() -> Counter:
        return Counter()

    class Writer(Workflow):
        @step
        async def write(self, ev: StartEvent, counter: Annotated[Counter, Resource(make_counter)]) -> Draft:
            counter.calls += 1
            return Draft(text=ev.topic)

        @step
        async def edit(self, ev: Draft, ctx: Context) -> StopEvent:
            return StopEvent(result=ev.text.upper())

    assert await Writer().run(topic="local") == "LOCAL"


class Later(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> DefinedAfter:
        return DefinedAfter()

    @step
    async def end(self, ev: DefinedAfter) -> StopEvent:
        return StopEvent(result="resolved on first use")


class DefinedAfter(Event):
    pass


async def test_a_name_defined_after_the_workflow_resolves_on_first_use() -> None:
    """A module-level event defined below the workflow is looked up when the workflow is first used."""
    assert await Later().run() == "resolved on first use"


def test_a_name_that_never_resolves_is_named_in_the_error() -> None:
    """An annotation naming nothing fails with the peer's message, naming the missing name."""
    with pytest.raises(
        WorkflowValidationError, match=r"Failed to resolve type annotations for .*Missing name: Nowhere"
    ):

        class Broken(Workflow):
            @step
            async def begin(self, ev: Nowhere) -> StopEvent:  # type: ignore[name-defined]  # noqa: F821
                return StopEvent()

        Broken()


def test_once_the_module_is_imported_an_unresolved_name_fails_as_the_class_is_defined() -> None:
    """A workflow defined inside a function cannot wait for a later name: the peer raises at decoration, so do we."""
    with pytest.raises(WorkflowValidationError, match=r"Failed to resolve type annotations .*Missing name: Nowhere"):

        class Broken(Workflow):
            @step
            async def begin(self, ev: StartEvent) -> Nowhere:  # type: ignore[name-defined]  # noqa: F821
                return StopEvent()


def test_a_script_run_as_main_may_name_an_event_defined_below_its_workflow(tmp_path: Path) -> None:
    """The script being run may name an event it defines further down, whether run as a file or with -m."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from durableflow import Event, StartEvent, StopEvent, Workflow, step

            class Script(Workflow):
                @step
                async def begin(self, ev: StartEvent) -> "Below":
                    return Below()

                @step
                async def end(self, ev: "Below") -> StopEvent:
                    return StopEvent(result="resolved")

            class Below(Event):
                pass

            async def main() -> None:
                print(await Script().run())

            asyncio.run(main())
            """
        )
    )
    for argv in ([str(script)], ["-m", "script"]):  # run as a file, and as a module (it has a spec then)
        proc = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "resolved"
