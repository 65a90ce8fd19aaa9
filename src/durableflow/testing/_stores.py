"""Stores for crash exploration: an empty one per scenario, copies of what a crash leaves, and reading a run back.

Every scenario uses the same run id, each in a store of its own, so that
whatever a run stores (its id among it) compares equal across scenarios.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, final, get_args

from durableflow import (
    Checkpointer,
    MemoryCheckpointer,
    Record,
    RedisCheckpointer,
    RunNotFoundError,
    RunStatus,
    SQLiteCheckpointer,
    StoreUnavailableError,
)
from durableflow._checkpointer import without_password
from durableflow._errors import install_hint
from durableflow._framing import record_key
from durableflow._redis import client_of
from durableflow._snapshot import outcome, replay
from durableflow._sqlite import _text

from ._world import FakeWorld

StoreKind = str | Callable[[], Checkpointer]
"""``memory``, ``sqlite``, ``fakeredis``, a ``redis://`` URL, or a factory of empty checkpointers."""


@final
class Stores:
    """Makes the stores of one exploration and cleans up after them."""

    def __init__(self, kind: StoreKind | None, kill: bool) -> None:
        self.kind: StoreKind = kind or ("sqlite" if kill else "memory")
        self.kill = kill
        self._dir: Path | None = None
        self._world: FakeWorld | None = None
        self._client: Any = None
        """The one client of the ``fakeredis`` stores' server, shared by every store of the exploration."""
        self._count = 0
        self._token = uuid.uuid4().hex[:12]
        """Every Redis store of this exploration is under ``durableflow-crashtest:<token>:``."""
        self._redis_client: Any = None
        """A client of the real Redis the stores were made on, to delete what is left of them at the end."""

    def close(self) -> None:
        if self._redis_client is not None:
            with contextlib.suppress(Exception):  # a server that went away keeps nothing to clean up reachably
                delete_prefix(self._redis_client, f"durableflow-crashtest:{self._token}")
                self._redis_client.close()
                self._redis_client.connection_pool.disconnect()
            self._redis_client = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._world is not None:
            self._world.close()
            self._world = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def new(self) -> Checkpointer:
        """An empty store for one scenario."""
        store = self.kind
        self._count += 1
        if callable(store):
            return store()
        if store == "memory":
            if self.kill:
                raise ValueError(
                    "kill mode needs a store that outlives a process: 'sqlite', 'fakeredis' or a redis:// URL"
                )
            return MemoryCheckpointer()
        if store == "sqlite":
            if not self.kill:  # in-process a crash is an exception: the store's file needs no file
                return SQLiteImage(_empty_sqlite_image(), self._count)
            path = self.directory / f"scenario-{self._count}.db"
            path.write_bytes(_empty_sqlite_store())
            return SQLiteCheckpointer(path)
        if store == "fakeredis":
            if self._client is None:
                self._world = FakeWorld(shared=self.kill)
                self._client = self._world.redis_client()
            return RedisCheckpointer(self._client, prefix=self._new_prefix())
        if store.startswith(("redis://", "rediss://", "unix://")):
            if self._redis_client is None:  # one client for every store: a connection per scenario adds up
                # in kill mode a Redis that is down would only show in each child's life: say it now
                self._redis_client = _reachable(store)
            return RedisCheckpointer(self._redis_client, prefix=self._new_prefix())
        raise ValueError(f"unknown store {store!r}: use memory, sqlite, fakeredis, a redis:// URL or a factory")

    def discard(self, store: Checkpointer, run_id: str) -> None:
        """Close a store this exploration is done with, and delete what it held (its files, its keys)."""
        if isinstance(store, SQLiteCheckpointer) and self._dir is not None and store.path.parent == self._dir:
            # deleted before closing: closing the last connection to a file still there folds its write-ahead
            # log into it: work for a store nobody reads again
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{store.path}{suffix}")
        store.close()
        if isinstance(store, RedisCheckpointer) and store.prefix.startswith(f"durableflow-crashtest:{self._token}:"):
            with contextlib.suppress(Exception):  # gone with the server, or deleted at the end
                store.client.delete(*_redis_keys(store.prefix, run_id), *_index_keys(store.prefix))

    @property
    def directory(self) -> Path:
        """Where SQLite stores live.

        In memory (``/dev/shm``) where there is one: what a killed process leaves is in the kernel's page
        cache whether or not it reached the disk, so the harness's copies need no disk, and a commit of
        theirs no fsync."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="durableflow-crashtest-", dir=_scratch()))
        return self._dir

    def _new_prefix(self) -> str:
        self._count += 1
        return f"durableflow-crashtest:{self._token}:{self._count}"

    def copy(self, store: Checkpointer, run_id: str) -> Checkpointer:
        """A new store holding what ``store`` holds of the run: what a crash now would leave behind."""
        if isinstance(store, SQLiteImage):
            self._count += 1
            return SQLiteImage(store.image(), self._count, store.durability, store.lease_ttl)
        # its files are what a killed process leaves: copied. A subclass of the user's (from a factory) is
        # copied through its own kind below, so that resumed lives run its overrides too.
        if type(store) is SQLiteCheckpointer:
            self._count += 1
            path = self.directory / f"capture-{self._count}.db"  # deleted with the scenario, as its own stores
            try:
                _copy_file(str(store.path), str(path))
            except FileNotFoundError:  # no file yet (a factory's, before its first write): nor has the copy
                pass
            else:
                with contextlib.suppress(FileNotFoundError):
                    _copy_file(f"{store.path}-wal", f"{path}-wal")
            return sqlite_like(store, path)
        if type(store) is RedisCheckpointer:
            # its keys are: copied byte for byte by the server under a new prefix, on the store's own
            # client (one round trip, no new connection). A subclass goes through its factory, as SQLite's.
            copy = RedisCheckpointer(store.client, prefix=self._new_prefix(), lease_ttl=store.lease_ttl, key=store.key)
            keys = [*_redis_keys(store.prefix, run_id), *_redis_keys(copy.prefix, run_id)]
            store.client.register_script(_COPY_RUN)(keys=keys, args=[run_id, store.prefix, copy.prefix])
            return copy
        target = self.new()
        copy_run(store, target, run_id)
        return target


def sqlite_like(store: SQLiteCheckpointer, path: str | Path) -> SQLiteCheckpointer:
    """A plain SQLite store made as ``store`` was (every option of its constructor: a record key, a timeout...),
    on the file at ``path``: a life on it reads and writes the run as the user's own store would."""
    return SQLiteCheckpointer(path, store.durability, store.lease_ttl, key=store.key, timeout=store.timeout)


def _copy_file(source: str, target: str) -> None:
    """Copy a file the kernel's way where it can (a third of ``shutil.copyfile``'s cost for a store's small
    files, and an exploration copies one at every crash point), else as ``shutil`` does."""
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is None:
        shutil.copyfile(source, target)
        return
    reader = os.open(source, os.O_RDONLY)
    try:
        writer = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while copy_range(reader, writer, 1 << 30):
                pass
            # Some file systems answer 0 before the end (nothing copied, no error): the rest the long way,
            # from where the kernel stopped, else the copy would be a truncated store.
            while chunk := memoryview(os.read(reader, 1 << 20)):
                while chunk:
                    chunk = chunk[os.write(writer, chunk) :]
        except OSError:  # a file system that cannot (another device, an old kernel): the long way
            os.close(writer)
            writer = -1
            shutil.copyfile(source, target)
        finally:
            if writer >= 0:
                os.close(writer)
    finally:
        os.close(reader)


@final
class SQLiteImage(SQLiteCheckpointer):
    """A SQLite store held in memory, for in-process lives: the SQLite checkpointer's own statements on the
    image of its file (schema, indexes, fencing and all), without the file.

    In-process a crash is an exception in a process that goes on, so what a killed process would leave
    on disk is exactly what its committed transactions left in the image; copying a capture is copying
    its pages (``serialize``), not files. Kill mode keeps real files: there a real process dies.
    """

    def __init__(
        self, image: bytes, number: int, durability: Literal["normal", "fsync"] = "normal", lease_ttl: float = 30.0
    ) -> None:
        super().__init__(f"memory-{number}.db", durability, lease_ttl=lease_ttl)
        with _POOL_LOCK:
            conn = _POOL.pop() if _POOL else None
        if conn is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.text_factory = _text
        conn.deserialize(image)
        self._conn, self._pid = conn, os.getpid()

    def image(self) -> bytes:
        """The store's pages as its file would hold them."""
        with self._lock:
            return self._connection().serialize()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:  # closed: it never opens a file in its stead
            raise StoreUnavailableError(f"SQLite store {self.path} (in memory) is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        with _POOL_LOCK:
            if len(_POOL) < _POOL_SIZE:
                _POOL.append(conn)
                return
        conn.close()


_POOL: list[sqlite3.Connection] = []
"""Connections of closed images, for the next images: a connection keeps its prepared statements, and
preparing a store's dozen statements again costs more than a scenario's own writes."""
_POOL_LOCK = threading.Lock()
_POOL_SIZE = 256


_EMPTY: list[bytes] = []


def _empty_sqlite_store() -> bytes:
    """The file of an empty SQLite store, schema and all: made once per process, written for every scenario."""
    if not _EMPTY:
        scratch = Path(tempfile.mkdtemp(prefix="durableflow-crashtest-"))
        try:
            template = SQLiteCheckpointer(scratch / "empty.db")
            template.runs()  # creates the schema
            template.close()  # and folds the write-ahead log into the file
            _EMPTY.append((scratch / "empty.db").read_bytes())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _EMPTY[0]


def _empty_sqlite_image() -> bytes:
    """The empty store's file as an image in memory takes it: in rollback-journal mode (an image has no WAL)."""
    if len(_EMPTY) < 2:
        image = bytearray(_empty_sqlite_store())
        image[18:20] = b"\x01\x01"  # the file format's read and write versions: 2 is WAL, 1 the journal
        _EMPTY.append(bytes(image))
    return _EMPTY[1]


def _scratch() -> str | None:
    """A directory in memory for the stores' files, or ``None`` for the default temporary directory.

    A depth-2 exploration holds a copy of the run for every crash point of every resume until its
    scenario runs: a small ``/dev/shm`` (a container's 64 MB) is left alone.
    """
    shm = "/dev/shm"
    try:
        stats = os.statvfs(shm)
    except OSError:
        return None
    roomy = stats.f_bavail * stats.f_frsize >= _ROOM
    return shm if roomy and os.access(shm, os.W_OK | os.X_OK) else None


_ROOM = 512 * 1024 * 1024
SQLITE_INSTEAD = "explore with store='sqlite'"
"""The advice an unreachable (or unauthenticated) Redis ends with, which the CLI words as its own option."""


def _reachable(url: str) -> Any:
    """A client of the Redis at ``url`` (as ``RedisCheckpointer`` builds one: no retries), which answers."""
    try:
        import redis
    except ImportError:
        raise ImportError(f"a Redis store needs redis-py, in {install_hint('redis')}") from None
    client = client_of(url, 5.0)
    try:
        client.ping()
    except Exception as exc:  # redis-py's ConnectionError, TimeoutError, an authentication error...
        client.close()
        failed, shown = f"({type(exc).__name__}: {exc})", without_password(url)
        if isinstance(exc, redis.AuthenticationError):
            raise StoreUnavailableError(
                f"the Redis store at {shown} refused to authenticate {failed}: check the password (and user) in its "
                f"URL, or {SQLITE_INSTEAD}"
            ) from None
        raise StoreUnavailableError(
            f"the Redis store at {shown} is unreachable {failed}; start it, or {SQLITE_INSTEAD}"
        ) from None
    return client


def stored(store: Checkpointer, run_id: str) -> dict[str, Any]:
    """The run's status, result, error and state as its records hold them (plain JSON data), the caller's
    own: they become the report's reference, outcomes' results and finals' states, which a test may change."""
    try:
        records = store.load(run_id)
    except RunNotFoundError:
        records = None
    return read_records(records, run_id, record_key(store))


def read_records(records: list[Record] | None, run_id: str, sealed_with: bytes | None) -> dict[str, Any]:
    """``stored`` from the records a store held (``None``: the run was not stored)."""
    if records is None:
        return {"status": "missing", "result": None, "error": None, "state": {}}
    sealed = b"-" if sealed_with is None else b"%d " % len(sealed_with) + sealed_with
    digest = hashlib.sha256(b"%d " % len(run_id) + run_id.encode() + sealed)
    for record in records:
        digest.update(b"%d %d %d " % (record.seq, record.full, len(record.data)))
        digest.update(record.data)
    key = digest.digest()
    known = _STORED.get(key)
    if known is not None:
        copy: dict[str, Any] = marshal.loads(known)  # its own: an exploration of the same workflow reads the same
        return copy
    doc = replay(records, run_id, sealed_with)
    status, result, error = outcome(doc)
    found = {"status": status, "result": result, "error": error, "state": doc["state"], "answers": doc["effects"]}
    kept = marshal.dumps(found)  # JSON data, as json.loads made it: marshal writes and reads it back exactly
    global _STORED_BYTES
    if len(kept) <= _STORED_LIMIT // 4:
        if len(_STORED) >= _STORED_SIZE or _STORED_BYTES + len(kept) > _STORED_LIMIT:
            _STORED.clear()
            _STORED_BYTES = 0
        _STORED[key] = kept
        _STORED_BYTES += len(kept)
    return found


_STORED: dict[bytes, bytes] = {}
"""Runs read back, by a digest of their records, marshalled: most scenarios of an exploration end with the
same few, and decoding them again (framing, integrity checks, replay) costs more than a short scenario's
own writes; a hit is unmarshalled anew, so no two callers share an object."""
_STORED_SIZE = 64
_STORED_LIMIT = 16 * 1024 * 1024
"""What the runs read back may hold at most, in bytes; a larger run is decoded each time."""
_STORED_BYTES = 0


def delete_prefix(client: Any, prefix: str) -> None:
    """Delete every key under ``prefix`` (a real Redis is left as it was found)."""
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def copy_run(source: Checkpointer, target: Checkpointer, run_id: str) -> None:
    """Copy a run's records, lease holder included, into an empty store through the protocol alone."""
    try:
        records = source.load(run_id)
        info = source.info(run_id)
    except RunNotFoundError:
        return  # the crash came before its first checkpoint: nothing is stored
    holder = info.lease_owner or "nobody"
    target.create(run_id, info.workflow, records[0], holder)
    for record in records[1:]:
        target.append(run_id, record, holder)
    if info.lease_owner is None:
        target.release(run_id, holder)


def _redis_keys(prefix: str, run_id: str) -> list[str]:
    """A run's keys in a ``RedisCheckpointer`` (see ``durableflow._redis``): its metadata, its records, the index."""
    return [f"{prefix}:run:{{{run_id}}}", f"{prefix}:records:{{{run_id}}}", f"{prefix}:runs"]


_COPY_RUN = """
local run = redis.call('DUMP', KEYS[1])
if not run then return 0 end
redis.call('RESTORE', KEYS[4], 0, run)
local records = redis.call('DUMP', KEYS[2])
if records then redis.call('RESTORE', KEYS[5], 0, records) end
local created = redis.call('ZSCORE', KEYS[3], ARGV[1])
if created then redis.call('ZADD', KEYS[6], created, ARGV[1]) end
local status = redis.call('HGET', KEYS[4], 'status')
for _, index in ipairs({':status:', ':ended:'}) do
  local score = status and redis.call('ZSCORE', ARGV[2] .. index .. status, ARGV[1])
  if score then redis.call('ZADD', ARGV[3] .. index .. status, score, ARGV[1]) end
end
return 1
"""
"""Copy run ARGV[1]'s keys (KEYS 1-3) and its entries in the status indexes from prefix ARGV[2] to prefix
ARGV[3]'s (KEYS 4-6), atomically; nothing if it is not stored."""


def _index_keys(prefix: str) -> list[str]:
    """The indexes by status of a ``RedisCheckpointer`` (``p:status:S``, ``p:ended:S``): a store's whole."""
    return [f"{prefix}:{index}:{status}" for index in ("status", "ended") for status in get_args(RunStatus)]
