"""The sequence fence: an append stores its record only as the run's next one, and ``append_many``."""

from __future__ import annotations

import pytest

from durableflow import Append, Checkpointer, GroupCommit, Record, RunConflictError, RunLeaseError, RunNotFoundError

from ._base import OTHER, OWNER, WORKFLOW, ConformanceBase, observe, record, records


class FencingTests(ConformanceBase):
    @pytest.mark.parametrize("kind", ["delta", "full", "final"])
    def test_a_second_record_of_one_sequence_number_is_refused(self, checkpointer: Checkpointer, kind: str) -> None:
        """An append of a sequence number already stored (a write that landed, sent again) raises
        RunConflictError naming the next number, and stores nothing."""
        self._create(checkpointer)
        checkpointer.append("run-1", record(2), OWNER)
        before = observe(checkpointer, "run-1")
        again = Record(2, kind == "full", b"the same number, other bytes")
        with pytest.raises(RunConflictError) as raised:
            if kind == "final":
                checkpointer.append("run-1", again, OWNER, status="failed", error="RuntimeError: late")
            else:
                checkpointer.append("run-1", again, OWNER)
        assert (raised.value.run_id, raised.value.seq, raised.value.expected_seq) == ("run-1", 2, 3)
        assert observe(checkpointer, "run-1") == before

    @pytest.mark.parametrize("seq", [1, 4, 100])
    def test_a_record_that_is_not_the_next_one_is_refused(self, checkpointer: Checkpointer, seq: int) -> None:
        """An append that goes back or leaves a gap raises RunConflictError and stores nothing."""
        self._create(checkpointer)
        checkpointer.append("run-1", record(2), OWNER)
        before = observe(checkpointer, "run-1")
        with pytest.raises(RunConflictError) as raised:
            checkpointer.append("run-1", record(seq, full=True), OWNER)
        assert raised.value.expected_seq == 3
        assert observe(checkpointer, "run-1") == before
        checkpointer.append("run-1", record(3), OWNER)  # the next one is still welcome
        assert [seq for seq, _, _ in records(checkpointer, "run-1")] == [1, 2, 3]

    def test_the_fence_counts_on_after_a_full_record(self, checkpointer: Checkpointer) -> None:
        """A full record that dropped the older ones still leaves the run's numbering where it was."""
        self._create(checkpointer)
        checkpointer.append("run-1", record(2), OWNER)
        checkpointer.append("run-1", record(3, full=True), OWNER)
        with pytest.raises(RunConflictError) as raised:
            checkpointer.append("run-1", record(3), OWNER)
        assert raised.value.expected_seq == 4
        checkpointer.append("run-1", record(4), OWNER)
        assert [seq for seq, _, _ in records(checkpointer, "run-1")] == [3, 4]

    def test_create_starts_the_numbering_at_its_record(self, checkpointer: Checkpointer) -> None:
        """A run created from a copied record numbered 7 reports last_seq 7 and takes 8 next."""
        checkpointer.create("run-1", WORKFLOW, record(7, full=True), OWNER)
        assert checkpointer.info("run-1").last_seq == 7
        with pytest.raises(RunConflictError):
            checkpointer.append("run-1", record(7), OWNER)
        checkpointer.append("run-1", record(8), OWNER)
        assert checkpointer.info("run-1").last_seq == 8

    def test_the_lease_is_checked_before_the_sequence(self, checkpointer: Checkpointer) -> None:
        """A worker that neither holds the lease nor sends the next record gets RunLeaseError."""
        self._create(checkpointer)
        with pytest.raises(RunLeaseError):
            checkpointer.append("run-1", record(5), OTHER)

    def test_interrupted_is_never_stored(self, checkpointer: Checkpointer) -> None:
        """'interrupted' is only reported: appending it raises ValueError and stores nothing."""
        self._create(checkpointer)
        before = observe(checkpointer, "run-1")
        with pytest.raises(ValueError, match="interrupted"):
            checkpointer.append("run-1", record(2), OWNER, status="interrupted")
        assert observe(checkpointer, "run-1") == before

    # -- append_many ------------------------------------------------------------------------

    def _many(self, checkpointer: Checkpointer) -> GroupCommit:
        if not isinstance(checkpointer, GroupCommit):
            pytest.skip(f"{type(checkpointer).__name__} has no append_many (it is optional)")
        return checkpointer

    def test_append_many_fences_each_append_on_its_own(self, checkpointer: Checkpointer) -> None:
        """append_many stores the appends that fit and returns, in order, None or the refusal of each."""
        many = self._many(checkpointer)
        for run_id in ("a", "b", "c", "d"):
            self._create(checkpointer, run_id)
        results = many.append_many(
            [
                Append("a", record(2), OWNER),
                Append("b", record(3), OWNER),  # a gap
                Append("c", record(2), OTHER),  # not the holder
                Append("missing", record(2), OWNER),
                Append("d", record(2, full=True), OWNER, status="completed", result="4"),
                Append("a", record(3), OWNER),  # after the first append to "a" in this same batch
            ]
        )
        kinds = [None if r is None else type(r) for r in results]
        assert kinds == [None, RunConflictError, RunLeaseError, RunNotFoundError, None, None]
        assert [seq for seq, _, _ in records(checkpointer, "a")] == [1, 2, 3]
        assert [seq for seq, _, _ in records(checkpointer, "b")] == [1]
        assert [seq for seq, _, _ in records(checkpointer, "c")] == [1]
        info = checkpointer.info("d")
        assert (info.status, info.result, info.lease_owner, info.last_seq) == ("completed", "4", None, 2)
        assert records(checkpointer, "d") == [(2, True, b"full record 2")]

    def test_append_many_of_nothing_does_nothing(self, checkpointer: Checkpointer) -> None:
        """An empty batch returns an empty list."""
        assert self._many(checkpointer).append_many([]) == []

    def test_append_many_refuses_a_repeated_sequence_number_within_one_batch(self, checkpointer: Checkpointer) -> None:
        """Two appends of one number to one run in a batch: the first is stored, the second refused."""
        many = self._many(checkpointer)
        self._create(checkpointer)
        first, second = Record(2, False, b"first"), Record(2, False, b"second")
        results = many.append_many([Append("run-1", first, OWNER), Append("run-1", second, OWNER)])
        assert results[0] is None and isinstance(results[1], RunConflictError)
        assert records(checkpointer, "run-1")[-1] == (2, False, b"first")
