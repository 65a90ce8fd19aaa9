"""Every error durableflow raises, one tree under ``DurableflowError``.

    DurableflowError
    ├── WorkflowValidationError     the steps do not form a runnable graph
    │   └── WorkflowConfigurationError  no steps, or no single start or stop event type
    ├── WorkflowRuntimeError        a run was asked for something it cannot do
    │   ├── WorkflowTimeoutError        the run passed its deadline
    │   ├── WorkflowCancelledError      the run was cancelled
    │   ├── StepCrashLoopError          a step's process died during every try it was allowed
    │   └── RecoveryLimitError          the run was interrupted too often in a row: a step keeps killing its process
    ├── SerializationError          a value cannot be stored as JSON
    ├── StateKeyError               ctx.store.get of a path the state does not hold (also a KeyError and a ValueError)
    ├── SnapshotError               a stored run is corrupt, truncated, tampered or no longer fits the code
    ├── RunNotFoundError            no stored run has this id
    ├── RunExistsError              a run with this id is already stored
    ├── RunLeaseError               another worker drives this run
    │   └── LeaseExpiredError           this worker could not renew its lease in time, so it stopped driving the run
    ├── RunConflictError            the stored run moved on without this worker (a sequence-fenced append)
    └── StoreUnavailableError       the checkpointer's store cannot be reached
        └── StoreAuthenticationError    it is up, but refused this client's password
"""  # fmt: skip

from __future__ import annotations

import re
import shlex


class DurableflowError(Exception):
    """Base of every error durableflow raises."""


class WorkflowValidationError(DurableflowError, ValueError):
    """The workflow's steps do not form a runnable graph; the message names the step."""


class WorkflowConfigurationError(WorkflowValidationError):
    """The workflow has no steps, or not exactly one start event type and one stop event type."""


class WorkflowRuntimeError(DurableflowError):
    """A run was asked for something it cannot do (an event nobody accepts, a finished run...)."""


class WorkflowTimeoutError(WorkflowRuntimeError, TimeoutError):
    """The run passed its deadline (``Workflow(timeout=...)``); its last checkpoint is kept."""


class WorkflowCancelledError(WorkflowRuntimeError):
    """The run was cancelled; its last checkpoint is kept and ``resume`` continues it."""


class RecoveryLimitError(WorkflowRuntimeError):
    """A run was recovered after its owner died more often in a row than allowed, without completing a step.

    Such a run is marked failed, so workers leave it alone: a step probably kills
    its process on every try. ``resume`` it by hand once the cause is fixed.
    """

    def __init__(self, run_id: str, recoveries: int, limit: int) -> None:
        super().__init__(
            f"run {run_id!r} was interrupted {recoveries} times in a row without completing a step (the limit is "
            f"{limit}): a step probably kills its process (out of memory, a native crash), so workers leave it "
            f"alone now. Fix the cause, then resume it deliberately (`durableflow resume {run_id}` or "
            f"`await wf.resume({run_id!r})`), which starts the count again"
        )
        self.run_id = run_id
        self.recoveries = recoveries
        self.limit = limit


class StepCrashLoopError(WorkflowRuntimeError):
    """A step's process died during every one of its allowed tries, so the run failed instead of trying again.

    Each try that was under way when a process died counts as an attempt, durably;
    fix the cause, then ``resume`` the run to try the step again.
    """


class SerializationError(DurableflowError, ValueError):
    """A value cannot be stored: the message names where it came from and its type."""


class StateKeyError(DurableflowError, KeyError, ValueError):
    """``ctx.store.get(path)`` without a default, for a path the state does not hold: a ``KeyError``, and the
    ``ValueError`` llama-index-workflows raises there, so an ``except`` written for either catches it."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        return f"Path {self.path!r} not found in state"


class SnapshotError(DurableflowError):
    """A stored run cannot be loaded: corrupt, truncated, tampered, foreign or incompatible."""

    def __init__(self, message: str, *, run_id: str | None = None, seq: int | None = None) -> None:
        where = []
        if run_id is not None:
            where.append(f"run {run_id!r}")
        if seq is not None:
            where.append(f"record {seq}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.run_id = run_id
        self.seq = seq


class RunNotFoundError(DurableflowError, LookupError):
    """No stored run has this id."""

    def __init__(self, run_id: str, where: str = "", detail: str = "") -> None:
        suffix = f" in {where}" if where else ""
        # the listing command names the store: without --store it would list the default one
        listing = f"durableflow runs --store {shlex.quote(where)}" if where else "durableflow runs"
        hint = "" if where.startswith("memory://") else f"; `{listing}` lists the stored runs{password_note(where)}"
        super().__init__(detail or f"no run {run_id!r}{suffix}{hint}")
        self.run_id = run_id


class RunExistsError(DurableflowError):
    """A run with this id is already stored; ``resume`` continues it."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} is already stored; call wf.resume({run_id!r}) to continue it")
        self.run_id = run_id


class RunLeaseError(DurableflowError):
    """Another worker holds the lease on this run, or this worker lost it."""

    def __init__(self, run_id: str, holder: str | None, expires_at: float | None, detail: str = "") -> None:
        message = detail or (
            f"run {run_id!r} is driven by worker {holder!r} (lease until {expires_at}); "
            "wait for it to finish or for the lease to expire, or resume with wait=SECONDS"
        )
        super().__init__(message)
        self.run_id = run_id
        self.holder = holder
        self.expires_at = expires_at

    @classmethod
    def lost(cls, run_id: str, holder: str | None, expires_at: float | None) -> RunLeaseError:
        """This worker no longer holds the run: another took it over, so this one must stop writing."""
        lost_to = f"to worker {holder!r}" if holder else "(it expired, or another worker took it)"
        return cls(
            run_id, holder, expires_at, f"this worker lost its lease on run {run_id!r} {lost_to}; it stops writing"
        )


class LeaseExpiredError(RunLeaseError):
    """This worker could not renew its lease before it would lapse (the store did not answer), so it stopped
    driving the run, as another worker may take the run over once the lease lapses.

    Nothing more was written: the run continues from its last checkpoint on the
    worker that takes it over, or with ``resume`` once the store answers again.
    """

    def __init__(self, run_id: str, expires_at: float | None, unanswered: float, cause: str = "") -> None:
        because = f": {cause}" if cause else ""
        super().__init__(
            run_id, None, expires_at,
            f"this worker could not renew its lease on run {run_id!r} for {unanswered:.1f}s (the store did not "
            f"answer{because}), so it stopped driving the run before the lease could lapse and another worker take "
            "it over; nothing more was written. A worker continues the run from its last checkpoint once the store "
            f"answers (`durableflow worker`), or resume it yourself (`durableflow resume {run_id}`)",
        )  # fmt: skip
        self.unanswered = unanswered


class RunConflictError(DurableflowError):
    """An append was refused because its record is not the next one the store holds for the run.

    ``expected_seq`` is the sequence number the store would accept next. The
    stored run moved on without this worker (or a write of its own that seemed
    to fail did land): it must not write again before it has loaded the run.
    """

    def __init__(self, run_id: str, seq: int, expected_seq: int) -> None:
        super().__init__(
            f"run {run_id!r} refused record {seq}: the store holds records up to {expected_seq - 1} and accepts "
            f"{expected_seq} next, so the stored run moved on without this worker; load the run before writing again"
        )
        self.run_id = run_id
        self.seq = seq
        self.expected_seq = expected_seq


class StoreUnavailableError(DurableflowError, ConnectionError):
    """The checkpointer's store cannot be reached.

    Writes are atomic, so every stored run is whole. A write that failed while
    the store went away may still have landed; a resume reads whichever it holds.
    """


class StoreAuthenticationError(StoreUnavailableError):
    """The store is up but refused this client's password (or had none from it): waiting will not help, so a
    worker stops instead of polling again."""


def password_note(shown: str, alone: bool = False) -> str:
    """What goes after a command suggested with the store URL ``shown``, whose password is hidden (``***``, as
    every printed URL's is): that the command needs it back; nothing if it hides none. ``alone``: as a line of
    its own, under a command printed to be copied whole."""
    hidden = ":***@" in shown.partition("://")[2].partition("/")[0] or re.search(r"[?&]password=\*\*\*", shown)
    if not hidden:
        return ""
    unsaid = ", or without it and PGPASSWORD set" if shown.startswith(("postgresql:", "postgres:")) else ""
    return f"{'' if alone else ' '}(with the store's password in place of ***{unsaid})"


def install_hint(extra: str) -> str:
    """How to install one of durableflow's extras, which come from its clone (it is on no package index)."""
    return f"the durableflow[{extra}] extra (pip install '.[{extra}]' in durableflow's clone)"
