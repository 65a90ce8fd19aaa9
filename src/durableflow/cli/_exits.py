"""How the ``durableflow`` command ends: its exit codes, the errors that pick them, and what it tells on stderr.

``EXIT_CODES`` is the one table: ``--help`` prints it and ``main`` maps an error to its code through it.
"""

from __future__ import annotations

import shlex
import sys

from .._checkpointer import without_password
from .._errors import (
    RunLeaseError,
    RunNotFoundError,
    SerializationError,
    SnapshotError,
    StoreUnavailableError,
    WorkflowCancelledError,
    WorkflowTimeoutError,
    password_note,
)
from .._events import InputRequiredEvent
from ._output import printable, when

DEFAULT_STORE = "sqlite:///durableflow.db"


class UsageError(Exception):
    """The command line asks for something that cannot be done: exit 2."""


class RunEnded(Exception):
    """The run ended without a result (failed, cancelled, timed out): exit 1.

    ``again`` holds the options a ``durableflow resume`` of the run needs besides ``--store``
    (the workflow it runs with), so that the command suggested works as printed."""

    def __init__(self, run_id: str, store: str, cause: BaseException, again: str = "") -> None:
        super().__init__(str(cause))
        self.run_id, self.store, self.cause, self.again = run_id, store, cause, again


class Interrupted(KeyboardInterrupt):
    """Ctrl-C once the run was stored: exit 130, telling the ``durableflow resume`` line that continues it."""

    def __init__(self, run_id: str, store: str, again: str = "") -> None:
        super().__init__(run_id)
        self.run_id, self.store, self.again = run_id, store, again


class WaitsForInput(Exception):
    """The run asks for human input and no ``--respond`` answers it: exit 7. Its last checkpoint holds the request."""

    def __init__(
        self, run_id: str, store: str, request: InputRequiredEvent, again: str = "", in_step: bool = False
    ) -> None:
        super().__init__(f"run {run_id} waits for input")
        self.run_id, self.store, self.request, self.again = run_id, store, request, again
        self.in_step = in_step
        """A step waits for the answer (``ctx.wait_for_event``): the run is in flight, not parked as waiting."""


class RunIdle(Exception):
    """The run can make no progress on its own: no step is running or due, no sleep or timeout will wake one,
    and it asks nothing the command can answer; only an event sent to it continues it: exit 9. The run is
    stored as it stands."""

    def __init__(
        self, run_id: str, store: str, workflow: str, waits: list[tuple[str, str, str]], status: str, again: str = ""
    ) -> None:
        super().__init__(f"run {run_id} is idle")
        self.run_id, self.store, self.workflow, self.again = run_id, store, workflow, again
        self.waits = waits
        """``(step, event type, its requirements and timeout as text)`` for each step in ``ctx.wait_for_event``."""
        self.status = status
        """How ``durableflow runs`` lists it now: ``waiting``, or ``interrupted`` when a step waits in it."""


# The one table of exit codes: ``--help`` prints it, and an error of a listed class ends the command with its
# code (the first row whose class matches). A store error raised while a run is driven is the store's, not the run's.
EXIT_CODES: tuple[tuple[int, str, type[BaseException] | None], ...] = (
    (0, "success: the run completed (crashtest: every scenario passed)", None),
    (1, "the run failed, was cancelled or timed out (crashtest: a scenario failed)", RunEnded),
    (2, "usage error: bad arguments or JSON, module or attribute not found, not a Workflow, run id taken", UsageError),
    (3, "run not found", RunNotFoundError),
    (4, "run is leased by another worker", RunLeaseError),
    (5, "stored run cannot be loaded (corrupt, or no longer fits the code)", SnapshotError),
    (6, "store unavailable: down, frozen, refusing writes, or refusing the password", StoreUnavailableError),
    (7, "the run waits for input: `durableflow resume RUN_ID --respond JSON` answers it", WaitsForInput),
    (8, "a value cannot be stored: the start event holds data a checkpoint cannot keep as it is", SerializationError),
    (9, "the run is idle: nothing to run and nothing to ask; it waits for an event sent to it, and is kept", RunIdle),
    (
        130,
        "interrupted (Ctrl-C): the run keeps its last checkpoint (crashtest: the scenarios judged so far are reported)",
        KeyboardInterrupt,
    ),
)

EPILOG = "exit codes:\n" + "".join(f"  {code:>3}  {meaning}\n" for code, meaning, _ in EXIT_CODES)


def exit_code(exc: BaseException) -> int | None:
    """The code an error ends the command with, or ``None`` for one the table does not list (a bug: re-raised)."""
    return next((code for code, _, cls in EXIT_CODES if cls is not None and isinstance(exc, cls)), None)


def code_of(error: type[BaseException]) -> int:
    return next(code for code, _, cls in EXIT_CODES if cls is error)


def explain(exc: BaseException, crashtest: bool = False) -> list[str]:
    """What to tell on stderr when ``exc`` ends the command: what happened, then what to do about it."""
    if isinstance(exc, WaitsForInput):
        if exc.store.startswith("memory://"):
            return [
                f"run {exc.run_id} waits for input, and a memory:// store keeps it only in this process;",
                "answer in the same command with --respond JSON, like --respond " + shlex.quote('{"response": ...}'),
            ]
        in_step = [
            "until then `durableflow runs` lists it as interrupted, not waiting: its step waits in "
            "ctx.wait_for_event, so a worker may take the run over and ask again (a step that returns the "
            "InputRequiredEvent instead parks the run as waiting)"
        ]
        return [
            f"run {exc.run_id} waits for input; answer it with:",
            f"  durableflow resume {shlex.quote(exc.run_id)}{exc.again}{store_option(exc.store)} --respond "
            + shlex.quote('{"response": ...}'),
            *_note_line(exc.store),
            *(in_step if exc.in_step else []),
        ]
    if isinstance(exc, RunIdle):
        return _idle_hint(exc)
    if isinstance(exc, RunEnded):
        return [f"error: run {exc.run_id} {_ending(exc.cause)}", *_resume_hint(exc)]
    if isinstance(exc, Interrupted):
        return [
            "error: interrupted: the run keeps its last checkpoint; "
            f"`durableflow resume {shlex.quote(exc.run_id)}{exc.again}{store_option(exc.store)}` continues it"
            + store_note(exc.store)
        ]
    if isinstance(exc, KeyboardInterrupt):
        if crashtest:
            return ["error: interrupted"]
        return [
            "error: interrupted: the run keeps its last checkpoint; "
            "`durableflow resume RUN_ID --workflow MODULE:Class` continues it"
        ]
    if isinstance(exc, RunLeaseError) and exc.holder:
        return [
            f"error: run {exc.run_id} is leased by worker {exc.holder} until {when(exc.expires_at)}; "
            "try again later, or pass --wait SECONDS"
        ]
    return [f"error: {exc}"]


def _idle_hint(exc: RunIdle) -> list[str]:
    run = shlex.quote(exc.run_id)
    lines = [f"run {exc.run_id} is idle: no step is running or due, and it asks nothing to answer here"]
    lines += [f"  step {step} waits for {event}{detail}" for step, event, detail in exc.waits]
    if not exc.waits:
        lines.append(
            "  no step has an event to take, and none waits for one (a record edited by hand can leave a run so; "
            f"`durableflow show {run}{store_option(exc.store)}` lists its checkpoints{store_note(exc.store)})"
        )
    if exc.store.startswith("memory://"):
        return [*lines, "a memory:// store keeps the run only in this process: it is gone with it"]
    taken_over = " (a step waits in it: a worker may take it over and wait on)" if exc.status == "interrupted" else ""
    lines.append(
        f"it is stored as it stands: `durableflow runs` lists it as {exc.status}{taken_over}; only an event sent "
        "to it continues it"
    )
    if any(event == "HumanResponseEvent" for _, event, _ in exc.waits):
        lines += [
            "answer it with:",
            f"  durableflow resume {run}{exc.again}{store_option(exc.store)} --respond "
            + shlex.quote('{"response": ...}'),
            *_note_line(exc.store),
        ]
    others = [event for _, event, _ in exc.waits if event != "HumanResponseEvent"]
    if others or not exc.waits:
        event = others[0] if others else "AnEvent"
        lines.append(
            f"the CLI has no command that sends {'an event' if not others else event}; from Python: "
            f"`handler = {exc.workflow}(checkpointer=...).resume({exc.run_id!r})`, "
            f"then `handler.send_event({event}(...))` and `await handler`"
        )
    return lines


def _ending(cause: BaseException) -> str:
    if isinstance(cause, WorkflowTimeoutError):
        return f"timed out: {cause}"
    if isinstance(cause, WorkflowCancelledError):
        return f"was cancelled: {cause}"
    return f"failed: {type(cause).__name__}: {cause}"


def _resume_hint(exc: RunEnded) -> list[str]:
    if isinstance(exc.cause, WorkflowTimeoutError) or exc.store.startswith("memory://"):
        return []  # past its deadline a resume only times out again; a memory store died with this process
    return [
        "its last checkpoint is kept: fix the cause, then "
        f"`durableflow resume {shlex.quote(exc.run_id)}{exc.again}{store_option(exc.store)}`{store_note(exc.store)}"
    ]


def store_option(store: str) -> str:
    """The ``--store`` option that names ``store`` again in a suggested command, its password hidden as every
    printed URL's is (``store_note`` then says to put it back); none for the default."""
    return "" if store == DEFAULT_STORE else f" --store {shlex.quote(without_password(store))}"


def _note_line(store: str) -> list[str]:
    """``store_note`` as a line of its own, under a command printed on a line of its own to be copied whole."""
    note = password_note(without_password(store), alone=True)
    return [f"  {note}"] if note else []


def store_note(store: str) -> str:
    """What follows a suggested command naming ``store`` whose password is hidden: to put it back."""
    return password_note(without_password(store))


def fail(code: int, message: str, hint: str | None = None) -> int:
    """Say what went wrong (and what to do) on stderr, and give ``code`` back to return from a command."""
    print(printable(f"error: {message}", newlines=True), file=sys.stderr)
    if hint:
        print(printable(hint, newlines=True), file=sys.stderr)
    return code
