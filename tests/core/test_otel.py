"""The OpenTelemetry extra: a run's hooks become spans (run, step attempts, checkpoints, resume, lease) and metrics,
and the core never imports OpenTelemetry unless the extra is used."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from durableflow import Context, Event, MemoryCheckpointer, StartEvent, StopEvent, Workflow, plugin_manager, step
from durableflow.otel import OpenTelemetryPlugin


class Crash(BaseException):
    """The process dies here: the engine abandons the run without writing."""


class Doubled(Event):
    value: int


class Flaky(Workflow):
    """double, then finish; finish raises ``Crash`` (a dying process) while ``crash`` is set."""

    crash = False

    @step
    async def double(self, ev: StartEvent, ctx: Context) -> Doubled:
        return Doubled(value=ev.value * 2)

    @step
    async def finish(self, ev: Doubled, ctx: Context) -> StopEvent:
        if type(self).crash:
            raise Crash("killed")
        return StopEvent(result=ev.value + 1)


class Failing(Workflow):
    @step
    async def explode(self, ev: StartEvent, ctx: Context) -> StopEvent:
        raise ValueError("no such document")


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.plugin = OpenTelemetryPlugin(tracer_provider, MeterProvider(metric_readers=[self.metrics]))

    def finished(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """Each data point of ``metric`` by its sorted attributes: the sum of a counter, the count of a histogram."""
        data = self.metrics.get_metrics_data()
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for each in scope.metrics:
                    if each.name == metric:
                        for point in each.data.data_points:
                            key = tuple(sorted((point.attributes or {}).items()))
                            found[key] = getattr(point, "value", None) or getattr(point, "count", None)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    recorded = Telemetry()
    plugin_manager.register(recorded.plugin)
    try:
        yield recorded
    finally:
        plugin_manager.unregister(recorded.plugin)
        Flaky.crash = False


async def test_a_run_is_a_span_with_a_child_span_per_step_and_an_event_per_checkpoint(telemetry: Telemetry) -> None:
    """A completed run gives one run span, a child span for each step, and a checkpoint event per checkpoint."""
    assert await Flaky(checkpointer=MemoryCheckpointer()).run(run_id="r1", value=4) == 9
    (run,) = telemetry.finished("durableflow.run")
    assert run.attributes is not None
    assert (run.attributes["durableflow.run_id"], run.attributes["durableflow.status"]) == ("r1", "completed")
    assert run.attributes["durableflow.resumed"] is False
    steps = telemetry.finished("durableflow.step double") + telemetry.finished("durableflow.step finish")
    assert len(steps) == 2
    assert all(span.parent is not None and span.parent.span_id == run.context.span_id for span in steps)
    checkpoints = [event for event in run.events if event.name == "checkpoint"]
    assert [event.attributes["durableflow.seq"] for event in checkpoints if event.attributes] == [1, 2, 3]
    assert telemetry.points("durableflow.checkpoints") == {
        (("durableflow.full", True),): 1,
        (("durableflow.full", False),): 2,
    }
    assert telemetry.points("durableflow.runs.finished") == {
        (("durableflow.status", "completed"), ("durableflow.workflow", "Flaky")): 1
    }
    assert sum(telemetry.points("durableflow.step.duration").values()) == 2


async def test_a_failed_step_marks_its_span_and_the_run_span_as_errors(telemetry: Telemetry) -> None:
    """A step that raises ends its span and the run's with an error status and the exception recorded."""
    with pytest.raises(ValueError):
        await Failing(checkpointer=MemoryCheckpointer()).run(run_id="r2")
    (step_span,) = telemetry.finished("durableflow.step explode")
    (run,) = telemetry.finished("durableflow.run")
    for span in (step_span, run):
        assert span.status.status_code is StatusCode.ERROR
        assert any(event.name == "exception" for event in span.events)
    assert telemetry.points("durableflow.steps") == {
        (("durableflow.outcome", "failed"), ("durableflow.step", "explode")): 1
    }


async def test_a_resumed_run_is_a_new_span_marked_resumed_and_the_abandoned_life_is_closed(
    telemetry: Telemetry,
) -> None:
    """After an in-process crash, the resume opens a run span with resumed=True and closes the dead life's spans."""
    store = MemoryCheckpointer()
    Flaky.crash = True
    with pytest.raises(Crash):
        await asyncio.wait_for(Flaky(checkpointer=store).run(run_id="r3", value=1), 5)
    Flaky.crash = False
    assert await asyncio.wait_for(Flaky(checkpointer=store).resume("r3"), 5) == 3
    lives = telemetry.finished("durableflow.run")
    assert [span.attributes["durableflow.status"] for span in lives if span.attributes] == ["abandoned", "completed"]
    assert lives[1].attributes is not None and lives[1].attributes["durableflow.resumed"] is True
    assert any(event.name == "resumed" for event in lives[1].events)
    assert telemetry.points("durableflow.runs.started") == {
        (("durableflow.resumed", False), ("durableflow.workflow", "Flaky")): 1,
        (("durableflow.resumed", True), ("durableflow.workflow", "Flaky")): 1,
    }


def test_importing_durableflow_does_not_import_opentelemetry() -> None:
    """The core, its CLI and its worker load without touching OpenTelemetry; only durableflow.otel does."""
    code = (
        "import sys, durableflow, durableflow.cli; print(any(name.startswith('opentelemetry') for name in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_without_the_extra_durableflow_otel_names_what_to_install() -> None:
    """With OpenTelemetry missing, importing durableflow.otel raises ImportError naming durableflow[otel]."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n    import durableflow.otel\nexcept ImportError as exc:\n    print(exc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "durableflow[otel]" in out
