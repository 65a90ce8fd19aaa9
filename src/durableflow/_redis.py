"""``RedisCheckpointer``: runs in Redis, so workers on many machines share them.

Each write is one Lua script, so it is atomic and fenced by the lease and the
sequence number. Keys, for a prefix ``p`` and run ``r``: ``p:run:{r}`` (hash of
metadata and lease), ``p:records:{r}`` (list of records from the newest full
one), and the indexes the scripts keep: ``p:runs`` (every run id by creation
time), ``p:status:S`` (the ids of the runs stored with status S, by creation
time) and ``p:ended:S`` (those of the runs that ended with S, by end time).
Purging names run keys inside its script, so the store is one Redis, not a cluster.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._checkpointer import (
    TERMINAL,
    Append,
    Record,
    RunInfo,
    RunStatus,
    check_status,
    list_runs,
    reported,
    terminal_statuses,
    without_password,
)
from ._clock import get_clock
from ._errors import (
    RunConflictError,
    RunExistsError,
    RunLeaseError,
    RunNotFoundError,
    SnapshotError,
    StoreAuthenticationError,
    StoreUnavailableError,
    install_hint,
)
from ._framing import checked_key

if TYPE_CHECKING:
    import redis

T = TypeVar("T")

_HEAD = struct.Struct(">Q?")  # seq, full: stored before each record's bytes
_PURGE_BATCH = 500  # runs per purge script, so other clients wait for one batch at most

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'workflow', ARGV[2], 'status', 'running', 'created_at', ARGV[3],
           'updated_at', ARGV[3], 'last_seq', ARGV[4], 'lease_owner', ARGV[6], 'lease_expires_at', ARGV[7])
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"""

# append(run key, records key, prefix, run id, 8 arguments): {1} stored, {-1} unknown run,
# {0, holder, expires} not the lease holder, {2, last seq} not the next record. Nothing is written unless 1.
_APPEND_FUNCTION = """
local function append(run, records, prefix, run_id, owner, now, seq, packed, full, status, result, err)
  if redis.call('EXISTS', run) == 0 then return {-1} end
  local holder = redis.call('HGET', run, 'lease_owner')
  if holder ~= owner then
    return {0, holder or '', redis.call('HGET', run, 'lease_expires_at') or ''}
  end
  local last = redis.call('HGET', run, 'last_seq')
  if tonumber(seq) ~= tonumber(last) + 1 then return {2, last} end
  if full == '1' then redis.call('DEL', records) end
  redis.call('RPUSH', records, packed)
  redis.call('HSET', run, 'updated_at', now, 'last_seq', seq)
  if status ~= '' then
    local old = redis.call('HGET', run, 'status')
    local created = redis.call('HGET', run, 'created_at')
    redis.call('ZREM', prefix .. ':status:' .. old, run_id)
    redis.call('ZREM', prefix .. ':ended:' .. old, run_id)
    redis.call('ZADD', prefix .. ':status:' .. status, created, run_id)
    redis.call('HSET', run, 'status', status)
    redis.call('HDEL', run, 'result', 'error')
    if result ~= '' then redis.call('HSET', run, 'result', string.sub(result, 2)) end
    if err ~= '' then redis.call('HSET', run, 'error', string.sub(err, 2)) end
    if status == 'completed' or status == 'failed' or status == 'cancelled' then
      redis.call('HDEL', run, 'lease_owner', 'lease_expires_at')
      redis.call('ZADD', prefix .. ':ended:' .. status, now, run_id)
    end
  end
  return {1}
end
"""
_APPEND = _APPEND_FUNCTION + "return append(KEYS[1], KEYS[2], unpack(ARGV))"
# Many appends in one script call (one round trip); each is fenced on its own.
_APPEND_MANY = (
    _APPEND_FUNCTION
    + """
local replies = {}
for i = 1, #KEYS / 2 do
  local a = (i - 1) * 10
  replies[i] = append(KEYS[2 * i - 1], KEYS[2 * i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
                      ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10])
end
return replies
"""
)

_FORGET_FUNCTION = """
local function forget(prefix, run_id)
  local run = prefix .. ':run:{' .. run_id .. '}'
  local status = redis.call('HGET', run, 'status')
  if not status then return 0 end
  redis.call('DEL', run, prefix .. ':records:{' .. run_id .. '}')
  redis.call('ZREM', prefix .. ':runs', run_id)
  redis.call('ZREM', prefix .. ':status:' .. status, run_id)
  redis.call('ZREM', prefix .. ':ended:' .. status, run_id)
  return 1
end
"""
_DELETE = _FORGET_FUNCTION + "return forget(ARGV[1], ARGV[2])"
# Up to ARGV[3] runs that ended with status ARGV[2] at or before ARGV[4]; how many it deleted.
_PURGE = (
    _FORGET_FUNCTION
    + """
local ids = redis.call('ZRANGEBYSCORE', ARGV[1] .. ':ended:' .. ARGV[2], '-inf', ARGV[4], 'LIMIT', 0, ARGV[3])
for _, run_id in ipairs(ids) do forget(ARGV[1], run_id) end
return #ids
"""
)

# Up to ARGV[2] runs of the index sets KEYS, newest first, strictly after (ARGV[3], ARGV[4]) if ARGV[3] is
# not empty: {run id, fields of its hash, run id, fields...}. Equal creation times order by run id, descending,
# compared byte by byte as Redis orders members (Lua's own "<" follows the server's locale).
_PAGE = """
local function before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local limit = tonumber(ARGV[2])
local found = {}
for _, index in ipairs(KEYS) do
  if ARGV[3] == '' then
    local ids = redis.call('ZREVRANGEBYSCORE', index, '+inf', '-inf', 'WITHSCORES', 'LIMIT', 0, limit)
    for i = 1, #ids, 2 do found[#found + 1] = {ids[i], tonumber(ids[i + 1])} end
  else
    local ties = redis.call('ZREVRANGEBYSCORE', index, ARGV[3], ARGV[3], 'WITHSCORES')
    for i = 1, #ties, 2 do
      if before(ties[i], ARGV[4]) then found[#found + 1] = {ties[i], tonumber(ties[i + 1])} end
    end
    local ids = redis.call('ZREVRANGEBYSCORE', index, '(' .. ARGV[3], '-inf', 'WITHSCORES', 'LIMIT', 0, limit)
    for i = 1, #ids, 2 do found[#found + 1] = {ids[i], tonumber(ids[i + 1])} end
  end
end
table.sort(found, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return before(b[1], a[1]) end)
local rows = {}
for i = 1, math.min(limit, #found) do
  rows[#rows + 1] = found[i][1]
  -- a key edited to hold another type must not fail the whole page: it is listed as unreadable
  local fields = redis.pcall('HGETALL', ARGV[1] .. ':run:{' .. found[i][1] .. '}')
  if fields.err then fields = {'__unreadable__', fields.err} end
  rows[#rows + 1] = fields
end
return rows
"""

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local holder = redis.call('HGET', KEYS[1], 'lease_owner')
local expires = tonumber(redis.call('HGET', KEYS[1], 'lease_expires_at') or '0')
if holder and holder ~= ARGV[1] and holder ~= ARGV[4] and expires > tonumber(ARGV[2]) then
  return {0, holder, tostring(expires)}
end
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[1], 'lease_expires_at', ARGV[3])
return {1}
"""

_RENEW = """
if redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_expires_at', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'lease_owner') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_expires_at')
end
return 1
"""


class RedisCheckpointer:
    """Runs in Redis (redis-py): pass a URL or a ``redis.Redis`` client.

    A URL gets short socket timeouts, so a Redis that is down or goes away
    raises ``StoreUnavailableError`` within seconds instead of hanging. A
    client you pass keeps its own settings (``decode_responses`` is ignored:
    records are bytes).
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        prefix: str = "durableflow",
        lease_ttl: float = 30.0,
        socket_timeout: float = 5.0,
        key: str | bytes | None = None,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ImportError(f"RedisCheckpointer needs redis-py, in {install_hint('redis')}") from None
        self._owns_client = True  # closed with the checkpointer; a client the caller passed is theirs to close
        if isinstance(url_or_client, str):
            self.client = client_of(url_or_client, socket_timeout)
            self.url = without_password(url_or_client)  # shown in errors
        else:
            if inspect.iscoroutinefunction(getattr(url_or_client, "execute_command", None)):
                raise TypeError(
                    f"RedisCheckpointer needs a URL or a synchronous client (redis.Redis), not "
                    f"{type(url_or_client).__module__}.{type(url_or_client).__qualname__}: checkpoints are written "
                    "synchronously, between steps"
                )
            kwargs = url_or_client.connection_pool.connection_kwargs
            if kwargs.get("decode_responses"):  # records are bytes: use a sibling client that keeps them so
                pool = url_or_client.connection_pool
                url_or_client = redis.Redis(
                    connection_pool=type(pool)(
                        connection_class=pool.connection_class, **{**kwargs, "decode_responses": False}
                    )
                )
            else:
                self._owns_client = False
            self.client = url_or_client
            host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
            self.url = f"redis://{host}:{port}/{db}"
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.key = checked_key(key)  # records are sealed with a MAC under it (default: $DURABLEFLOW_KEY, if set)
        self._unreachable: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
        self._unauthenticated: type[Exception] = redis.AuthenticationError  # (a ConnectionError: told first)
        self._refused: type[Exception] = redis.RedisError
        self._create = self.client.register_script(_CREATE)
        self._append = self.client.register_script(_APPEND)
        self._append_many = self.client.register_script(_APPEND_MANY)
        self._delete = self.client.register_script(_DELETE)
        self._purge = self.client.register_script(_PURGE)
        self._page_script = self.client.register_script(_PAGE)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)

    # -- the protocol ----------------------------------------------------------------

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        now = get_clock().now()
        created = self._call(
            self._create,
            [self._run(run_id), self._records(run_id), f"{self.prefix}:runs", f"{self.prefix}:status:running"],
            [run_id, workflow, repr(now), record.seq, self._pack(record), owner, repr(now + self.lease_ttl)],
        )
        if not created:
            raise RunExistsError(run_id)

    def append(
        self,
        run_id: str,
        record: Record,
        owner: str,
        status: RunStatus | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        check_status(status)
        a = Append(run_id, record, owner, status, result, error)
        refused = self._refusal(a, self._call(self._append, self._append_keys(a), self._append_args(a)))
        if refused is not None:
            raise refused

    def append_many(self, appends: Sequence[Append]) -> list[BaseException | None]:
        for a in appends:
            check_status(a.status)
        if not appends:
            return []
        keys = [key for a in appends for key in self._append_keys(a)]
        args = [arg for a in appends for arg in self._append_args(a)]
        replies = self._call(self._append_many, keys, args)
        return [self._refusal(a, reply) for a, reply in zip(appends, replies, strict=True)]

    def load(self, run_id: str) -> list[Record]:
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(self._run(run_id))
        pipe.lrange(self._records(run_id), 0, -1)
        exists, items = self._guard(pipe.execute)
        if not exists:
            raise RunNotFoundError(run_id, self.url)
        records = []
        for position, item in enumerate(items):
            if len(item) < _HEAD.size:
                raise SnapshotError(f"stored record #{position + 1} of {len(items)} is truncated", run_id=run_id)
            seq, full = _HEAD.unpack_from(item)
            records.append(Record(seq, full, bytes(item[_HEAD.size :])))
        return records

    def info(self, run_id: str) -> RunInfo:
        # replies are bytes: the client never decodes responses (see __init__), which redis-py's types cannot tell
        fields = cast(dict[bytes, bytes], self._guard(lambda: self.client.hgetall(self._run(run_id))))
        if not fields:
            raise RunNotFoundError(run_id, self.url)
        return reported(_run_info(run_id, fields))

    def runs(
        self, status: RunStatus | Collection[RunStatus] | None = None, limit: int = 100, after: str | None = None
    ) -> list[RunInfo]:
        return list_runs(self._page, status, limit, after)

    def delete(self, run_id: str) -> bool:
        return bool(self._call(self._delete, [], [self.prefix, run_id]))

    def purge(self, status: RunStatus | Collection[RunStatus] = TERMINAL, older_than: float = 0.0) -> int:
        cutoff = repr(get_clock().now() - older_than)
        purged = 0
        for each in terminal_statuses(status):
            while True:
                deleted = int(self._call(self._purge, [], [self.prefix, each, _PURGE_BATCH, cutoff]))
                purged += deleted
                if deleted < _PURGE_BATCH:
                    break
        return purged

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        now = get_clock().now()
        reply = self._call(
            self._acquire, [self._run(run_id)], [owner, repr(now), repr(now + self.lease_ttl), steal_from or ""]
        )
        if reply[0] == -1:
            raise RunNotFoundError(run_id, self.url)
        if reply[0] == 0:
            raise RunLeaseError(run_id, reply[1].decode(), _float(reply[2]))

    def renew(self, run_id: str, owner: str) -> bool:
        return bool(self._call(self._renew, [self._run(run_id)], [owner, repr(get_clock().now() + self.lease_ttl)]))

    def release(self, run_id: str, owner: str) -> None:
        self._call(self._release, [self._run(run_id)], [owner])

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
            self.client.connection_pool.disconnect()

    # -- internals ---------------------------------------------------------------------

    def _run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{{{run_id}}}"

    def _records(self, run_id: str) -> str:
        return f"{self.prefix}:records:{{{run_id}}}"

    @staticmethod
    def _pack(record: Record) -> bytes:
        return _HEAD.pack(record.seq, record.full) + record.data

    def _append_keys(self, a: Append) -> list[str]:
        return [self._run(a.run_id), self._records(a.run_id)]

    def _append_args(self, a: Append) -> list[Any]:
        # A leading "=" marks a present value, so that an empty string and None differ.
        return [
            self.prefix, a.run_id, a.owner, repr(get_clock().now()), a.record.seq, self._pack(a.record),
            "1" if a.record.full else "0", a.status or "",
            "" if a.result is None else "=" + a.result, "" if a.error is None else "=" + a.error,
        ]  # fmt: skip

    def _refusal(self, a: Append, reply: list[Any]) -> Exception | None:
        """The error an append script's reply stands for, or None when the record was stored."""
        if reply[0] == 1:
            return None
        if reply[0] == -1:
            return RunNotFoundError(a.run_id, self.url)
        if reply[0] == 0:
            return RunLeaseError.lost(a.run_id, reply[1].decode() or None, _float(reply[2]))
        return RunConflictError(a.run_id, a.record.seq, int(reply[1]) + 1)

    def _page(self, statuses: tuple[str, ...] | None, limit: int, after: tuple[float, str] | None) -> list[RunInfo]:
        indexes = [f"{self.prefix}:status:{each}" for each in statuses or ()] or [f"{self.prefix}:runs"]
        reply = self._call(
            self._page_script,
            indexes,
            [self.prefix, limit, "" if after is None else repr(after[0]), "" if after is None else after[1]],
        )
        rows = []
        for run_id, flat in zip(reply[::2], reply[1::2], strict=True):
            if flat:
                rows.append(
                    _run_info(run_id.decode("utf-8", "surrogateescape"), dict(zip(flat[::2], flat[1::2], strict=True)))
                )
        return rows

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return self._guard(lambda: script(keys=keys, args=args))

    def _guard(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except self._unauthenticated as exc:  # up, but it did not let this client in: nothing was sent
            raise StoreAuthenticationError(
                f"Redis at {self.url} refused to authenticate ({exc}): check the password (and user) in its URL"
            ) from None
        except self._unreachable as exc:
            raise StoreUnavailableError(
                f"Redis at {self.url} is unreachable ({exc}); each write is atomic, so a stored run holds its "
                "last checkpoint or, if Redis went away during this write, this one too: resume once it is back"
            ) from None
        except self._refused as exc:  # READONLY, OOM...: up, but not taking writes
            if str(exc).startswith("WRONGTYPE") or "attempt to " in str(exc):  # a key or field edited by hand
                raise SnapshotError(
                    f"Redis at {self.url} holds data durableflow did not write ({exc}): a key or field was edited by "
                    "hand or by another program; restore the run's keys from a backup, or delete them"
                ) from None
            raise StoreUnavailableError(f"Redis at {self.url} refused the operation ({exc})") from None


def client_of(url: str, socket_timeout: float) -> redis.Redis:
    """A client of the Redis at ``url`` with no retries (from_url's default): a write that timed out is not
    sent again behind our back. A URL redis-py cannot read is a ``ValueError`` naming it, which redis-py's
    ("Port could not be cast to integer value") does not."""
    import redis

    try:
        return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
    except ValueError as exc:
        raise ValueError(
            f"{without_password(url)} is not a Redis URL that redis-py can read ({exc}); "
            "write it as redis://[[USER]:PASSWORD@]HOST:PORT/DB, or rediss:// for TLS"
        ) from None


def _float(value: bytes | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:  # edited by hand: an error message cannot name the time, but must not fail
        return None


def _run_info(run_id: str, fields: dict[bytes, bytes]) -> RunInfo:
    """The stored fields as they are: one that is missing or does not parse is kept as it is (``None`` or its
    text), for ``check_info`` to name, so one edited run cannot break a listing of the others."""

    def text(name: str) -> str | None:
        value = fields.get(name.encode())
        return value.decode("utf-8", "surrogateescape") if value is not None else None

    if b"__unreadable__" in fields:  # its key holds something other than a hash
        return RunInfo(run_id, None, None, None, None, None, error=text("__unreadable__"))  # type: ignore[arg-type]

    def number(name: str, kind: type[float] | type[int]) -> Any:
        value = text(name)
        try:
            return kind(value) if value is not None else None
        except ValueError:
            return value

    return RunInfo(
        run_id=run_id,
        workflow=text("workflow"),  # type: ignore[arg-type]
        status=text("status"),  # type: ignore[arg-type]
        created_at=number("created_at", float),
        updated_at=number("updated_at", float),
        last_seq=number("last_seq", int),
        result=text("result"),
        error=text("error"),
        lease_owner=text("lease_owner"),
        lease_expires_at=number("lease_expires_at", float),
    )
