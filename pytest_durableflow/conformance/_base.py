"""What every part of the conformance suite shares: the fixtures a store provides, records, observations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

import pytest

from durableflow import Checkpointer, Record, use_clock
from durableflow.testing import ManualClock

Reopen = Callable[[], Checkpointer]
Observed = tuple[list[tuple[int, bool, bytes]], str, "str | None", "str | None", int, "str | None"]

WORKFLOW = "conformance:Workflow"
OWNER = "worker-a"
OTHER = "worker-b"


def record(seq: int, full: bool = False) -> Record:
    return Record(seq, full, f"{'full' if full else 'delta'} record {seq}".encode())


def records(store: Checkpointer, run_id: str) -> list[tuple[int, bool, bytes]]:
    return [(r.seq, r.full, bytes(r.data)) for r in store.load(run_id)]


def observe(store: Checkpointer, run_id: str) -> Observed:
    info = store.info(run_id)
    return (records(store, run_id), info.status, info.result, info.error, info.last_seq, info.lease_owner)


class ConformanceBase:
    """The fixtures a store's test class provides, and the switches it may set."""

    survives_process: ClassVar[bool] = True
    """False for a store that lives in the test process's memory: the kill test is then skipped."""

    kill_timeout: ClassVar[float] = 30.0
    """Seconds the kill test waits for one forked child before failing it as a hang."""

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

    def _create(self, store: Checkpointer, run_id: str = "run-1", owner: str = OWNER) -> None:
        store.create(run_id, WORKFLOW, record(1, full=True), owner)
