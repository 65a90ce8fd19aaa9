"""``Context``: what a step sees of its run — the state store, events, effects, sleeps, snapshots."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Generic

from pydantic import ValidationError
from typing_extensions import TypeVar

from . import _encoding, _recovery, _snapshot, _step_calls, _waiters
from ._errors import SnapshotError, WorkflowRuntimeError, WorkflowValidationError
from ._events import Event, StopEvent
from ._graph import graph_of
from ._retry import RetryInfo
from ._runstate import Delivery, RunState, current_context, current_delivery
from ._serializers import JsonSerializer
from ._store import StateStore

if TYPE_CHECKING:
    from ._runner import Runner
    from ._workflow import Workflow

StateT = TypeVar("StateT", default=Any)  # a bare ``ctx: Context`` means untyped state, also for mypy --strict
T = TypeVar("T")
E = TypeVar("E", bound=Event)


class Context(Generic[StateT]):
    """One run's context. Steps receive it by annotating a parameter ``ctx: Context``.

    ``Context(workflow)`` makes a fresh one to pass to ``wf.run(ctx=...)``; its
    state then carries over from run to run. ``ctx.to_dict()`` /
    ``Context.from_dict(workflow, data)`` save and restore a run by hand.
    """

    def __init__(self, workflow: Workflow, serializer: JsonSerializer | None = None) -> None:
        self._graph = graph_of(type(workflow), check=False)
        if self._graph.state_conflict:  # checked even when validation is disabled: no state type fits every step
            raise WorkflowValidationError(self._graph.state_conflict)
        self._workflow_name: str = workflow.workflow_name
        self._state = RunState("")
        pickles = (serializer or workflow._serializer).pickles
        self._codec = self._graph.pickle_codec if pickles else self._graph.codec
        self.store: StateStore[StateT] = StateStore._of_run(self._codec, self._graph.state_type)
        """The run's state: ``await ctx.store.get(key, default=...)``, ``await ctx.store.set(key, value)``."""
        self._runner: Runner | None = None

    # -- about the run ---------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The run's id ("" before the first run)."""
        return self._state.run_id

    @property
    def attempt(self) -> int:
        """Which attempt of the current step this is: 1, then 2 after a retry..."""
        return self._delivery("attempt").attempt

    def retry_info(self) -> RetryInfo:
        """Inside a step: which retry this is (0 on the first attempt), time since the first, the last error."""
        return _recovery.retry_info(self._delivery("retry_info"))

    @staticmethod
    def get_step_context() -> Context[Any]:
        """The context of the step running here, for code a step calls that was not handed ``ctx``."""
        ref = current_context.get()
        ctx = ref() if ref is not None else None
        if ctx is None:
            raise WorkflowRuntimeError("Context.get_step_context() may only be called from within a step function")
        return ctx  # type: ignore[no-any-return]

    async def running_steps(self) -> list[str]:
        """The names of the steps working on an event now (none once the run is over)."""
        runner = self._runner
        if runner is None and not self._state.run_id:
            self._live("running_steps")  # never ran: there is nothing to ask about
        return [] if runner is None else sorted(name for name, busy in runner.busy.items() if busy)

    @property
    def is_running(self) -> bool:
        """Whether the run has started and not completed (a cancelled or failed run can be continued).

        Inside one of the run's own steps it is always true, and asking is deprecated (a warning, once)."""
        if self._in_own_step():
            _warn_is_running_in_step()
            return True
        return self._state.status not in ("new", "completed")

    def get_result(self) -> Any:
        """Deprecated: await the handler ``wf.run()`` returns. The completed run's result, as awaiting gives it."""
        _warn_get_result()
        if self._runner is None and not self._state.run_id:
            self._live("get_result")  # never ran: raises
        stop = self._state.result
        if self._state.status != "completed" or stop is None:
            raise WorkflowRuntimeError(f"run {self.run_id!r} is not complete: await its handler for the result")
        return stop.result if type(stop) is StopEvent else stop

    def _workflow_cancel_run(self) -> None:
        """Cancel the run from outside it, as ``handler.cancel_run()`` does. Before the run starts there is
        nothing to cancel, and a step cannot cancel its own run: both only warn (once)."""
        if self._in_own_step():
            _warn_cancel_in_step()
        elif self._runner is None:
            _warn_cancel_before_start()
        else:
            self._runner.cancel()

    def _in_own_step(self) -> bool:
        ref = current_context.get()
        return ref is not None and ref() is self and current_delivery.get() is not None

    # -- events ------------------------------------------------------------------------

    async def wait_for_event(
        self,
        event_type: type[E],
        waiter_event: Event | None = None,
        waiter_id: str | None = None,
        requirements: dict[str, Any] | None = None,
        timeout: float | None = 2000,
    ) -> E:
        """Wait inside a step for an event of ``event_type`` sent from outside (``handler.ctx.send_event``)
        whose fields equal ``requirements``; ``waiter_event`` (an ``InputRequiredEvent``, say) is sent first.

        Durable: after a restart the step runs again from its top, its request is not sent
        twice, and an answer that arrived before the crash is found again.
        """
        delivery = self._delivery("wait_for_event")
        return await _waiters.wait_for(
            self._live("wait_for_event"), delivery, event_type, requirements, waiter_event, timeout
        )

    # -- events ------------------------------------------------------------------------

    def send_event(self, event: Event, step: str | None = None) -> None:
        """Send ``event`` to every step that accepts it, or only to ``step``.

        Sent from a step, events are matched by order when the step runs again
        after a restart: the ones accepted before the crash are not sent twice.
        """
        runner = self._live("send_event")
        runner.call(runner.send, event, step, current_delivery.get())

    def collect_events(
        self, ev: Event, expected: list[type[Event]], buffer_id: str | None = None
    ) -> list[Event] | None:
        """Buffer ``ev``; once events of every ``expected`` type are in, return them in that order.

        Returns ``None`` until the set is complete. The buffer is part of the
        run's checkpoints; an event delivered again after a restart is not
        counted twice.
        """
        delivery = self._delivery("collect_events")
        runner = self._live("collect_events")
        return runner.call(_step_calls.collect, runner.run, delivery, ev, expected, buffer_id or delivery.step)

    def stream_events(self) -> AsyncIterator[Event]:
        """The running run's stream, as ``handler.stream_events()`` reads it (one reader at a time)."""
        from ._handler import WorkflowHandler  # the handler imports the context: late, to avoid a cycle

        runner = self._live("stream_events")
        handler = WorkflowHandler(self.run_id, runner.future, self)
        handler._attach(runner)
        return handler.stream_events()

    def write_event_to_stream(self, ev: Event) -> None:
        """Show ``ev`` to whoever iterates ``handler.stream_events()`` (not durable)."""
        runner = self._live("write_event_to_stream")
        runner.call(runner.write_stream, ev)

    # -- durability ----------------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Make everything so far durable now, mid-step (a no-op without a checkpointer).

        If the process dies later in this step, the step runs again from its
        top and finds the state as of this call.
        """
        delivery = self._delivery("checkpoint")
        await self._live("checkpoint").checkpoint(f"ctx.checkpoint in {delivery.step}")

    async def effect(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` once per run and ``key``; later calls, after a restart too, get the recorded result.

        If ``fn`` has an ``idempotency_key`` parameter it receives ``"<run_id>:<key>"``:
        pass it downstream to close the one window left, a crash after ``fn``
        returned and before its result was checkpointed.
        """
        self._delivery("effect")
        return await _step_calls.effect(self._live("effect"), key, fn, args)

    async def sleep(self, seconds: float) -> None:
        """Sleep until a deadline that is checkpointed: after a restart, only the rest is slept."""
        delivery = self._delivery("sleep")
        await _step_calls.sleep(self._live("sleep"), delivery, seconds)

    # -- persistence by hand -----------------------------------------------------------

    def to_dict(self, serializer: JsonSerializer | None = None, *, include_state: bool = True) -> dict[str, Any]:
        """The run as a JSON-compatible dict, with a checksum; works inside a step too.

        Restoring it delivers again every event not yet consumed, including the
        input of a step that is running now. Before the first run it holds only the
        state seeded so far. ``include_state=False`` leaves the state out: restored,
        the context starts from a fresh state.
        """
        if self._runner is not None:
            return self._runner.call(self._to_dict, include_state)
        return self._to_dict(include_state)

    @classmethod
    def from_dict(
        cls, workflow: Workflow, data: dict[str, Any], serializer: JsonSerializer | None = None
    ) -> Context[Any]:
        """Rebuild a context saved by ``to_dict``; ``await workflow.run(ctx=restored)`` continues it.

        Raises ``SnapshotError`` if the data is corrupt, edited, or no longer
        fits the workflow's steps and events. Another workflow's context is
        taken only once its run is over (or before it began): its state then
        seeds this workflow's next run.
        """
        if not isinstance(data, dict):
            raise SnapshotError(f"expected the dict ctx.to_dict() returns, found a {type(data).__name__}")
        if "checksum" not in data and "format" not in data and ("workers" in data or "version" in data):
            raise SnapshotError(
                f"this context was saved by llama-index-workflows (its format version {data.get('version')!r}), "
                "not by durableflow, so its run cannot be continued here. Its state can: "
                "deserialize_state_from_dict(data['state'], JsonSerializer()) gives it, to seed "
                "ctx.store.set_state(...) on a new Context before the next run"
            )
        try:
            expected = _snapshot.checksum(data)
        except (TypeError, ValueError, RecursionError) as exc:  # not JSON data: not what to_dict() returns
            raise SnapshotError(f"the snapshot is not JSON data ({exc})", run_id=data.get("run_id")) from None
        if data.get("checksum") != expected:
            raise SnapshotError("checksum mismatch: the snapshot is corrupt or was edited", run_id=data.get("run_id"))
        doc = {**data, "state": _state_values(data.get("state"))}
        if doc.get("workflow") != workflow.workflow_name and _nothing_owed(doc):
            # another workflow's context whose run is over (or never began): nothing of that run is owed to
            # steps this workflow lacks, so only its state carries over, to seed this workflow's next run
            graph = graph_of(type(workflow), check=False)
            doc = {
                **doc,
                **{key: {} for key in ("events", "deliveries", "buffers", "effects")},
                "awaiting": [],
                "result": None,
                "error": None,
                "status": "new",
                "run_id": "",
                "workflow": workflow.workflow_name,
                "fingerprint": graph.fingerprint,
                "graph": graph.description,
            }
        if doc.get("run_id") == "" and doc.get("status") == "new":  # saved before its first run: state only
            ctx = cls._restore(workflow, {**doc, "run_id": _BEFORE_RUN}, serializer)
            ctx._state = RunState("")
            return ctx
        return cls._restore(workflow, doc, serializer)

    # -- internals -----------------------------------------------------------------------

    @classmethod
    def _restore(
        cls, workflow: Workflow, doc: dict[str, Any], serializer: JsonSerializer | None = None
    ) -> Context[Any]:
        ctx: Context[Any] = cls(workflow, serializer)
        run, values = _snapshot.restore(doc, ctx._graph, ctx._workflow_name, ctx._codec)
        ctx._state = run
        ctx.store = StateStore._of_run(ctx._codec, ctx._graph.state_type, values)
        if ctx._graph.state_type is not None:
            try:
                ctx.store._snapshot_state()
            except ValidationError as exc:
                raise SnapshotError(
                    f"the stored state no longer fits {ctx._graph.state_type.__name__}: {exc}", run_id=run.run_id
                ) from None
        return ctx

    def _to_dict(self, include_state: bool = True) -> dict[str, Any]:
        body = _encoding.encode_full(
            self._state, self.store, self._graph, self._state.seq, "to_dict", self._workflow_name
        )
        doc: dict[str, Any] = json.loads(body)
        doc["state"] = _state_section(doc["state"] if include_state else None, self._graph.state_type)
        doc["is_running"] = self._in_own_step() or self._state.status not in ("new", "completed")  # no warning
        doc["checksum"] = _snapshot.checksum(doc)
        return doc

    def _live(self, what: str) -> Runner:
        if self._runner is None:
            when = "before workflow started" if not self._state.run_id else "after its run ended"
            raise WorkflowRuntimeError(
                f"ctx.{what}() called {when}: it requires a running workflow (this context is not running)"
            )
        return self._runner

    def _delivery(self, what: str) -> Delivery:
        delivery = current_delivery.get()
        if delivery is None:
            raise WorkflowRuntimeError(f"ctx.{what} may only be called from within a step function")
        return delivery


# ``to_dict()``'s "state" is laid out as llama-index-workflows lays it out, so code reading a saved
# context finds its values where it did: untyped state as JSON texts under state_data._data, a
# typed state as one JSON text. Snapshots in a checkpointer keep their own, flatter layout.


_BEFORE_RUN = "before-first-run"  # stands in for the run id a snapshot taken before any run lacks, to check the rest


def _state_section(values: dict[str, Any] | None, state_type: type[Any] | None) -> dict[str, Any]:
    if values is None:  # left out: restored, the store starts fresh
        return {}
    if state_type is None:
        return {
            "state_data": {"_data": {key: json.dumps(value) for key, value in values.items()}},
            "state_type": "DictState",
            "state_module": "durableflow",
        }
    wrapped = {"__is_pydantic": True, "value": values, "qualified_name": _qualified(state_type)}
    return {"state_data": json.dumps(wrapped), "state_type": state_type.__name__, "state_module": state_type.__module__}


def _nothing_owed(doc: dict[str, Any]) -> bool:
    """A saved run that owes no step an event and waits for nothing: it never began, or it completed."""
    return doc.get("status") in ("new", "completed") and not doc.get("deliveries") and not doc.get("awaiting")


def _state_values(section: Any) -> Any:
    """The snapshot's "state" (key -> value) from ``to_dict()``'s layout; anything else is left to be refused."""
    if section == {}:
        return {}
    if not isinstance(section, dict) or "state_data" not in section:
        return section
    data = section["state_data"]
    try:
        if isinstance(data, dict):
            texts = data.get("_data")
            if not isinstance(texts, dict) or not all(isinstance(t, str) for t in texts.values()):
                raise ValueError("state_data._data must map each key to a JSON text")
            return {key: json.loads(text) for key, text in texts.items()}
        if not isinstance(data, str):
            raise ValueError("state_data must be an object or a JSON text")
        wrapped = json.loads(data)
        if not isinstance(wrapped, dict) or not isinstance(wrapped.get("value"), dict):
            raise ValueError("a typed state_data must be a JSON text of an object with a 'value' object")
        return wrapped["value"]
    except (TypeError, ValueError, RecursionError) as exc:
        raise SnapshotError(f"the snapshot's state section is not what to_dict() writes ({exc})") from None


def _qualified(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# Deprecated or pointless calls warn once per process (``cache_clear()`` re-arms one), as the peer's do.


@functools.lru_cache(maxsize=1)
def _warn_is_running_in_step() -> None:
    warnings.warn(
        "is_running called from within a step; the workflow is always running inside a step. This usage is deprecated.",
        DeprecationWarning,
        stacklevel=4,
    )


@functools.lru_cache(maxsize=1)
def _warn_get_result() -> None:
    warnings.warn(
        "Context.get_result() is deprecated: await the handler instead, `result = await workflow.run(..., ctx=ctx)`.",
        DeprecationWarning,
        stacklevel=3,
    )


@functools.lru_cache(maxsize=1)
def _warn_cancel_before_start() -> None:
    warnings.warn("cancel() called before workflow started; nothing to cancel.", UserWarning, stacklevel=4)


@functools.lru_cache(maxsize=1)
def _warn_cancel_in_step() -> None:
    warnings.warn(
        "cancel() called from within a step; a step cannot cancel its own run (return a StopEvent, or "
        "raise) — nothing was cancelled.",
        UserWarning,
        stacklevel=4,
    )
