"""``Workflow``: subclass it, decorate methods with ``@step``, then ``run`` or ``resume``."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from . import _claims
from ._checkpointer import Checkpointer, new_owner
from ._context import Context
from ._errors import (
    WorkflowRuntimeError,
    WorkflowValidationError,
)
from ._events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from ._graph import graph_of
from ._handler import WorkflowHandler
from ._hooks import plugin_manager
from ._resource import ResourceManager, check_resources
from ._runner import Runner
from ._runstate import RunState
from ._serializers import JsonSerializer, Serializer
from ._step import WorkflowGraphCheck, step_config
from ._validation import GRAPH_CHECKS, validate_workflow

_LEASE_POLL = 0.2


class _class_or_instance:
    """A method callable on the class (``MyWorkflow.validate()``) and on an instance (``wf.validate()``)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, instance: Any, owner: type) -> Callable[..., Any]:
        return functools.partial(self.fn, owner, instance)


def _new_run_id() -> str:
    """A UUIDv7 as ``uuid.UUID.hex`` writes it: the time in milliseconds, then random bits. Time-ordered, so that
    a store's index of run ids takes each new one at its end, on the page the last one went to, rather than on a
    random page that must be read and split as the store grows. The random part is taken from a batch made from
    one ``os.urandom`` call (dropped in a forked child, which must not hand out its parent's ids)."""
    while True:  # runs started from several threads at once: each pop is atomic, a random part is used once
        try:
            tail = _run_ids.pop()
        except IndexError:
            _run_ids.extend(_uuid7_tails(256))
            continue
        return (time.time_ns() // 1_000_000 & _MS_MASK).to_bytes(6, "big").hex() + tail  # (half a format's cost)


def _uuid7_tails(count: int) -> list[str]:
    """``count`` random ends of a UUIDv7 (what follows its 48 bits of time): version (7) and variant bits set."""
    raw = bytearray(os.urandom(10 * count))
    raw[0::10] = raw[0::10].translate(_VERSION)  # (a table, not a generator over the bytes: a fifth of the cost)
    raw[2::10] = raw[2::10].translate(_VARIANT)
    text = raw.hex()
    return [text[i : i + 20] for i in range(0, 20 * count, 20)]


_MS_MASK = (1 << 48) - 1
_VERSION = bytes(b & 0x0F | 0x70 for b in range(256))
_VARIANT = bytes(b & 0x3F | 0x80 for b in range(256))
_run_ids: list[str] = []
os.register_at_fork(after_in_child=_run_ids.clear)


def _require_loop(what: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise WorkflowRuntimeError(
            f"wf.{what}() needs a running event loop: call it from async code, e.g. inside asyncio.run(main())"
        ) from None


class Workflow:
    """Base of every workflow. Steps are the methods decorated with ``@step``.

    ``timeout`` is the run's limit in seconds (``None``: none), stored as a
    deadline so that time spent crashed counts. With a ``checkpointer`` every
    run is durable: checkpointed at start, after each step and at the end.
    """

    extra_events: tuple[type[Event], ...] = ()
    """Event types no step annotation names that a run still stores: those ``ctx.wait_for_event`` waits for.
    Naming them here lets a stored run that holds one load after a restart."""

    step_crash_limit: int | None = 5
    """How often a step's process may die while the step runs (counted durably, per event it handles) before
    the run fails with ``StepCrashLoopError`` instead of trying again (``None``: no limit)."""

    max_recoveries: int | None = None
    """How often in a row a run may be resumed after its owner died without completing a step; one more and
    it is marked failed with ``RecoveryLimitError`` instead of driven (``None``: no limit). ``Worker`` sets it."""

    _workflow_name: str | None = None
    _disable_validation = False
    _skip_graph_checks: frozenset[str] = frozenset()
    _resource_manager: ResourceManager | None = None
    _serializer: JsonSerializer = JsonSerializer()

    @property
    def workflow_name(self) -> str:
        """The name a stored run is bound to (with the step graph's fingerprint).

        By default the class's qualified name, never its module, so a run started
        by a script (``__main__``) resumes in a process that imports the script as
        a module. Set it with ``Workflow(workflow_name=...)`` or as a class attribute.
        """
        return self._workflow_name or type(self).__qualname__

    def __init__(
        self,
        timeout: float | None = None,
        checkpointer: Checkpointer | None = None,
        *,
        workflow_name: str | None = None,
        disable_validation: bool = False,
        verbose: bool = False,
        resource_manager: ResourceManager | None = None,
        skip_graph_checks: set[WorkflowGraphCheck] | None = None,
        serializer: Serializer | None = None,
        num_concurrent_runs: int | None = None,
    ) -> None:
        if num_concurrent_runs is not None and (
            isinstance(num_concurrent_runs, bool) or not isinstance(num_concurrent_runs, int) or num_concurrent_runs < 1
        ):
            raise ValueError(f"num_concurrent_runs must be a positive integer or None, not {num_concurrent_runs!r}")
        self.num_concurrent_runs = num_concurrent_runs
        """How many runs of this instance go at once; more wait their turn, in order (``None``: no limit)."""
        self._runs_going = 0
        self._runs_waiting: deque[Callable[[], None]] = deque()
        self.timeout = timeout
        self.checkpointer = checkpointer
        self._disable_validation = disable_validation
        self._verbose = verbose
        self._resource_manager = resource_manager or ResourceManager()
        self._serializer = serializer if serializer is not None else JsonSerializer()
        checks = frozenset(skip_graph_checks or ())
        if unknown := checks - GRAPH_CHECKS:
            raise WorkflowValidationError(
                f"Unknown graph check names: {', '.join(sorted(unknown))}. "
                f"Valid names are: {', '.join(sorted(GRAPH_CHECKS))}"
            )
        self._skip_graph_checks = checks
        graph_of(type(self), check=False)  # no steps, or not one start and one stop event type: fail now
        if workflow_name is not None:
            if not isinstance(workflow_name, str) or not workflow_name:
                raise ValueError(f"workflow_name must be a non-empty string, not {workflow_name!r}")
            self._workflow_name = workflow_name
            self.__dict__["workflow_name"] = workflow_name  # beats a class attribute of a subclass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._step_functions = {}

    _step_functions: dict[str, Callable[..., Any]] = {}  # noqa: RUF012 - each subclass gets its own

    @classmethod
    def add_step(cls, func: Callable[..., Any]) -> None:
        """Add a free function decorated with ``@step`` as a step of this workflow class."""
        if not (hasattr(func, "_step_config") or hasattr(func, "_step_parse")):
            raise WorkflowValidationError(f"Step function {func.__name__} is missing the `@step` decorator.")
        if func.__name__ in cls._step_functions or step_config(getattr(cls, func.__name__, None)) is not None:
            raise WorkflowValidationError(
                f"A step {func.__name__} is already part of this workflow, please choose another name."
            )
        cls._step_functions[func.__name__] = func
        if "_durableflow_graph" in cls.__dict__:
            delattr(cls, "_durableflow_graph")  # built without this step: build it again

    @_class_or_instance
    def validate(
        cls: type[Workflow],
        self: Workflow | None,
        *,
        validate_resource_configs: bool = True,
        validate_resources: bool = False,
    ) -> bool:
        """Check the steps now; a ``WorkflowValidationError`` names the step and the problem.

        ``validate_resources=True`` also builds every resource (so their factories run)
        and finds cycles between resources that depend on each other. Returns whether
        the workflow asks a human for input.
        """
        graph = graph_of(cls, check=False)
        graph.check(self._skip_graph_checks if self is not None else frozenset())
        manager = (self._resource_manager if self is not None else None) or ResourceManager()
        check_resources(graph, manager, configs=validate_resource_configs, build=validate_resources)
        return any(issubclass(t, InputRequiredEvent) for s in graph.steps.values() for t in s.emits) or any(
            issubclass(t, HumanResponseEvent) for s in graph.steps.values() for t in s.accepts
        )

    @property
    def _timeout(self) -> float | None:
        return self.timeout

    def _validate(self) -> bool:
        """``validate()`` unless ``disable_validation``, over the steps ``_get_steps()`` gives."""
        if self._disable_validation:
            return False
        configs = {name: config for name, fn in self._get_steps().items() if (config := step_config(fn))}
        validate_workflow(configs, type(self).__name__, set(self._skip_graph_checks))  # type: ignore[arg-type]
        return bool(self.validate())

    def _get_start_event_instance(self, start_event: StartEvent | None, **fields: Any) -> StartEvent:
        """The start event ``run()`` would use (a given one wins over fields, which are then ignored)."""
        if start_event is not None:
            if fields:
                logging.getLogger(__name__).warning(
                    "Keyword arguments are not supported when 'run()' is invoked with the 'start_event' parameter."
                    f" These keyword arguments will be ignored: {fields}"
                )
            return start_event
        return self._start_event(self.start_event_class, fields)

    def _get_steps(self) -> dict[str, Callable[..., Any]]:
        """Every step by name: methods bound to this workflow, and free functions."""
        steps: dict[str, Callable[..., Any]] = {
            name: getattr(self, name)
            for name, spec in graph_of(type(self), check=False).steps.items()
            if not spec.config.free
        }
        steps.update(type(self)._step_functions)
        return steps

    @property
    def start_event_class(self) -> type[StartEvent]:
        """The ``StartEvent`` (sub)class the workflow's first step accepts (``run(**fields)`` builds one)."""
        override: type[StartEvent] | None = self.__dict__.get("_start_event_override")
        return override or graph_of(type(self), check=False).start_type

    @start_event_class.setter
    def start_event_class(self, cls: type[StartEvent]) -> None:
        """Code ported from llama-index-workflows may set ``wf._start_event_class``: ``run(**fields)`` then
        builds that class (a step must still accept it)."""
        if not (isinstance(cls, type) and issubclass(cls, StartEvent)):
            raise TypeError(f"the start event class must be a StartEvent subclass, not {cls!r}")
        self.__dict__["_start_event_override"] = cls

    @property
    def stop_event_class(self) -> type[StopEvent]:
        """The ``StopEvent`` (sub)class the workflow's steps return."""
        return graph_of(type(self), check=False).stop_type

    _start_event_class = start_event_class
    _stop_event_class = stop_event_class

    @property
    def events(self) -> list[type[Event]]:
        """Every event type the workflow's steps accept or return."""
        graph = graph_of(type(self), check=False)
        return list(dict.fromkeys(t for s in graph.steps.values() for t in (*s.accepts, *s.emits)))

    def run(
        self,
        ctx: Context[Any] | None = None,
        start_event: StartEvent | None = None,
        run_id: str | None = None,
        **start_fields: Any,
    ) -> WorkflowHandler:
        """Start a run on the running event loop: ``result = await wf.run(field=value)``.

        With ``ctx`` from a finished run, a new run starts with its state; with
        a context restored by ``Context.from_dict``, that run continues and
        every event it had not consumed is delivered again.
        """
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise ValueError(f"run_id must be a non-empty string, not {run_id!r}")
        if start_event is not None and not isinstance(start_event, StartEvent):
            raise ValueError(
                f"The 'start_event' argument must be an instance of 'StartEvent', not {type(start_event).__name__!r}"
            )
        graph = graph_of(type(self), check=False)
        if not self._disable_validation:
            graph.check(self._skip_graph_checks)
        _require_loop("run")
        plugin_manager.load_entry_points()
        fresh = ctx is None
        if ctx is None:
            ctx = Context(self)
        elif ctx._graph is not graph or ctx._workflow_name != self.workflow_name:
            raise WorkflowRuntimeError(
                f"this context belongs to workflow {ctx._workflow_name!r}, not {self.workflow_name!r}"
            )
        elif ctx._runner is not None:
            raise WorkflowRuntimeError(f"this context is already running run {ctx.run_id!r}; use another Context")
        start = None
        if ctx._state.status in ("new", "completed"):
            if start_event is not None and start_fields:
                raise TypeError("pass either start_event or start fields, not both")
            cls = self.__dict__.get("_start_event_override") or graph.start_type
            start = start_event if start_event is not None else self._start_event(cls, start_fields)
            run_id = _new_run_id() if run_id is None else run_id
            if fresh:  # its state is new and empty: it only needs the id
                ctx._state.run_id = run_id
            else:
                ctx._state = RunState(run_id)
        elif start_event is not None or start_fields or run_id is not None:
            raise WorkflowRuntimeError(
                f"this context continues run {ctx.run_id!r}; it takes no start event, fields or run id"
            )
        checkpointer = self.checkpointer
        if start is None and checkpointer is not None:  # a restored context: the store may hold its run
            if self.num_concurrent_runs is None:
                return _claims.continue_restored(self, checkpointer, ctx)
            turn = asyncio.get_running_loop().create_future()
            handler = _claims.continue_restored(self, checkpointer, ctx, turn=turn)
            self._in_turn(handler._future, lambda: turn.set_result(None))
            return handler
        runner = Runner(self, ctx, checkpointer, new_owner() if checkpointer else "")
        handler = WorkflowHandler(ctx.run_id, runner.future, ctx)
        handler._attach(runner)
        if self.num_concurrent_runs is None:
            runner.start(start)
        else:
            self._in_turn(runner.future, lambda: runner.start(start))
        return handler

    async def submit(
        self, start_event: StartEvent | None = None, run_id: str | None = None, **start_fields: Any
    ) -> str:
        """Store a new run for a worker to drive (``Worker``, ``durableflow worker``) and return its id, without
        driving it here: ``run_id = await wf.submit(field=value)``.

        Returns once the run is durable in the workflow's checkpointer; ``RunExistsError`` if ``run_id``
        is taken. Until a worker takes it the run is listed as ``interrupted`` (no process drives it), and
        ``show`` names its one checkpoint ``submitted``; its timeout starts when a worker starts it.
        """
        checkpointer = self.checkpointer
        if checkpointer is None:
            raise WorkflowRuntimeError(
                "submit() stores the run for a worker to drive: give the workflow a checkpointer"
            )
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise ValueError(f"run_id must be a non-empty string, not {run_id!r}")
        if start_event is not None and not isinstance(start_event, StartEvent):
            raise ValueError(
                f"The 'start_event' argument must be an instance of 'StartEvent', not {type(start_event).__name__!r}"
            )
        if start_event is not None and start_fields:
            raise TypeError("pass either start_event or start fields, not both")
        graph = graph_of(type(self), check=False)
        if not self._disable_validation:
            graph.check(self._skip_graph_checks)
        _require_loop("submit")
        cls = self.__dict__.get("_start_event_override") or graph.start_type
        start = start_event if start_event is not None else self._start_event(cls, start_fields)
        return await _claims.submit(self, checkpointer, start, _new_run_id() if run_id is None else run_id)

    def _in_turn(self, done: asyncio.Future[Any], begin: Callable[[], None]) -> None:
        """Start a run now if fewer than ``num_concurrent_runs`` are going, else when one ends."""

        def start(now: bool) -> None:
            self._runs_going += 1
            done.add_done_callback(finished)
            try:
                begin()
            except BaseException as exc:
                if not done.done():  # ends the turn; a run started later reports it through its handler
                    done.set_exception(exc)
                    if now:
                        done.exception()  # the caller of run() gets it raised instead
                if now:
                    raise

        def finished(_: asyncio.Future[Any]) -> None:
            self._runs_going -= 1
            if self._runs_waiting:
                self._runs_waiting.popleft()()

        if self._runs_going < (self.num_concurrent_runs or 1):
            start(now=True)
        else:
            self._runs_waiting.append(lambda: start(now=False))

    @staticmethod
    def _start_event(cls: type[StartEvent], fields: dict[str, Any]) -> StartEvent:
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise WorkflowRuntimeError(
                f"Failed creating a start event of type '{cls.__name__}' with the keyword arguments: {fields} ({exc})"
            ) from None

    def resume(self, run_id: str, *, wait: float = 0.0) -> WorkflowHandler:
        """Continue a stored run (interrupted, failed or cancelled); a completed one just gives its result.

        Raises ``RunNotFoundError``, ``SnapshotError`` if the stored run no
        longer fits this code, or ``RunLeaseError`` if another worker drives
        it — unless ``wait`` seconds are given, during which it waits for
        that worker's lease to end. On a store called from a thread (Redis,
        PostgreSQL) the run is claimed there, off the event loop, and those
        errors come from ``await handler.claimed()`` (or from awaiting the handler).
        """
        checkpointer = self.checkpointer
        if checkpointer is None:
            raise WorkflowRuntimeError("resume needs a checkpointer: Workflow(checkpointer=SQLiteCheckpointer(path))")
        graph = graph_of(type(self), check=False)
        if not self._disable_validation:
            graph.check(self._skip_graph_checks)
        _require_loop("resume")
        plugin_manager.load_entry_points()
        return _claims.resume(self, checkpointer, run_id, wait)
