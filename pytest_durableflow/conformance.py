"""The checkpointer conformance suite: the tests every ``durableflow.Checkpointer`` must pass.

Subclass :class:`CheckpointerConformance` under a name starting with ``Test``
and give it a ``checkpointer`` fixture: a new, empty store for each test. A
store that outlives its Python object also gives ``reopen``: a function that
opens a *new* checkpointer object over the same store. With it the suite
checks that runs outlive the object and the process, and that ``append`` is
atomic when the process is SIGKILLed at any line of the store's own module::

    import pytest
    from pytest_durableflow.conformance import CheckpointerConformance
    from mystore import PostgresCheckpointer

    class TestPostgresCheckpointer(CheckpointerConformance):
        @pytest.fixture
        def checkpointer(self, empty_database):  # a fresh, empty store per test
            return PostgresCheckpointer(empty_database.dsn)

        @pytest.fixture
        def reopen(self, empty_database):  # new objects over that same store
            return lambda: PostgresCheckpointer(empty_database.dsn)

A store kept in the test process's memory sets ``survives_process = False``,
and the kill test is reported as skipped with that reason. Every test runs on
a manual clock installed with ``durableflow.use_clock`` (the ``clock``
fixture), so a store must read the time from ``durableflow.get_clock()``, as
leases are checked against it. The kill test needs ``os.fork`` (POSIX).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, ClassVar, Literal

import pytest

from durableflow import (
    Checkpointer,
    Record,
    RunExistsError,
    RunInfo,
    RunLeaseError,
    RunNotFoundError,
    RunStatus,
    use_clock,
)
from durableflow.testing import ManualClock

__all__ = ["CheckpointerConformance"]

Reopen = Callable[[], Checkpointer]
Observed = tuple[list[tuple[int, bool, bytes]], str, "str | None", "str | None", int, "str | None"]

_WORKFLOW = "conformance:Workflow"
_OWNER = "worker-a"
_OTHER = "worker-b"


def _record(seq: int, full: bool = False) -> Record:
    return Record(seq, full, f"{'full' if full else 'delta'} record {seq}".encode())


def _records(store: Checkpointer, run_id: str) -> list[tuple[int, bool, bytes]]:
    return [(r.seq, r.full, bytes(r.data)) for r in store.load(run_id)]


def _observe(store: Checkpointer, run_id: str) -> Observed:
    info = store.info(run_id)
    return (_records(store, run_id), info.status, info.result, info.error, info.last_seq, info.lease_owner)


class CheckpointerConformance:
    """Tests of the ``Checkpointer`` protocol; subclass it and provide the ``checkpointer`` fixture."""

    survives_process: ClassVar[bool] = True
    """False for a store that lives in the test process's memory: the kill test is then skipped."""

    kill_timeout: ClassVar[float] = 30.0
    """Seconds the kill test waits for one forked child before failing it as a hang."""

    # -- fixtures a subclass provides ---------------------------------------------------------

    @pytest.fixture
    def checkpointer(self) -> Checkpointer:
        """A new, empty store; every subclass must override this fixture."""
        raise NotImplementedError(f"{type(self).__name__} must define a `checkpointer` fixture")

    @pytest.fixture
    def reopen(self) -> Reopen | None:
        """A function opening a new checkpointer object over the same store, or None when there is none."""
        return None

    @pytest.fixture(autouse=True)
    def clock(self) -> Iterator[ManualClock]:
        """Every test runs on a clock that moves only when the test says so."""
        manual = ManualClock()
        with use_clock(manual):
            yield manual

    # -- creating and loading -----------------------------------------------------------------

    def _create(self, store: Checkpointer, run_id: str = "run-1", owner: str = _OWNER) -> None:
        store.create(run_id, _WORKFLOW, _record(1, full=True), owner)

    def test_create_stores_the_first_record(self, checkpointer: Checkpointer) -> None:
        """A created run loads as exactly its first record."""
        self._create(checkpointer)
        assert _records(checkpointer, "run-1") == [(1, True, b"full record 1")]

    def test_load_gives_records_in_append_order(self, checkpointer: Checkpointer) -> None:
        """Appended records load after the first one, in the order they were appended."""
        self._create(checkpointer)
        for seq in range(2, 7):
            checkpointer.append("run-1", _record(seq), _OWNER)
        assert [seq for seq, _, _ in _records(checkpointer, "run-1")] == [1, 2, 3, 4, 5, 6]
        assert _records(checkpointer, "run-1")[3] == (4, False, b"delta record 4")

    def test_load_starts_at_the_newest_full_record(self, checkpointer: Checkpointer) -> None:
        """Appending a full record drops every older record, so a load starts at the newest full one."""
        self._create(checkpointer)
        checkpointer.append("run-1", _record(2), _OWNER)
        checkpointer.append("run-1", _record(3, full=True), _OWNER)
        checkpointer.append("run-1", _record(4), _OWNER)
        checkpointer.append("run-1", _record(5, full=True), _OWNER)
        checkpointer.append("run-1", _record(6), _OWNER)
        assert _records(checkpointer, "run-1") == [(5, True, b"full record 5"), (6, False, b"delta record 6")]

    def test_runs_do_not_share_records(self, checkpointer: Checkpointer) -> None:
        """Records appended to one run never appear in another."""
        self._create(checkpointer, "run-1")
        self._create(checkpointer, "run-2")
        checkpointer.append("run-2", _record(2), _OWNER)
        assert _records(checkpointer, "run-1") == [(1, True, b"full record 1")]
        assert len(_records(checkpointer, "run-2")) == 2

    def test_create_of_a_stored_run_raises_run_exists(self, checkpointer: Checkpointer) -> None:
        """Creating a run id that is already stored raises RunExistsError and leaves the run as it was."""
        self._create(checkpointer)
        checkpointer.append("run-1", _record(2), _OWNER)
        with pytest.raises(RunExistsError):
            checkpointer.create("run-1", _WORKFLOW, Record(1, True, b"other"), _OTHER)
        assert _records(checkpointer, "run-1") == [(1, True, b"full record 1"), (2, False, b"delta record 2")]
        assert checkpointer.info("run-1").lease_owner == _OWNER

    @pytest.mark.parametrize("operation", ["load", "info", "acquire", "append"])
    def test_unknown_run_raises_run_not_found(self, checkpointer: Checkpointer, operation: str) -> None:
        """load, info, acquire and append of a run id nobody created raise RunNotFoundError."""
        self._create(checkpointer, "run-1")
        calls: dict[str, Callable[[], Any]] = {
            "load": lambda: checkpointer.load("missing"),
            "info": lambda: checkpointer.info("missing"),
            "acquire": lambda: checkpointer.acquire("missing", _OWNER),
            "append": lambda: checkpointer.append("missing", _record(2), _OWNER),
        }
        with pytest.raises(RunNotFoundError):
            calls[operation]()

    # -- metadata -----------------------------------------------------------------------------

    def test_info_describes_a_new_run(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """A new run is running, leased to its creator for lease_ttl seconds, with no result or error."""
        self._create(checkpointer)
        info = checkpointer.info("run-1")
        assert isinstance(info, RunInfo)
        assert (info.run_id, info.workflow, info.status, info.last_seq) == ("run-1", _WORKFLOW, "running", 1)
        assert (info.result, info.error) == (None, None)
        assert info.created_at == pytest.approx(clock.time)
        assert info.lease_owner == _OWNER
        assert info.lease_expires_at == pytest.approx(clock.time + checkpointer.lease_ttl)

    def test_info_follows_appends(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """last_seq and updated_at follow the newest appended record."""
        self._create(checkpointer)
        clock.advance(5)
        checkpointer.append("run-1", _record(2), _OWNER)
        checkpointer.append("run-1", _record(3, full=True), _OWNER)
        info = checkpointer.info("run-1")
        assert info.last_seq == 3
        assert info.updated_at == pytest.approx(clock.time)
        assert info.created_at == pytest.approx(clock.time - 5)

    def test_a_status_that_is_not_final_keeps_the_lease(self, checkpointer: Checkpointer) -> None:
        """Appending with status 'waiting' changes the status and leaves the lease with its owner."""
        self._create(checkpointer)
        checkpointer.append("run-1", _record(2), _OWNER, status="waiting")
        info = checkpointer.info("run-1")
        assert (info.status, info.lease_owner) == ("waiting", _OWNER)
        checkpointer.append("run-1", _record(3), _OWNER)
        assert checkpointer.info("run-1").status == "waiting"

    @pytest.mark.parametrize(
        ("status", "result", "error"),
        [("completed", '{"total": 3}', None), ("failed", None, "ValueError: boom"), ("cancelled", None, None)],
    )
    def test_a_final_status_stores_the_outcome_and_releases_the_lease(
        self, checkpointer: Checkpointer, status: RunStatus, result: str | None, error: str | None
    ) -> None:
        """A completed, failed or cancelled status is stored with its result or error and frees the lease."""
        self._create(checkpointer)
        checkpointer.append("run-1", _record(2), _OWNER, status=status, result=result, error=error)
        info = checkpointer.info("run-1")
        assert (info.status, info.result, info.error) == (status, result, error)
        assert (info.lease_owner, info.lease_expires_at) == (None, None)
        checkpointer.acquire("run-1", _OTHER)  # free for anyone now
        assert checkpointer.info("run-1").lease_owner == _OTHER

    def test_a_new_status_replaces_the_previous_outcome(self, checkpointer: Checkpointer) -> None:
        """A failed run that is resumed and running again no longer reports its old error."""
        self._create(checkpointer)
        checkpointer.append("run-1", _record(2), _OWNER, status="failed", error="ValueError: boom")
        checkpointer.acquire("run-1", _OTHER)
        checkpointer.append("run-1", _record(3), _OTHER, status="running")
        info = checkpointer.info("run-1")
        assert (info.status, info.result, info.error) == ("running", None, None)

    def test_runs_lists_the_newest_first_up_to_limit(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """runs() gives the most recently created runs first, at most `limit` of them."""
        assert checkpointer.runs() == []
        for n in range(1, 6):
            self._create(checkpointer, f"run-{n}")
            clock.advance(1)
        checkpointer.append("run-2", _record(2), _OWNER, status="completed", result="2")
        assert [info.run_id for info in checkpointer.runs()] == ["run-5", "run-4", "run-3", "run-2", "run-1"]
        assert [info.run_id for info in checkpointer.runs(limit=2)] == ["run-5", "run-4"]
        by_id = {info.run_id: info for info in checkpointer.runs()}
        assert (by_id["run-2"].status, by_id["run-2"].result, by_id["run-2"].last_seq) == ("completed", "2", 2)
        assert by_id["run-1"] == checkpointer.info("run-1")

    # -- leases -------------------------------------------------------------------------------

    def test_acquire_of_a_held_lease_raises_run_lease_error(
        self, checkpointer: Checkpointer, clock: ManualClock
    ) -> None:
        """Acquiring a run whose lease another owner holds, unexpired, raises RunLeaseError naming the holder."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl / 2)
        with pytest.raises(RunLeaseError) as raised:
            checkpointer.acquire("run-1", _OTHER)
        assert raised.value.holder == _OWNER
        assert raised.value.expires_at == pytest.approx(clock.time + checkpointer.lease_ttl / 2)
        assert checkpointer.info("run-1").lease_owner == _OWNER

    def test_acquire_of_a_released_run(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """A run whose owner released it can be acquired at once, for lease_ttl seconds."""
        self._create(checkpointer)
        checkpointer.release("run-1", _OWNER)
        assert checkpointer.info("run-1").lease_owner is None
        checkpointer.acquire("run-1", _OTHER)
        info = checkpointer.info("run-1")
        assert info.lease_owner == _OTHER
        assert info.lease_expires_at == pytest.approx(clock.time + checkpointer.lease_ttl)

    def test_acquire_of_an_expired_lease(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """Once the holder's lease has expired, another owner acquires the run."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl + 1)
        checkpointer.acquire("run-1", _OTHER)
        assert checkpointer.info("run-1").lease_owner == _OTHER

    def test_acquire_of_an_own_lease_extends_it(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """The holder may acquire its run again, which restarts its lease from now."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl / 2)
        checkpointer.acquire("run-1", _OWNER)
        assert checkpointer.info("run-1").lease_expires_at == pytest.approx(clock.time + checkpointer.lease_ttl)

    def test_acquire_with_steal_from_the_holder(self, checkpointer: Checkpointer) -> None:
        """steal_from naming the current holder takes its unexpired lease."""
        self._create(checkpointer)
        checkpointer.acquire("run-1", _OTHER, steal_from=_OWNER)
        assert checkpointer.info("run-1").lease_owner == _OTHER

    def test_steal_from_someone_else_takes_nothing(self, checkpointer: Checkpointer) -> None:
        """steal_from naming an owner who does not hold the lease still raises RunLeaseError."""
        self._create(checkpointer)
        with pytest.raises(RunLeaseError):
            checkpointer.acquire("run-1", _OTHER, steal_from="worker-c")
        assert checkpointer.info("run-1").lease_owner == _OWNER

    def test_renew_extends_the_owners_lease(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """renew by the holder returns True and keeps the run from others until now + lease_ttl."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl * 0.75)
        assert checkpointer.renew("run-1", _OWNER) is True
        assert checkpointer.info("run-1").lease_expires_at == pytest.approx(clock.time + checkpointer.lease_ttl)
        clock.advance(checkpointer.lease_ttl * 0.75)  # past the first lease, within the renewed one
        with pytest.raises(RunLeaseError):
            checkpointer.acquire("run-1", _OTHER)

    def test_renew_by_a_non_owner_returns_false(self, checkpointer: Checkpointer) -> None:
        """renew by an owner who does not hold the lease returns False and changes nothing."""
        self._create(checkpointer)
        before = checkpointer.info("run-1")
        assert checkpointer.renew("run-1", _OTHER) is False
        after = checkpointer.info("run-1")
        assert (after.lease_owner, after.lease_expires_at) == (before.lease_owner, before.lease_expires_at)

    def test_renew_after_the_lease_was_taken_returns_false(
        self, checkpointer: Checkpointer, clock: ManualClock
    ) -> None:
        """An owner whose expired lease another owner took gets False from renew."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl + 1)
        checkpointer.acquire("run-1", _OTHER)
        assert checkpointer.renew("run-1", _OWNER) is False
        assert checkpointer.info("run-1").lease_owner == _OTHER

    def test_release_by_a_non_owner_changes_nothing(self, checkpointer: Checkpointer) -> None:
        """release by an owner who does not hold the lease leaves the holder's lease in place."""
        self._create(checkpointer)
        before = checkpointer.info("run-1")
        checkpointer.release("run-1", _OTHER)
        after = checkpointer.info("run-1")
        assert (after.lease_owner, after.lease_expires_at) == (before.lease_owner, before.lease_expires_at)
        with pytest.raises(RunLeaseError):
            checkpointer.acquire("run-1", _OTHER)

    @pytest.mark.parametrize("kind", ["delta", "full", "final"])
    def test_append_by_a_non_owner_raises_and_writes_nothing(self, checkpointer: Checkpointer, kind: str) -> None:
        """An append by an owner who does not hold the lease raises RunLeaseError and stores nothing."""
        self._create(checkpointer)
        checkpointer.append("run-1", _record(2), _OWNER)
        before = _observe(checkpointer, "run-1")
        with pytest.raises(RunLeaseError):
            if kind == "final":
                checkpointer.append("run-1", _record(3), _OTHER, status="completed", result="1")
            else:
                checkpointer.append("run-1", _record(3, full=kind == "full"), _OTHER)
        assert _observe(checkpointer, "run-1") == before

    def test_append_after_losing_the_lease_raises(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """A worker whose expired lease was taken over can no longer append to the run."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl + 1)
        checkpointer.acquire("run-1", _OTHER)
        with pytest.raises(RunLeaseError):
            checkpointer.append("run-1", _record(2), _OWNER)
        checkpointer.append("run-1", _record(2), _OTHER)
        assert [seq for seq, _, _ in _records(checkpointer, "run-1")] == [1, 2]

    def test_append_after_a_final_status_raises(self, checkpointer: Checkpointer) -> None:
        """The owner of a run that ended holds no lease, so it cannot append to it any more."""
        self._create(checkpointer)
        checkpointer.append("run-1", _record(2), _OWNER, status="completed", result="null")
        with pytest.raises(RunLeaseError):
            checkpointer.append("run-1", _record(3), _OWNER)
        assert len(_records(checkpointer, "run-1")) == 2

    # -- bytes and reopening ------------------------------------------------------------------

    def test_records_keep_every_byte(self, checkpointer: Checkpointer) -> None:
        """Record bytes come back exactly: all 256 byte values, an empty record and a large one."""
        every_byte = bytes(range(256)) * 4 + bytes(range(255, -1, -1))
        large = bytes((n * 7919) % 256 for n in range(1 << 20))
        checkpointer.create("run-1", _WORKFLOW, Record(1, True, every_byte), _OWNER)
        checkpointer.append("run-1", Record(2, False, b""), _OWNER)
        checkpointer.append("run-1", Record(3, False, large), _OWNER)
        checkpointer.append("run-1", Record(4, False, b"\x00"), _OWNER)
        assert _records(checkpointer, "run-1") == [
            (1, True, every_byte),
            (2, False, b""),
            (3, False, large),
            (4, False, b"\x00"),
        ]
        assert all(isinstance(record.data, bytes) for record in checkpointer.load("run-1"))

    def test_a_reopened_store_holds_the_same_runs(
        self, checkpointer: Checkpointer, reopen: Reopen | None, clock: ManualClock
    ) -> None:
        """A new checkpointer object over the same store sees every run, record and lease, even after close()."""
        if reopen is None:
            pytest.skip("no `reopen` fixture: this store cannot be opened again")
        self._create(checkpointer, "run-1")
        clock.advance(1)
        self._create(checkpointer, "run-2")
        checkpointer.append("run-1", _record(2), _OWNER)
        checkpointer.append("run-2", _record(2), _OWNER, status="failed", error="boom")
        expected = {run_id: _observe(checkpointer, run_id) for run_id in ("run-1", "run-2")}
        checkpointer.close()
        again = reopen()
        try:
            assert {run_id: _observe(again, run_id) for run_id in ("run-1", "run-2")} == expected
            assert [info.run_id for info in again.runs()] == ["run-2", "run-1"]
            again.append("run-1", _record(3), _OWNER)  # the lease survives too
            with pytest.raises(RunLeaseError):
                again.acquire("run-1", _OTHER)
        finally:
            again.close()

    # -- atomicity under a kill ---------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["delta", "full", "final"])
    def test_append_is_atomic_under_a_kill(
        self, checkpointer: Checkpointer, reopen: Reopen | None, kind: Literal["delta", "full", "final"]
    ) -> None:
        """A process SIGKILLed at any line of append leaves the run exactly as before or after it, never between."""
        if not self.survives_process:
            pytest.skip(f"{type(self).__name__}.survives_process is False: its runs die with the process")
        if reopen is None:
            pytest.skip("no `reopen` fixture: a store that cannot be opened again cannot be checked after a kill")
        if not hasattr(os, "fork"):
            pytest.skip("needs os.fork")

        def prepare(run_id: str) -> None:
            self._create(checkpointer, run_id)
            checkpointer.append(run_id, _record(2), _OWNER)

        def append(store: Checkpointer, *, run_id: str) -> None:
            if kind == "final":
                store.append(run_id, _record(3), _OWNER, status="completed", result='"done"')
            else:
                store.append(run_id, _record(3, full=kind == "full"), _OWNER)

        prepare("control")
        before = _observe(checkpointer, "control")
        append(checkpointer, run_id="control")
        after = _observe(checkpointer, "control")
        assert before != after
        module_file = sys.modules[type(checkpointer).__module__].__file__ or ""
        line = 0
        while True:
            line += 1
            assert line < 5000, "append ran for 5000 lines of the store's code without finishing"
            run_id = f"kill-{line}"
            prepare(run_id)
            killed = _kill_during(
                reopen, functools.partial(append, run_id=run_id), module_file, line, self.kill_timeout
            )
            store = reopen()
            try:
                seen = _observe(store, run_id)
            finally:
                store.close()
            assert seen in (before, after), f"a kill at line event {line} of append left a partial write: {seen!r}"
            if not killed:
                assert seen == after, "append returned in the child, yet its record is not stored"
                break


def _kill_during(
    open_store: Reopen, action: Callable[[Checkpointer], None], module_file: str, line: int, timeout: float
) -> bool:
    """Run ``action`` on a store opened in a forked child that SIGKILLs itself at its ``line``-th line event
    in ``module_file``. True when the child died there; False when ``action`` returned first.
    """
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 3
        try:
            count = 0

            def local(frame: FrameType, event: str, arg: Any) -> Any:
                nonlocal count
                if event == "line":
                    count += 1
                    if count >= line:
                        os.kill(os.getpid(), signal.SIGKILL)
                return local

            def tracer(frame: FrameType, event: str, arg: Any) -> Any:
                return local if frame.f_code.co_filename == module_file else None

            store = open_store()  # a connection of its own, as a new process would have
            sys.settrace(tracer)
            try:
                action(store)
            finally:
                sys.settrace(None)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    give_up = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > give_up:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"append in a forked child did not finish within {timeout}s (line {line})")
        time.sleep(0.001)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return True
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return False
    raise AssertionError(f"the forked child running append failed (wait status {status}); its traceback is above")
