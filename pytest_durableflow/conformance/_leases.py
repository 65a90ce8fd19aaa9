"""Leases: one owner at a time, taken over only when free, expired or stolen from a dead engine."""

from __future__ import annotations

import pytest

from durableflow import Checkpointer, RunLeaseError
from durableflow.testing import ManualClock

from ._base import OTHER, OWNER, ConformanceBase, observe, record, records


class LeaseTests(ConformanceBase):
    def test_acquire_of_a_held_lease_raises_run_lease_error(
        self, checkpointer: Checkpointer, clock: ManualClock
    ) -> None:
        """Acquiring a run whose lease another owner holds, unexpired, raises RunLeaseError naming the holder."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl / 2)
        with pytest.raises(RunLeaseError) as raised:
            checkpointer.acquire("run-1", OTHER)
        assert raised.value.holder == OWNER
        assert raised.value.expires_at == pytest.approx(clock.time + checkpointer.lease_ttl / 2)
        assert checkpointer.info("run-1").lease_owner == OWNER

    def test_acquire_of_a_released_run(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """A run whose owner released it can be acquired at once, for lease_ttl seconds."""
        self._create(checkpointer)
        checkpointer.release("run-1", OWNER)
        assert checkpointer.info("run-1").lease_owner is None
        checkpointer.acquire("run-1", OTHER)
        info = checkpointer.info("run-1")
        assert info.lease_owner == OTHER
        assert info.lease_expires_at == pytest.approx(clock.time + checkpointer.lease_ttl)

    def test_acquire_of_an_expired_lease(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """Once the holder's lease has expired, another owner acquires the run."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl + 1)
        checkpointer.acquire("run-1", OTHER)
        assert checkpointer.info("run-1").lease_owner == OTHER

    def test_acquire_of_an_own_lease_extends_it(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """The holder may acquire its run again, which restarts its lease from now."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl / 2)
        checkpointer.acquire("run-1", OWNER)
        assert checkpointer.info("run-1").lease_expires_at == pytest.approx(clock.time + checkpointer.lease_ttl)

    def test_acquire_with_steal_from_the_holder(self, checkpointer: Checkpointer) -> None:
        """steal_from naming the current holder takes its unexpired lease."""
        self._create(checkpointer)
        checkpointer.acquire("run-1", OTHER, steal_from=OWNER)
        assert checkpointer.info("run-1").lease_owner == OTHER

    def test_steal_from_someone_else_takes_nothing(self, checkpointer: Checkpointer) -> None:
        """steal_from naming an owner who does not hold the lease still raises RunLeaseError."""
        self._create(checkpointer)
        with pytest.raises(RunLeaseError):
            checkpointer.acquire("run-1", OTHER, steal_from="worker-c")
        assert checkpointer.info("run-1").lease_owner == OWNER

    def test_renew_extends_the_owners_lease(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """renew by the holder returns True and keeps the run from others until now + lease_ttl."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl * 0.75)
        assert checkpointer.renew("run-1", OWNER) is True
        assert checkpointer.info("run-1").lease_expires_at == pytest.approx(clock.time + checkpointer.lease_ttl)
        clock.advance(checkpointer.lease_ttl * 0.75)  # past the first lease, within the renewed one
        with pytest.raises(RunLeaseError):
            checkpointer.acquire("run-1", OTHER)

    def test_renew_by_a_non_owner_returns_false(self, checkpointer: Checkpointer) -> None:
        """renew by an owner who does not hold the lease returns False and changes nothing."""
        self._create(checkpointer)
        before = checkpointer.info("run-1")
        assert checkpointer.renew("run-1", OTHER) is False
        after = checkpointer.info("run-1")
        assert (after.lease_owner, after.lease_expires_at) == (before.lease_owner, before.lease_expires_at)

    def test_renew_after_the_lease_was_taken_returns_false(
        self, checkpointer: Checkpointer, clock: ManualClock
    ) -> None:
        """An owner whose expired lease another owner took gets False from renew."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl + 1)
        checkpointer.acquire("run-1", OTHER)
        assert checkpointer.renew("run-1", OWNER) is False
        assert checkpointer.info("run-1").lease_owner == OTHER

    def test_release_by_a_non_owner_changes_nothing(self, checkpointer: Checkpointer) -> None:
        """release by an owner who does not hold the lease leaves the holder's lease in place."""
        self._create(checkpointer)
        before = checkpointer.info("run-1")
        checkpointer.release("run-1", OTHER)
        after = checkpointer.info("run-1")
        assert (after.lease_owner, after.lease_expires_at) == (before.lease_owner, before.lease_expires_at)
        with pytest.raises(RunLeaseError):
            checkpointer.acquire("run-1", OTHER)

    @pytest.mark.parametrize("kind", ["delta", "full", "final"])
    def test_append_by_a_non_owner_raises_and_writes_nothing(self, checkpointer: Checkpointer, kind: str) -> None:
        """An append by an owner who does not hold the lease raises RunLeaseError and stores nothing."""
        self._create(checkpointer)
        checkpointer.append("run-1", record(2), OWNER)
        before = observe(checkpointer, "run-1")
        with pytest.raises(RunLeaseError):
            if kind == "final":
                checkpointer.append("run-1", record(3), OTHER, status="completed", result="1")
            else:
                checkpointer.append("run-1", record(3, full=kind == "full"), OTHER)
        assert observe(checkpointer, "run-1") == before

    def test_append_after_losing_the_lease_raises(self, checkpointer: Checkpointer, clock: ManualClock) -> None:
        """A worker whose expired lease was taken over can no longer append to the run."""
        self._create(checkpointer)
        clock.advance(checkpointer.lease_ttl + 1)
        checkpointer.acquire("run-1", OTHER)
        with pytest.raises(RunLeaseError):
            checkpointer.append("run-1", record(2), OWNER)
        checkpointer.append("run-1", record(2), OTHER)
        assert [seq for seq, _, _ in records(checkpointer, "run-1")] == [1, 2]

    def test_append_after_a_final_status_raises(self, checkpointer: Checkpointer) -> None:
        """The owner of a run that ended holds no lease, so it cannot append to it any more."""
        self._create(checkpointer)
        checkpointer.append("run-1", record(2), OWNER, status="completed", result="null")
        with pytest.raises(RunLeaseError):
            checkpointer.append("run-1", record(3), OWNER)
        assert len(records(checkpointer, "run-1")) == 2
