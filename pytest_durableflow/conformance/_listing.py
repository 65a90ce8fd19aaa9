"""Listing runs by status and page, the derived ``interrupted`` status, deleting and purging runs."""

from __future__ import annotations

import pytest

from durableflow import Checkpointer, RunNotFoundError, RunStatus
from durableflow._checkpointer import new_owner, retire_owner
from durableflow.testing import ManualClock

from ._base import OTHER, OWNER, ConformanceBase, record


def _ids(store: Checkpointer, **kwargs: object) -> list[str]:
    return [info.run_id for info in store.runs(**kwargs)]  # type: ignore[arg-type]


class ListingTests(ConformanceBase):
    def _end(self, store: Checkpointer, run_id: str, status: RunStatus) -> None:
        result = "1" if status == "completed" else None
        error = "ValueError: boom" if status == "failed" else None
        store.append(run_id, record(store.info(run_id).last_seq + 1), OWNER, status=status, result=result, error=error)

    def _statuses(self, store: Checkpointer, clock: ManualClock) -> dict[str, str]:
        """Eight runs, one second apart: two running, one waiting, two completed, two failed, one cancelled."""
        wanted = ["running", "completed", "failed", "waiting", "completed", "cancelled", "failed", "running"]
        for n, status in enumerate(wanted):
            self._create(store, f"run-{n}")
            if status == "waiting":
                store.append(f"run-{n}", record(2), OWNER, status="waiting")
            elif status != "running":
                self._end(store, f"run-{n}", status)  # type: ignore[arg-type]
            clock.advance(1)
        return {f"run-{n}": status for n, status in enumerate(wanted)}

    @pytest.mark.parametrize(
        "status", ["running", "waiting", "completed", "failed", "cancelled", ("failed", "cancelled")]
    )
    def test_runs_filters_by_status(self, checkpointer: Checkpointer, clock: ManualClock, status: object) -> None:
        """runs(status=...) gives exactly the runs with that status (or one of those), newest first."""
        stored = self._statuses(checkpointer, clock)
        wanted = {status} if isinstance(status, str) else set(status)  # type: ignore[call-overload]
        expected = [run_id for run_id in sorted(stored, reverse=True) if stored[run_id] in wanted]
        assert expected
        assert _ids(checkpointer, status=status) == expected
        assert all(info.status in wanted for info in checkpointer.runs(status=status))  # type: ignore[arg-type]

    def test_an_empty_status_filter_lists_nothing(self, checkpointer: Checkpointer) -> None:
        """runs(status=[]) asks for no status at all."""
        self._create(checkpointer)
        assert checkpointer.runs(status=[]) == []

    def test_an_unknown_status_or_cursor_raises_value_error(self, checkpointer: Checkpointer) -> None:
        """A status that does not exist, or a cursor that runs() did not give, raises ValueError."""
        with pytest.raises(ValueError, match="bogus"):
            checkpointer.runs(status="bogus")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="cursor"):
            checkpointer.runs(after="not a cursor")

    @pytest.mark.parametrize("status", [None, "completed", ("running", "completed")])
    def test_pages_follow_the_cursor_through_equal_creation_times(
        self, checkpointer: Checkpointer, clock: ManualClock, status: object
    ) -> None:
        """Pages of runs(limit=3, after=cursor) list every run once, newest first, also runs created
        at the same instant (ordered by run id, descending)."""
        for n in range(11):
            self._create(checkpointer, f"run-{n:02}")
            if n % 2:
                self._end(checkpointer, f"run-{n:02}", "completed")
            if n % 4 == 3:
                clock.advance(1)  # the others share their creation time with a neighbour
        everything = _ids(checkpointer, status=status, limit=100)
        assert len(everything) == (11 if status != "completed" else 5)
        paged: list[str] = []
        after = None
        while True:
            page = checkpointer.runs(status=status, limit=3, after=after)  # type: ignore[arg-type]
            paged += [info.run_id for info in page]
            if len(page) < 3:
                break
            after = page[-1].cursor
        assert paged == everything
        infos = checkpointer.runs(status=status, limit=100)  # type: ignore[arg-type]
        assert [(i.created_at, i.run_id) for i in infos] == sorted(
            ((i.created_at, i.run_id) for i in infos), reverse=True
        )

    # -- interrupted --------------------------------------------------------------------------

    def test_a_running_run_whose_lease_lapsed_is_interrupted(
        self, checkpointer: Checkpointer, clock: ManualClock
    ) -> None:
        """Past its lease, a running run is reported interrupted by info and runs, until someone leases it."""
        self._create(checkpointer, "run-1")
        self._create(checkpointer, "run-2")
        checkpointer.append("run-2", record(2), OWNER, status="waiting")
        clock.advance(checkpointer.lease_ttl)
        assert checkpointer.info("run-1").status == "interrupted"
        assert checkpointer.info("run-2").status == "waiting"  # it waits for input, not for a worker
        assert _ids(checkpointer, status="interrupted") == ["run-1"]
        assert _ids(checkpointer, status="running") == []
        assert {i.run_id: i.status for i in checkpointer.runs()} == {"run-1": "interrupted", "run-2": "waiting"}
        checkpointer.acquire("run-1", OTHER)
        assert checkpointer.info("run-1").status == "running"
        assert _ids(checkpointer, status="interrupted") == []

    def test_a_released_running_run_is_interrupted(self, checkpointer: Checkpointer) -> None:
        """A running run whose owner let its lease go is interrupted at once."""
        self._create(checkpointer)
        checkpointer.release("run-1", OWNER)
        assert checkpointer.info("run-1").status == "interrupted"

    def test_a_run_whose_owner_died_on_this_machine_is_interrupted(self, checkpointer: Checkpointer) -> None:
        """Within its lease, a running run whose owner is an engine of this host that stopped is interrupted."""
        dead, alive = new_owner(), new_owner()
        retire_owner(dead)
        try:
            self._create(checkpointer, "dead", owner=dead)
            self._create(checkpointer, "alive", owner=alive)
            assert checkpointer.info("dead").status == "interrupted"
            assert checkpointer.info("alive").status == "running"
            assert _ids(checkpointer, status="interrupted") == ["dead"]
        finally:
            retire_owner(alive)

    def test_interrupted_runs_page_past_live_ones(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """runs(status='interrupted', limit=2) finds the older interrupted runs behind many live ones."""
        for n in range(3):
            self._create(checkpointer, f"old-{n}")
            checkpointer.release(f"old-{n}", OWNER)
        clock.advance(1)
        for n in range(60):
            self._create(checkpointer, f"live-{n:02}")
        assert _ids(checkpointer, status="interrupted", limit=2) == ["old-2", "old-1"]
        assert _ids(checkpointer, status="interrupted", limit=2, after=checkpointer.info("old-1").cursor) == ["old-0"]

    # -- delete and purge ---------------------------------------------------------------------

    def test_delete_forgets_a_run_and_only_it(self, checkpointer: Checkpointer) -> None:
        """delete returns True and the run is gone from load, info and every listing; False the second time."""
        self._create(checkpointer, "run-1")
        self._create(checkpointer, "run-2")
        checkpointer.append("run-1", record(2), OWNER, status="completed", result="1")
        assert checkpointer.delete("run-1") is True
        with pytest.raises(RunNotFoundError):
            checkpointer.load("run-1")
        with pytest.raises(RunNotFoundError):
            checkpointer.info("run-1")
        assert _ids(checkpointer) == ["run-2"]
        assert _ids(checkpointer, status="completed") == []
        assert checkpointer.purge() == 0
        assert checkpointer.delete("run-1") is False
        assert [r.seq for r in checkpointer.load("run-2")] == [1]
        self._create(checkpointer, "run-1")  # its id is free again
        assert [r.seq for r in checkpointer.load("run-1")] == [1]

    def test_a_deleted_run_refuses_its_workers_next_write(self, checkpointer: Checkpointer) -> None:
        """The worker of a running run that was deleted gets RunNotFoundError at its next append."""
        self._create(checkpointer)
        assert checkpointer.delete("run-1")
        with pytest.raises(RunNotFoundError):
            checkpointer.append("run-1", record(2), OWNER)

    def test_purge_deletes_runs_that_ended_long_enough_ago(
        self, checkpointer: Checkpointer, clock: ManualClock
    ) -> None:
        """purge(older_than=s) deletes the completed, failed and cancelled runs that ended s seconds ago or
        earlier, counts them, and leaves the others (and every running or waiting run) alone."""
        stored = self._statuses(checkpointer, clock)  # ended at t+1 .. t+6; now is t+8
        assert checkpointer.purge(older_than=3.5) == 3  # run-1, run-2 and run-4 ended 7, 6 and 4 seconds ago
        assert set(_ids(checkpointer)) == set(stored) - {"run-1", "run-2", "run-4"}
        assert checkpointer.purge(status="failed") == 1
        assert set(_ids(checkpointer)) == {"run-0", "run-3", "run-5", "run-7"}
        assert checkpointer.purge() == 1
        assert _ids(checkpointer) == ["run-7", "run-3", "run-0"]

    def test_purge_reads_the_end_time_not_the_start(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """A long run that ended a moment ago is kept by purge(older_than=...), however long ago it began."""
        self._create(checkpointer)
        clock.advance(1000)
        self._end(checkpointer, "run-1", "completed")
        clock.advance(1)
        assert checkpointer.purge(older_than=10) == 0
        clock.advance(10)
        assert checkpointer.purge(older_than=10) == 1

    def test_a_failed_run_that_resumed_is_not_purged(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """A failed run that is running again has not ended: purge leaves it."""
        self._create(checkpointer)
        self._end(checkpointer, "run-1", "failed")
        checkpointer.acquire("run-1", OTHER)
        checkpointer.append("run-1", record(3), OTHER, status="running")
        clock.advance(100)
        assert checkpointer.purge() == 0
        assert _ids(checkpointer, status=("running", "interrupted")) == ["run-1"]

    @pytest.mark.parametrize("status", ["running", "waiting", "interrupted", ("completed", "running")])
    def test_purge_of_a_status_that_has_not_ended_raises(self, checkpointer: Checkpointer, status: object) -> None:
        """purge deletes ended runs only: naming another status raises ValueError and deletes nothing."""
        self._create(checkpointer)
        with pytest.raises(ValueError):
            checkpointer.purge(status=status)  # type: ignore[arg-type]
        assert _ids(checkpointer) == ["run-1"]
