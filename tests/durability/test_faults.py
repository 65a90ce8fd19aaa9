"""Faults and the errors they raise: damaged records, unknown runs, and a Redis that is down or goes away."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from durableflow import (
    RedisCheckpointer,
    RunNotFoundError,
    SnapshotError,
    SQLiteCheckpointer,
    StoreUnavailableError,
)

from .conftest import Store
from .crashing import Crash, crash_at, settle
from .workflows import Gated, Pipeline

RUN_ID = "damaged"
IDS = [3, 1, 2]


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def _truncate(data: bytes) -> bytes:
    return data[: len(data) - 7]


def _tamper(data: bytes) -> bytes:
    """Edit the JSON (the last digit it holds) and keep the length, as a careful forger would."""
    at = max(data.rfind(bytes([digit])) for digit in b"0123456789")
    digit = data[at : at + 1]
    return data[:at] + (b"7" if digit != b"7" else b"8") + data[at + 1 :]


def _foreign(data: bytes) -> bytes:
    return b"PK\x03\x04" + data[4:]


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "flipped byte": _flip,
    "truncated": _truncate,
    "edited JSON of the same length": _tamper,
    "foreign bytes": _foreign,
    "emptied": lambda data: b"",
}


async def _interrupted(store: Store) -> None:
    """A Pipeline run that crashed before its last step, leaving records 1 (full) to 6 (deltas)."""
    with crash_at("step.publish.start#1"), pytest.raises(Crash):
        await Pipeline(checkpointer=store.open()).run(run_id=RUN_ID, ids=IDS)
    assert [record.seq for record in store.open().load(RUN_ID)] == [1, 2, 3, 4, 5, 6]


def _damage(store: Store, seq: int, damage: Callable[[bytes], bytes] | None) -> None:
    """Change (or, with None, delete) record ``seq`` where it is stored, behind the checkpointer's back."""
    checkpointer = store.open()
    if isinstance(checkpointer, SQLiteCheckpointer):
        with sqlite3.connect(checkpointer.path) as db:
            # a record's key is its run's key << 32 | its sequence number
            where = " WHERE key = (SELECT (run_key << 32) + ? FROM durableflow_runs WHERE run_id = ?)"
            if damage is None:
                db.execute("DELETE FROM durableflow_records" + where, (seq, RUN_ID))
            else:
                (data,) = db.execute("SELECT data FROM durableflow_records" + where, (seq, RUN_ID)).fetchone()
                db.execute("UPDATE durableflow_records SET data = ?" + where, (damage(data), seq, RUN_ID))
        return
    assert isinstance(checkpointer, RedisCheckpointer)
    key = f"{checkpointer.prefix}:records:{{{RUN_ID}}}"
    index = [record.seq for record in checkpointer.load(RUN_ID)].index(seq)
    item = checkpointer.client.lindex(key, index)
    head = len(item) - len(checkpointer.load(RUN_ID)[index].data)
    if damage is None:
        checkpointer.client.lset(key, index, b"gone")
        checkpointer.client.lrem(key, 1, b"gone")
    else:
        checkpointer.client.lset(key, index, item[:head] + damage(item[head:]))


@pytest.fixture(params=["sqlite", "fakeredis"])
def damageable(request: pytest.FixtureRequest, make_store: Callable[[str], Store]) -> Store:
    """A store whose records a test can reach behind the checkpointer's back."""
    return make_store(request.param)


@pytest.mark.parametrize("seq", [1, 3, 6])
@pytest.mark.parametrize("damage", DAMAGE)
async def test_a_damaged_record_raises_snapshot_error_naming_the_run_and_record(
    damageable: Store, damage: str, seq: int
) -> None:
    """A record that is corrupt, truncated, edited, foreign or empty makes resume raise SnapshotError naming both
    the run id and the record's sequence number."""
    await _interrupted(damageable)
    _damage(damageable, seq, DAMAGE[damage])
    with pytest.raises(SnapshotError) as raised:
        await Pipeline(checkpointer=damageable.open()).resume(RUN_ID)
    assert (raised.value.run_id, raised.value.seq) == (RUN_ID, seq)
    assert f"run {RUN_ID!r}" in str(raised.value) and f"record {seq}" in str(raised.value)


async def test_a_missing_record_raises_snapshot_error_naming_it(damageable: Store) -> None:
    """A run whose delta record 3 vanished from the store raises SnapshotError naming record 3."""
    await _interrupted(damageable)
    _damage(damageable, 3, None)
    with pytest.raises(SnapshotError, match="record 3 is missing") as raised:
        await Pipeline(checkpointer=damageable.open()).resume(RUN_ID)
    assert (raised.value.run_id, raised.value.seq) == (RUN_ID, 3)


async def test_a_redis_record_cut_inside_its_header_raises_snapshot_error(make_store: Callable[[str], Store]) -> None:
    """A Redis list item too short to hold a record's header makes resume raise SnapshotError naming the run."""
    store = make_store("fakeredis")
    await _interrupted(store)
    checkpointer = store.open()
    assert isinstance(checkpointer, RedisCheckpointer)
    checkpointer.client.lset(f"{checkpointer.prefix}:records:{{{RUN_ID}}}", 2, b"\x00\x00")
    with pytest.raises(SnapshotError, match="truncated") as raised:
        await Pipeline(checkpointer=store.open()).resume(RUN_ID)
    assert raised.value.run_id == RUN_ID


async def test_a_damaged_run_leaves_the_store_as_it_was(damageable: Store) -> None:
    """A resume that fails on a damaged record writes nothing and leaves the run's lease free for a later try."""
    await _interrupted(damageable)
    _damage(damageable, 6, _flip)
    checkpointer = damageable.open()
    before = checkpointer.load(RUN_ID)
    with pytest.raises(SnapshotError):
        await Pipeline(checkpointer=checkpointer).resume(RUN_ID)
    assert checkpointer.load(RUN_ID) == before
    assert checkpointer.info(RUN_ID).lease_owner is None


@pytest.mark.parametrize("kind", ["memory", "sqlite", "fakeredis", "redis"])
async def test_resuming_an_unknown_run_raises_run_not_found(make_store: Callable[[str], Store], kind: str) -> None:
    """resume() of a run id the store never held raises RunNotFoundError naming it."""
    store = make_store(kind)
    await Pipeline(checkpointer=store.open()).run(run_id="known", ids=[1])
    with pytest.raises(RunNotFoundError, match="'unknown'"):
        await Pipeline(checkpointer=store.open()).resume("unknown")


# -- Redis down -------------------------------------------------------------------------------


def _bounded(action: Callable[[], Any], seconds: float = 10.0) -> tuple[BaseException | None, float]:
    """Run ``action`` in a thread with its own loop; the error it raised and how long it took. Never hangs the test."""
    with ThreadPoolExecutor(1) as pool:
        began = time.monotonic()

        def attempt() -> BaseException | None:
            try:
                asyncio.run(action())
            except BaseException as exc:
                return exc
            return None

        future = pool.submit(attempt)
        error = future.result(timeout=seconds)
        return error, time.monotonic() - began


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("operation", ["run", "resume"])
def test_redis_at_a_closed_port_raises_store_unavailable_at_once(closed_port: int, operation: str) -> None:
    """run() and resume() against a Redis URL nobody listens on raise StoreUnavailableError in well under 10 s."""

    async def attempt() -> None:
        workflow = Pipeline(checkpointer=RedisCheckpointer(f"redis://127.0.0.1:{closed_port}/0"))
        await (workflow.run(ids=[1]) if operation == "run" else workflow.resume("some-run"))

    error, took = _bounded(attempt)
    assert isinstance(error, StoreUnavailableError), error
    assert took < 10
    assert f"127.0.0.1:{closed_port}" in str(error)


def test_redis_that_never_answers_raises_store_unavailable_after_the_socket_timeout(silent_port: int) -> None:
    """A Redis that accepts the connection and never answers gives StoreUnavailableError after socket_timeout."""

    async def attempt() -> None:
        await Pipeline(checkpointer=RedisCheckpointer(f"redis://127.0.0.1:{silent_port}/0", socket_timeout=1.0)).run(
            ids=[1]
        )

    error, took = _bounded(attempt)
    assert isinstance(error, StoreUnavailableError), error
    assert 0.9 <= took < 10


async def test_redis_going_away_mid_run_fails_the_run_and_a_resume_finishes_it(redis_restartable_proc: Any) -> None:
    """A run whose Redis stops between checkpoints fails with StoreUnavailableError within seconds; once Redis is
    back, resume finishes it with the result an uninterrupted run gives."""
    server = redis_restartable_proc
    url = f"redis://{server.host}:{server.port}/0"
    prefix = f"away-{uuid.uuid4().hex[:8]}"
    gate = asyncio.Event()
    workflow = Gated(gate=gate, checkpointer=RedisCheckpointer(url, prefix=prefix))
    handler = workflow.run(run_id="away", value=5)
    await settle(lambda: workflow.at_gate == 1)  # step first is checkpointed; second waits at the gate
    server.stop()
    try:
        gate.set()
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(handler, 10)
        assert loop.time() - began < 10
    finally:
        server.start()
    client = redis.Redis.from_url(url)
    try:
        assert client.exists(f"{prefix}:run:{{away}}"), "the restarted Redis lost its data; the test cannot go on"
    finally:
        client.close()
    again = Gated(checkpointer=RedisCheckpointer(url, prefix=prefix))
    assert await asyncio.wait_for(again.resume("away"), 10) == 11
    assert again.at_gate == 1  # the step the outage interrupted ran again


def test_closing_a_redis_checkpointer_leaves_the_callers_client_open() -> None:
    """A client passed in belongs to the caller: closing the checkpointer does not close it."""
    import fakeredis

    client = fakeredis.FakeRedis()
    RedisCheckpointer(client).close()
    assert client.ping()


def test_an_asyncio_redis_client_is_refused_when_the_checkpointer_is_built() -> None:
    """An asyncio client would only fail at the first checkpoint, with a bare TypeError: it is refused up front."""
    import redis.asyncio

    client = redis.asyncio.Redis()
    with pytest.raises(TypeError, match=r"synchronous client \(redis\.Redis\), not redis\.asyncio\.client\.Redis"):
        RedisCheckpointer(client)
