"""``RedisCheckpointer``: runs in Redis, so workers on many machines share them.

Each write is one Lua script, so it is atomic and fenced by the lease: a worker
that lost its lease cannot append. Keys, for a prefix ``p`` and run ``r``:
``p:run:{r}`` (hash of metadata and lease), ``p:records:{r}`` (list of records
from the newest full one), ``p:runs`` (sorted set of run ids by creation time).
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._checkpointer import Record, RunInfo, RunStatus
from ._clock import get_clock
from ._errors import RunExistsError, RunLeaseError, RunNotFoundError, SnapshotError, StoreUnavailableError

if TYPE_CHECKING:
    import redis

T = TypeVar("T")

_HEAD = struct.Struct(">Q?")  # seq, full: stored before each record's bytes

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'workflow', ARGV[2], 'status', 'running', 'created_at', ARGV[3],
           'updated_at', ARGV[3], 'last_seq', ARGV[4], 'lease_owner', ARGV[6], 'lease_expires_at', ARGV[7])
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local holder = redis.call('HGET', KEYS[1], 'lease_owner')
if holder ~= ARGV[1] then
  return {0, holder or '', redis.call('HGET', KEYS[1], 'lease_expires_at') or ''}
end
if ARGV[5] == '1' then redis.call('DEL', KEYS[2]) end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2], 'last_seq', ARGV[3])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[6])
  redis.call('HDEL', KEYS[1], 'result', 'error')
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'result', string.sub(ARGV[7], 2)) end
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'error', string.sub(ARGV[8], 2)) end
  if ARGV[6] == 'completed' or ARGV[6] == 'failed' or ARGV[6] == 'cancelled' then
    redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_expires_at')
  end
end
return {1}
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
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ImportError("RedisCheckpointer needs redis-py: pip install 'durableflow[redis]'") from None
        self._owns_client = True  # closed with the checkpointer; a client the caller passed is theirs to close
        if isinstance(url_or_client, str):
            self.client = redis.Redis.from_url(
                url_or_client,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                retry_on_timeout=False,
            )
            self.url = url_or_client
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
        self._unreachable: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
        self._refused: type[Exception] = redis.RedisError
        self._create = self.client.register_script(_CREATE)
        self._append = self.client.register_script(_APPEND)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)

    # -- the protocol ----------------------------------------------------------------

    def create(self, run_id: str, workflow: str, record: Record, owner: str) -> None:
        now = get_clock().now()
        created = self._call(
            self._create,
            [self._run(run_id), self._records(run_id), f"{self.prefix}:runs"],
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
        # A leading "=" marks a present value, so that an empty string and None differ.
        reply = self._call(
            self._append,
            [self._run(run_id), self._records(run_id)],
            [
                owner, repr(get_clock().now()), record.seq, self._pack(record), "1" if record.full else "0",
                status or "", "" if result is None else "=" + result, "" if error is None else "=" + error,
            ],
        )  # fmt: skip
        if reply[0] == -1:
            raise RunNotFoundError(run_id, self.url)
        if reply[0] == 0:
            raise RunLeaseError.lost(run_id, reply[1].decode() or None, _float(reply[2]))

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
        return _run_info(run_id, fields)

    def runs(self, limit: int = 100) -> list[RunInfo]:
        index = f"{self.prefix}:runs"
        run_ids = cast(list[bytes], self._guard(lambda: self.client.zrevrange(index, 0, limit - 1)))  # as in info
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hgetall(self._run(run_id.decode()))
        rows = self._guard(pipe.execute)
        return [_run_info(run_id.decode(), fields) for run_id, fields in zip(run_ids, rows, strict=True) if fields]

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

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return self._guard(lambda: script(keys=keys, args=args))

    def _guard(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except self._unreachable as exc:
            raise StoreUnavailableError(
                f"Redis at {self.url} is unreachable ({exc}); each write is atomic, so a stored run holds its "
                "last checkpoint or, if Redis went away during this write, this one too: resume once it is back"
            ) from None
        except self._refused as exc:  # READONLY, OOM...: up, but not taking writes
            raise StoreUnavailableError(f"Redis at {self.url} refused the operation ({exc})") from None


def _float(value: bytes | None) -> float | None:
    return float(value) if value else None


def _run_info(run_id: str, fields: dict[bytes, bytes]) -> RunInfo:
    def text(name: str) -> str | None:
        value = fields.get(name.encode())
        return value.decode() if value is not None else None

    return RunInfo(
        run_id=run_id,
        workflow=text("workflow") or "",
        status=text("status") or "running",  # type: ignore[arg-type]
        created_at=float(text("created_at") or 0),
        updated_at=float(text("updated_at") or 0),
        last_seq=int(text("last_seq") or 0),
        result=text("result"),
        error=text("error"),
        lease_owner=text("lease_owner"),
        lease_expires_at=_float(fields.get(b"lease_expires_at")),
    )
