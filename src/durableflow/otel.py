"""OpenTelemetry for durableflow runs: a plugin that turns the run's hooks into spans and metrics.

Install ``durableflow[otel]`` and call ``instrument()`` once; nothing else in
durableflow imports OpenTelemetry. Spans: one per life of a run in a process
(``durableflow.run``, resumed or not) with a child span per step attempt and a
span event per checkpoint. Metrics: the counters and histograms in
``OpenTelemetryPlugin.__init__``.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, final

from ._errors import install_hint
from ._hooks import hookimpl, plugin_manager

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Status, StatusCode
except ImportError:  # pragma: no cover - exercised by the missing-extra test in a subprocess
    raise ImportError(f"durableflow.otel needs OpenTelemetry, in {install_hint('otel')}") from None

if TYPE_CHECKING:
    from ._events import Event
    from ._workflow import Workflow

_SCOPE = "durableflow"


@final
class OpenTelemetryPlugin:
    """The durableflow plugin behind ``instrument()``; register it yourself to choose its providers."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self.runs_started = meter.create_counter(
            "durableflow.runs.started", unit="{run}", description="runs started or resumed in this process"
        )
        self.runs_finished = meter.create_counter(
            "durableflow.runs.finished", unit="{run}", description="runs that ended here, by status"
        )
        self.run_duration = meter.create_histogram(
            "durableflow.run.duration", unit="s", description="one life of a run in this process, start to end"
        )
        self.steps = meter.create_counter(
            "durableflow.steps", unit="{attempt}", description="step attempts, by step and outcome"
        )
        self.step_duration = meter.create_histogram(
            "durableflow.step.duration", unit="s", description="one attempt of a step"
        )
        self.checkpoints = meter.create_counter(
            "durableflow.checkpoints", unit="{checkpoint}", description="checkpoints written, full or delta"
        )
        self.leases_ended = meter.create_counter(
            "durableflow.leases.ended", unit="{lease}", description="runs this process stopped driving unfinished"
        )
        self._runs: dict[str, tuple[trace.Span, float, str]] = {}  # run id -> span, start, workflow name
        self._steps: dict[tuple[str, str, int], tuple[trace.Span, float, object]] = {}  # -> span, start, token
        self._early: dict[str, tuple[int, bool]] = {}  # the checkpoint a run writes as it starts, before its span

    # -- runs ----------------------------------------------------------------------------

    @hookimpl
    def durableflow_run_started(self, run_id: str, workflow: Workflow, resumed: bool) -> None:
        self._end_run(run_id, "abandoned", None)  # a life this process abandoned (a crash) and now resumes
        name = type(workflow).__qualname__
        span = self.tracer.start_span(
            "durableflow.run",
            attributes={"durableflow.run_id": run_id, "durableflow.workflow": name, "durableflow.resumed": resumed},
        )
        if resumed:
            span.add_event("resumed")
        early = self._early.pop(run_id, None)
        if early is not None:
            span.add_event("checkpoint", {"durableflow.seq": early[0], "durableflow.full": early[1]})
        self._runs[run_id] = (span, time.perf_counter(), name)
        self.runs_started.add(1, {"durableflow.workflow": name, "durableflow.resumed": resumed})

    @hookimpl
    def durableflow_run_finished(
        self, run_id: str, workflow: Workflow, status: str, result: Any, error: BaseException | None
    ) -> None:
        self._end_run(run_id, status, error)

    @hookimpl
    def durableflow_lease_ended(self, run_id: str, reason: str) -> None:
        self.leases_ended.add(1, {"durableflow.reason": reason})
        entry = self._runs.get(run_id)
        if entry is not None:
            entry[0].add_event("lease ended", {"durableflow.reason": reason})
        if reason == "handed_back":
            self._end_run(run_id, "handed_back", None)

    def _end_run(self, run_id: str, status: str, error: BaseException | None) -> None:
        entry = self._runs.pop(run_id, None)
        if entry is None:
            return
        span, began, name = entry
        for key in [key for key in self._steps if key[0] == run_id]:  # attempts the run's end cut short
            self._end_step(key, "abandoned", None)
        span.set_attribute("durableflow.status", status)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        attributes = {"durableflow.workflow": name, "durableflow.status": status}
        self.runs_finished.add(1, attributes)
        self.run_duration.record(time.perf_counter() - began, attributes)

    # -- steps ---------------------------------------------------------------------------

    @hookimpl
    def durableflow_step_started(self, run_id: str, step: str, event: Event, attempt: int) -> None:
        entry = self._runs.get(run_id)
        parent = trace.set_span_in_context(entry[0]) if entry is not None else None
        span = self.tracer.start_span(
            f"durableflow.step {step}",
            context=parent,
            attributes={
                "durableflow.run_id": run_id,
                "durableflow.step": step,
                "durableflow.event": type(event).__name__,
                "durableflow.attempt": attempt,
            },
        )
        # current while the step runs, so that spans the step's own code makes are its children
        token = otel_context.attach(trace.set_span_in_context(span))
        self._steps[run_id, step, id(event)] = (span, time.perf_counter(), token)

    @hookimpl
    def durableflow_step_finished(
        self, run_id: str, step: str, event: Event, output: Event | None, error: Exception | None
    ) -> None:
        self._end_step((run_id, step, id(event)), "failed" if error is not None else "completed", error)

    def _end_step(self, key: tuple[str, str, int], outcome: str, error: BaseException | None) -> None:
        entry = self._steps.pop(key, None)
        if entry is None:
            return
        span, began, token = entry
        with contextlib.suppress(Exception):  # ended from another task (the run's end): that context is gone
            otel_context.detach(token)  # type: ignore[arg-type]
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        attributes = {"durableflow.step": key[1], "durableflow.outcome": outcome}
        self.steps.add(1, attributes)
        self.step_duration.record(time.perf_counter() - began, attributes)

    # -- checkpoints ---------------------------------------------------------------------

    @hookimpl
    def durableflow_checkpoint_written(self, run_id: str, seq: int, full: bool) -> None:
        self.checkpoints.add(1, {"durableflow.full": full})
        entry = self._runs.get(run_id)
        if entry is not None:
            entry[0].add_event("checkpoint", {"durableflow.seq": seq, "durableflow.full": full})
        else:
            self._early[run_id] = (seq, full)


_installed: OpenTelemetryPlugin | None = None


def instrument(
    tracer_provider: trace.TracerProvider | None = None, meter_provider: metrics.MeterProvider | None = None
) -> OpenTelemetryPlugin:
    """Report every run of this process to OpenTelemetry (the global providers unless given); idempotent."""
    global _installed
    if _installed is None:
        _installed = OpenTelemetryPlugin(tracer_provider, meter_provider)
        plugin_manager.register(_installed, name="durableflow.otel")
    return _installed


def uninstrument() -> None:
    """Stop reporting to OpenTelemetry."""
    global _installed
    if _installed is not None:
        plugin_manager.unregister(_installed)
        _installed = None


__all__ = ["OpenTelemetryPlugin", "instrument", "uninstrument"]
