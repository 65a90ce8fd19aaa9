"""Tamper evidence: a plain checksum catches accidents; with a key, records are sealed with a MAC that whoever
can write the store cannot forge, and a store cannot be downgraded to plain checksums."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from durableflow import (
    Context,
    MemoryCheckpointer,
    Record,
    RedisCheckpointer,
    SnapshotError,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from durableflow._framing import HEADER_SIZE, KEY_ENV, MAGIC, MAGIC_KEYED, seal

from .crashing import Crash, crash_at

KEY = "k" * 32
OTHER_KEY = "o" * 32


class Payout(Workflow):
    """Records an amount to pay, checkpoints, then pays what the store says."""

    @step
    async def record(self, ev: StartEvent, ctx: Context) -> StopEvent:
        if await ctx.store.get("amount", default=None) is None:
            await ctx.store.set("amount", ev.amount)
            await ctx.checkpoint()
        return StopEvent(result=await ctx.store.get("amount"))


async def interrupted_run(checkpointer: SQLiteCheckpointer | MemoryCheckpointer | RedisCheckpointer) -> None:
    """A run of Payout that died after its amount was checkpointed."""
    with crash_at("checkpoint.write.after#2"), contextlib.suppress(Crash):
        await Payout(checkpointer=checkpointer).run(run_id="payout", amount=10)


def forge(record: Record, key: str | None, amount: int) -> Record:
    """The record with its amount changed and sealed again: with ``key=None`` as anyone can, else with ``key``."""
    body = json.loads(record.data[HEADER_SIZE:])
    body["state"]["amount"] = amount
    return Record(record.seq, record.full, seal(json.dumps(body), "payout", record.seq, key.encode() if key else None))


def rewrite_last(path: Path, forged: Callable[[Record], Record]) -> None:
    """Replace the run's newest record in the SQLite file, as someone who can write it would."""
    import sqlite3

    records = SQLiteCheckpointer(path).load("payout")
    new = forged(records[-1])
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE durableflow_records SET data = ? WHERE key = (SELECT MAX(key) FROM durableflow_records)",
            (new.data,),
        )


async def test_without_a_key_a_recomputed_checksum_is_accepted(tmp_path: Path) -> None:
    """What the plain checksum cannot do, stated as a test: a forger who recomputes it is believed."""
    await interrupted_run(SQLiteCheckpointer(tmp_path / "runs.db"))
    rewrite_last(tmp_path / "runs.db", lambda record: forge(record, None, 1_000_000))
    assert await Payout(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).resume("payout") == 1_000_000


@pytest.mark.parametrize("forger_key", [None, OTHER_KEY], ids=["plain checksum", "another key"])
async def test_with_a_key_a_forged_record_is_refused(tmp_path: Path, forger_key: str | None) -> None:
    """With key=, records carry a MAC: one forged with a recomputed checksum or under another key is refused
    with SnapshotError naming the run and record, and the run pays nothing."""
    await interrupted_run(SQLiteCheckpointer(tmp_path / "runs.db", key=KEY))
    stored = SQLiteCheckpointer(tmp_path / "runs.db", key=KEY).load("payout")
    assert all(record.data.startswith(MAGIC_KEYED) for record in stored)
    rewrite_last(tmp_path / "runs.db", lambda record: forge(record, forger_key, 1_000_000))
    with pytest.raises(
        SnapshotError, match=r"run 'payout', record \d+: (MAC mismatch|the record has a plain checksum)"
    ):
        await Payout(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db", key=KEY)).resume("payout")


async def test_the_key_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DURABLEFLOW_KEY seals records as key= does, and a store written with it cannot be read without it."""
    monkeypatch.setenv(KEY_ENV, KEY)
    await interrupted_run(SQLiteCheckpointer(tmp_path / "runs.db"))
    assert SQLiteCheckpointer(tmp_path / "runs.db").load("payout")[0].data.startswith(MAGIC_KEYED)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(SnapshotError, match="sealed with a key, and none is set"):
        await Payout(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).resume("payout")
    monkeypatch.setenv(KEY_ENV, KEY)
    assert await Payout(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db")).resume("payout") == 10


async def test_a_plain_store_is_refused_once_a_key_is_set(tmp_path: Path) -> None:
    """Records written without a key are refused under a key: a forger cannot downgrade a keyed store."""
    await interrupted_run(SQLiteCheckpointer(tmp_path / "runs.db"))
    assert SQLiteCheckpointer(tmp_path / "runs.db").load("payout")[0].data.startswith(MAGIC)
    with pytest.raises(SnapshotError, match="plain checksum, but a key is set"):
        await Payout(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db", key=KEY)).resume("payout")


async def test_keyed_runs_resume_on_every_store(tmp_path: Path, redis_url: str) -> None:
    """Memory, SQLite and Redis checkpointers take key= and resume their sealed runs."""
    memory = MemoryCheckpointer(key=KEY)
    for checkpointer, reopen in (
        (memory, lambda: memory),
        (SQLiteCheckpointer(tmp_path / "runs.db", key=KEY), lambda: SQLiteCheckpointer(tmp_path / "runs.db", key=KEY)),
        (RedisCheckpointer(redis_url, key=KEY), lambda: RedisCheckpointer(redis_url, key=KEY)),
    ):
        await interrupted_run(checkpointer)
        assert checkpointer.load("payout")[-1].data.startswith(MAGIC_KEYED)
        assert await Payout(checkpointer=reopen()).resume("payout") == 10


@pytest.mark.parametrize("key", ["short", b"", "x" * 15])
def test_a_key_too_short_to_be_secret_is_refused(tmp_path: Path, key: str | bytes) -> None:
    """A key of fewer than 16 bytes raises ValueError when the checkpointer is made, saying how to make one."""
    with pytest.raises(ValueError, match=r"at least 16 bytes.*secrets\.token_hex"):
        SQLiteCheckpointer(tmp_path / "runs.db", key=key)


async def test_a_long_key_works(tmp_path: Path) -> None:
    """A key longer than blake2b takes (64 bytes) is hashed down, not refused."""
    await interrupted_run(SQLiteCheckpointer(tmp_path / "runs.db", key="x" * 200))
    assert await Payout(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db", key="x" * 200)).resume("payout") == 10
    assert seal("{}", "r", 1, b"x" * 200).startswith(MAGIC_KEYED)


async def test_the_database_its_wal_and_shm_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    """A new SQLite store and the WAL and shared-memory files SQLite makes beside it are mode 0600, whatever the
    umask; an existing file keeps the permissions its owner gave it."""
    previous = os.umask(0o022)
    try:
        checkpointer = SQLiteCheckpointer(tmp_path / "runs.db")
        await interrupted_run(checkpointer)
        files = [tmp_path / name for name in ("runs.db", "runs.db-wal", "runs.db-shm")]
        assert all(path.exists() for path in files)
        assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in files} == dict.fromkeys(
            (path.name for path in files), 0o600
        )
        checkpointer.close()
        shared = tmp_path / "shared.db"
        shared.touch(mode=0o640)
        shared.chmod(0o640)
        with contextlib.suppress(Exception):
            SQLiteCheckpointer(shared).info("missing")
        assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    finally:
        os.umask(previous)


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["checksum", "mac"])
async def test_the_seal_a_run_writes_is_the_documented_digest(tmp_path: Path, key: bytes | None) -> None:
    """Each record a run writes carries, after its magic, the blake2b-128 of its run id, number, length and
    CRC-32 (without a key) or the blake2b-128 MAC of its run id, number and body (with one): a record written
    by an earlier version verifies, and one written now verifies there."""
    store = SQLiteCheckpointer(tmp_path / "runs.db", key=key)
    assert await Payout(checkpointer=store).run(run_id="r", amount=5) == 5
    records = store.load("r")
    assert len(records) >= 2
    for record in records:
        data = record.data[HEADER_SIZE:]
        if key is None:
            position = f"r\0{record.seq}\0{len(data)}\0{zlib.crc32(data)}".encode()
            expected = MAGIC + hashlib.blake2b(position, digest_size=16).digest()
        else:
            mac = hashlib.blake2b(f"r\0{record.seq}\0".encode() + data, digest_size=16, key=key)
            expected = MAGIC_KEYED + mac.digest()
        assert record.data[:HEADER_SIZE] == expected
        assert seal(data.decode(), "r", record.seq, key) == record.data


async def test_a_store_read_with_another_key_says_to_check_the_key(tmp_path: Path) -> None:
    """The commonest cause of a MAC mismatch is a reader with the wrong key: the error names it first."""
    await interrupted_run(SQLiteCheckpointer(tmp_path / "runs.db", key=KEY))
    with pytest.raises(SnapshotError, match=r"MAC mismatch: the record was written under another key .*check the key"):
        await Payout(checkpointer=SQLiteCheckpointer(tmp_path / "runs.db", key=OTHER_KEY)).resume("payout")
