"""What ``info`` and ``runs`` say about a run: its workflow, status, outcome, sequence and times."""

from __future__ import annotations

import pytest

from durableflow import Checkpointer, RunInfo, RunStatus
from durableflow.testing import ManualClock

from ._base import OTHER, OWNER, WORKFLOW, ConformanceBase, record


class MetadataTests(ConformanceBase):
    def test_info_describes_a_new_run(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """A new run is running, leased to its creator for lease_ttl seconds, with no result or error."""
        self._create(checkpointer)
        info = checkpointer.info("run-1")
        assert isinstance(info, RunInfo)
        assert (info.run_id, info.workflow, info.status, info.last_seq) == ("run-1", WORKFLOW, "running", 1)
        assert (info.result, info.error) == (None, None)
        assert info.created_at == pytest.approx(clock.time)
        assert info.lease_owner == OWNER
        assert info.lease_expires_at == pytest.approx(clock.time + checkpointer.lease_ttl)

    def test_info_follows_appends(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """last_seq and updated_at follow the newest appended record."""
        self._create(checkpointer)
        clock.advance(5)
        checkpointer.append("run-1", record(2), OWNER)
        checkpointer.append("run-1", record(3, full=True), OWNER)
        info = checkpointer.info("run-1")
        assert info.last_seq == 3
        assert info.updated_at == pytest.approx(clock.time)
        assert info.created_at == pytest.approx(clock.time - 5)

    def test_a_status_that_is_not_final_keeps_the_lease(self, checkpointer: Checkpointer) -> None:
        """Appending with status 'waiting' changes the status and leaves the lease with its owner."""
        self._create(checkpointer)
        checkpointer.append("run-1", record(2), OWNER, status="waiting")
        info = checkpointer.info("run-1")
        assert (info.status, info.lease_owner) == ("waiting", OWNER)
        checkpointer.append("run-1", record(3), OWNER)
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
        checkpointer.append("run-1", record(2), OWNER, status=status, result=result, error=error)
        info = checkpointer.info("run-1")
        assert (info.status, info.result, info.error) == (status, result, error)
        assert (info.lease_owner, info.lease_expires_at) == (None, None)
        checkpointer.acquire("run-1", OTHER)  # free for anyone now
        assert checkpointer.info("run-1").lease_owner == OTHER

    def test_a_new_status_replaces_the_previous_outcome(self, checkpointer: Checkpointer) -> None:
        """A failed run that is resumed and running again no longer reports its old error."""
        self._create(checkpointer)
        checkpointer.append("run-1", record(2), OWNER, status="failed", error="ValueError: boom")
        checkpointer.acquire("run-1", OTHER)
        checkpointer.append("run-1", record(3), OTHER, status="running")
        info = checkpointer.info("run-1")
        assert (info.status, info.result, info.error) == ("running", None, None)

    def test_runs_lists_the_newest_first_up_to_limit(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """runs() gives the most recently created runs first, at most `limit` of them."""
        assert checkpointer.runs() == []
        for n in range(1, 6):
            self._create(checkpointer, f"run-{n}")
            clock.advance(1)
        checkpointer.append("run-2", record(2), OWNER, status="completed", result="2")
        assert [info.run_id for info in checkpointer.runs()] == ["run-5", "run-4", "run-3", "run-2", "run-1"]
        assert [info.run_id for info in checkpointer.runs(limit=2)] == ["run-5", "run-4"]
        by_id = {info.run_id: info for info in checkpointer.runs()}
        assert (by_id["run-2"].status, by_id["run-2"].result, by_id["run-2"].last_seq) == ("completed", "2", 2)
        assert by_id["run-1"] == checkpointer.info("run-1")
