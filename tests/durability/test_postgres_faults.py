"""Faults of a real PostgreSQL server and the errors they raise: nobody listening, a statement held
past the timeout that lands later, a server that refuses writes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import psycopg
import pytest

from durableflow import PostgresCheckpointer, Record, RunConflictError, SnapshotError, StoreUnavailableError


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresCheckpointer]:
    checkpointer = PostgresCheckpointer(postgres_url, timeout=1.0)
    checkpointer.create("late", "tests:Late", Record(1, True, b"first"), "worker")
    checkpointer.append("late", Record(2, False, b"second"), "worker")
    yield checkpointer
    checkpointer.close()


def test_a_postgres_nobody_listens_on_raises_store_unavailable_at_once() -> None:
    """A URL whose port has no server gives StoreUnavailableError naming it, in well under the timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = PostgresCheckpointer(f"postgresql://nobody@127.0.0.1:{port}/none", timeout=5.0)
    began = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        store.info("any")
    assert time.monotonic() - began < 5


def test_a_write_held_past_the_timeout_lands_later_and_is_not_stored_twice(
    store: PostgresCheckpointer, postgres_url: str
) -> None:
    """An append the server holds (here, behind another transaction's lock on the run) fails on the
    client with StoreUnavailableError after the timeout, and the server commits it once the lock goes:
    the same sequence number sent again is refused with RunConflictError, and the run stays loadable."""
    with psycopg.connect(postgres_url) as blocker:
        blocker.execute("SELECT 1 FROM durableflow.runs WHERE run_id = 'late' FOR UPDATE")
        began = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=r"did not answer within 1\.0s"):
            store.append("late", Record(3, False, b"third, timed out"), "worker")
        assert time.monotonic() - began < 5
    # the blocker's transaction ended: the held append goes through on the server
    deadline = time.monotonic() + 10
    while store.info("late").last_seq != 3:
        assert time.monotonic() < deadline, "the timed-out append never landed"
        time.sleep(0.02)
    with pytest.raises(RunConflictError) as raised:
        store.append("late", Record(3, False, b"third, again"), "worker", status="failed", error="boom")
    assert raised.value.expected_seq == 4
    assert [(r.seq, r.data) for r in store.load("late")] == [(1, b"first"), (2, b"second"), (3, b"third, timed out")]


def test_a_read_only_postgres_refuses_writes_with_store_unavailable(
    store: PostgresCheckpointer, postgres_url: str
) -> None:
    """A server that takes no writes (a read-only database or replica) makes append raise
    StoreUnavailableError saying it refused; reads still work and nothing is stored."""
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    reader = PostgresCheckpointer(postgres_url)  # a new session gets the setting
    try:
        assert reader.info("late").last_seq == 2
        with pytest.raises(StoreUnavailableError, match=r"refused.*read-only"):
            reader.append("late", Record(3, False, b"third"), "worker")
        assert [r.seq for r in reader.load("late")] == [1, 2]
    finally:
        reader.close()


@pytest.mark.parametrize(
    ("code", "named"),
    [
        (
            "CREATE FUNCTION durableflow.keep_nothing() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';"
            "CREATE TRIGGER keep_nothing BEFORE INSERT ON durableflow.records"
            " FOR EACH ROW EXECUTE FUNCTION durableflow.keep_nothing()",
            "trigger records.keep_nothing",
        ),
        (
            "CREATE RULE write_nothing AS ON INSERT TO durableflow.records DO INSTEAD NOTHING",
            "rule records.write_nothing",
        ),
    ],
    ids=["trigger", "rule"],
)
def test_a_store_whose_tables_run_code_at_each_write_is_refused(
    store: PostgresCheckpointer, postgres_url: str, code: str, named: str
) -> None:
    """A trigger or rule on the store's tables (durableflow makes none) could make appends land nowhere while
    they report success: a worker connecting refuses the store with SnapshotError naming it, and writes nothing."""
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(code)
    other = PostgresCheckpointer(postgres_url, timeout=1.0)
    try:
        with pytest.raises(SnapshotError, match=f"did not write at its writes \\({named}\\)"):
            other.append("late", Record(3, False, b"third"), "worker")
    finally:
        other.close()
    assert [r.seq for r in store.load("late")] == [1, 2]
