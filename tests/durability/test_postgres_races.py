"""Two workers on one PostgreSQL run at the same instant: a lease taken over while an append is in flight.

Another session holds the run's row (as a second worker taking over a lapsed lease does inside its
transaction); the first worker's append must wait for it and then be judged against the committed
takeover, never against what the row said when the append began.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest

from durableflow import PostgresCheckpointer, Record, RunLeaseError


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresCheckpointer]:
    checkpointer = PostgresCheckpointer(postgres_url, timeout=30.0)
    checkpointer.create("raced", "tests:Raced", Record(1, True, b"first"), "worker-a")
    yield checkpointer
    checkpointer.close()


def _wait_until_blocked(admin: psycopg.Connection[tuple[object, ...]], done: threading.Event) -> None:
    """Returns once some other session waits on a row lock (or the append already returned)."""
    while not done.is_set():
        waiting = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()
        if waiting is not None and waiting[0] > 0:
            return
        done.wait(0.01)


def test_an_append_in_flight_when_its_lease_is_taken_over_is_refused_and_stores_nothing(
    store: PostgresCheckpointer, postgres_url: str
) -> None:
    """Worker B takes the run over (its transaction holds the row); worker A's append of record 2 starts
    meanwhile. Once B commits, A's append must fail with RunLeaseError naming B and leave no record 2:
    B drives the run from record 1, and a record 2 from A would be one B never saw."""
    outcome = _during_b_takeover(
        postgres_url, lambda: store.append("raced", Record(2, False, b"second, from A"), "worker-a")
    )
    assert isinstance(outcome, RunLeaseError), f"A's append was not refused: {outcome!r}"
    assert "worker-b" in str(outcome)
    assert [(r.seq, r.data) for r in store.load("raced")] == [(1, b"first")]
    info = store.info("raced")
    assert (info.last_seq, info.lease_owner) == (1, "worker-b")


def test_a_takeover_that_waits_for_another_one_is_judged_by_the_lease_that_one_committed(
    store: PostgresCheckpointer, postgres_url: str
) -> None:
    """The run's lease has lapsed. Worker B takes it over (its transaction holds the row) while worker C asks
    for it too. Once B commits, C must be refused (RunLeaseError naming B) and B keep the run: a takeover
    judged by the lapsed lease C first read would take the run from B, and two workers would drive it."""
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("UPDATE durableflow.runs SET lease_expires_at = 0 WHERE run_id = 'raced'")
    outcome = _during_b_takeover(postgres_url, lambda: store.acquire("raced", "worker-c"))
    assert isinstance(outcome, RunLeaseError), f"C took the run from B: {outcome!r}"
    assert outcome.holder == "worker-b"
    assert store.info("raced").lease_owner == "worker-b"


def _during_b_takeover(postgres_url: str, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` on another thread while worker B's takeover transaction holds the run's row; once it is
    blocked behind that row, B commits. What ``call`` raised, or ``None``."""
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def other_worker() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)
        done.set()

    with psycopg.connect(postgres_url) as takeover, psycopg.connect(postgres_url, autocommit=True) as admin:
        takeover.execute(
            "UPDATE durableflow.runs SET lease_owner = 'worker-b', lease_expires_at = 1e12 WHERE run_id = 'raced'"
        )
        thread = threading.Thread(target=other_worker)
        thread.start()
        _wait_until_blocked(admin, done)
        takeover.commit()
        thread.join()
    assert len(outcome) == 1
    return outcome[0]
