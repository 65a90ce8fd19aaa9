"""Creating, appending and loading records: order, compaction, isolation, bytes, and a reopened store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from durableflow import Checkpointer, Record, RunExistsError, RunLeaseError, RunNotFoundError
from durableflow.testing import ManualClock

from ._base import OTHER, OWNER, WORKFLOW, ConformanceBase, Reopen, observe, record, records


class RecordTests(ConformanceBase):
    def test_create_stores_the_firstrecord(self, checkpointer: Checkpointer) -> None:
        """A created run loads as exactly its first record."""
        self._create(checkpointer)
        assert records(checkpointer, "run-1") == [(1, True, b"full record 1")]

    def test_load_gives_records_in_append_order(self, checkpointer: Checkpointer) -> None:
        """Appended records load after the first one, in the order they were appended."""
        self._create(checkpointer)
        for seq in range(2, 7):
            checkpointer.append("run-1", record(seq), OWNER)
        assert [seq for seq, _, _ in records(checkpointer, "run-1")] == [1, 2, 3, 4, 5, 6]
        assert records(checkpointer, "run-1")[3] == (4, False, b"delta record 4")

    def test_load_starts_at_the_newest_fullrecord(self, checkpointer: Checkpointer) -> None:
        """Appending a full record drops every older record, so a load starts at the newest full one."""
        self._create(checkpointer)
        checkpointer.append("run-1", record(2), OWNER)
        checkpointer.append("run-1", record(3, full=True), OWNER)
        checkpointer.append("run-1", record(4), OWNER)
        checkpointer.append("run-1", record(5, full=True), OWNER)
        checkpointer.append("run-1", record(6), OWNER)
        assert records(checkpointer, "run-1") == [(5, True, b"full record 5"), (6, False, b"delta record 6")]

    def test_runs_do_not_sharerecords(self, checkpointer: Checkpointer) -> None:
        """Records appended to one run never appear in another."""
        self._create(checkpointer, "run-1")
        self._create(checkpointer, "run-2")
        checkpointer.append("run-2", record(2), OWNER)
        assert records(checkpointer, "run-1") == [(1, True, b"full record 1")]
        assert len(records(checkpointer, "run-2")) == 2

    def test_create_of_a_stored_run_raises_run_exists(self, checkpointer: Checkpointer) -> None:
        """Creating a run id that is already stored raises RunExistsError and leaves the run as it was."""
        self._create(checkpointer)
        checkpointer.append("run-1", record(2), OWNER)
        with pytest.raises(RunExistsError):
            checkpointer.create("run-1", WORKFLOW, Record(1, True, b"other"), OTHER)
        assert records(checkpointer, "run-1") == [(1, True, b"full record 1"), (2, False, b"delta record 2")]
        assert checkpointer.info("run-1").lease_owner == OWNER

    @pytest.mark.parametrize("operation", ["load", "info", "acquire", "append"])
    def test_unknown_run_raises_run_not_found(self, checkpointer: Checkpointer, operation: str) -> None:
        """load, info, acquire and append of a run id nobody created raise RunNotFoundError."""
        self._create(checkpointer, "run-1")
        calls: dict[str, Callable[[], Any]] = {
            "load": lambda: checkpointer.load("missing"),
            "info": lambda: checkpointer.info("missing"),
            "acquire": lambda: checkpointer.acquire("missing", OWNER),
            "append": lambda: checkpointer.append("missing", record(2), OWNER),
        }
        with pytest.raises(RunNotFoundError):
            calls[operation]()

    # -- bytes and reopening ------------------------------------------------------------------

    def test_records_keep_every_byte(self, checkpointer: Checkpointer) -> None:
        """Record bytes come back exactly: all 256 byte values, an empty record and a large one."""
        every_byte = bytes(range(256)) * 4 + bytes(range(255, -1, -1))
        large = bytes((n * 7919) % 256 for n in range(1 << 20))
        checkpointer.create("run-1", WORKFLOW, Record(1, True, every_byte), OWNER)
        checkpointer.append("run-1", Record(2, False, b""), OWNER)
        checkpointer.append("run-1", Record(3, False, large), OWNER)
        checkpointer.append("run-1", Record(4, False, b"\x00"), OWNER)
        assert records(checkpointer, "run-1") == [
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
        checkpointer.append("run-1", record(2), OWNER)
        checkpointer.append("run-2", record(2), OWNER, status="failed", error="boom")
        expected = {run_id: observe(checkpointer, run_id) for run_id in ("run-1", "run-2")}
        checkpointer.close()
        again = reopen()
        try:
            assert {run_id: observe(again, run_id) for run_id in ("run-1", "run-2")} == expected
            assert [info.run_id for info in again.runs()] == ["run-2", "run-1"]
            again.append("run-1", record(3), OWNER)  # the lease survives too
            with pytest.raises(RunLeaseError):
                again.acquire("run-1", OTHER)
        finally:
            again.close()
