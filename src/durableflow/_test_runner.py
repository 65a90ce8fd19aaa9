"""``WorkflowTestRunner``: run a workflow to its end and collect what it streamed, for tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from ._events import Event, StartEvent

if TYPE_CHECKING:
    from ._context import Context
    from ._workflow import Workflow


@dataclass
class WorkflowTestResult:
    """What a run streamed, how often each event type, its result and its context."""

    collected: list[Event]
    event_types: dict[type[Event], int]
    result: Any
    ctx: Context[Any]


@final
class WorkflowTestRunner:
    """``await WorkflowTestRunner(wf).run(StartEvent(...))`` runs ``wf`` once and collects its stream."""

    def __init__(self, workflow: Workflow) -> None:
        self._workflow = workflow

    async def run(
        self,
        start_event: StartEvent | None = None,
        ctx: Context[Any] | None = None,
        expose_internal: bool = True,
        exclude_events: list[type[Event]] | None = None,
    ) -> WorkflowTestResult:
        if ctx is not None and ctx.is_running:
            handler = self._workflow.run(ctx=ctx)  # a context that continues its run takes no start event
        else:
            handler = self._workflow.run(ctx=ctx, start_event=start_event or StartEvent())
        collected = [
            event
            async for event in handler.stream_events(expose_internal=expose_internal)
            if not exclude_events or type(event) not in exclude_events
        ]
        result = await handler
        return WorkflowTestResult(collected, dict(Counter(type(e) for e in collected)), result, handler.ctx)
