"""The fake world's Redis: clients that stand for the workflow's own, and its contents copied, put back and read.

The harness copies the world at every crash point and reads it at the end of
every scenario. Through the Redis protocol each key costs a few round trips
of redis-py and fakeredis; here the server's databases are read and written
directly, under the lock that fakeredis holds for every command, so a copy is
also one instant of the server however many clients write to it. A value is
copied as ``DUMP`` copies it (pickled), and read out for comparison through
the protocol of a scratch server, once per distinct value.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import pickle
import select
import socket
import socketserver
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, final

Dumped = dict[tuple[int, bytes], tuple[bytes, float | None]]
"""Every key of every database: its value pickled, and the seconds it has left to live (``None``: forever)."""


def _item_class() -> Any:
    try:
        from fakeredis._core import Item  # type: ignore[attr-defined, unused-ignore]
    except ImportError:  # fakeredis before 2.30 kept it beside its commands
        from fakeredis._commands import Item  # type: ignore[attr-defined, no-redef, unused-ignore]
    return Item


@final
class RedisContents:
    """Copies, restores, empties and reads out one fakeredis server's databases."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self._item = _item_class()

    def dump(self) -> Dumped:
        now = time.time()  # fakeredis's clock: the frozen one during an exploration
        with self.server.lock:
            return {
                (db, key): (pickle.dumps(item.value, pickle.HIGHEST_PROTOCOL), _left(item.expireat, now))
                for db, database in self.server.dbs.items()
                for key, item in database._dict.items()
                if item.expireat is None or item.expireat >= now
            }

    def restore(self, dumped: Dumped) -> None:
        """Make the server hold exactly ``dumped``; keys keep the time they had left, as ``RESTORE`` would."""
        now = time.time()
        with self.server.lock:
            self._clear()
            for (db, key), (value, left) in dumped.items():
                item = self._item(pickle.loads(value))
                item.expireat = None if left is None else now + left
                self.server.dbs[db][key] = item  # also schedules the expiry

    def clear(self) -> None:
        with self.server.lock:
            self._clear()

    def _clear(self) -> None:
        for database in self.server.dbs.values():
            database.clear()

    def readable(self) -> dict[str, Any]:
        """Every key as JSON-comparable data, named ``db:key``: ``{"type": "hash", "value": {...}}``.

        The values returned are shared between calls: read them, never change them.
        """
        snapshot: dict[str, Any] = {}
        for (db, key), (value, _) in sorted(self.dump().items()):
            shown = _READABLE.get(value)
            if shown is None:
                shown = _read_out(value, self._item)
            snapshot[f"{db}:{key.decode(errors='replace')}"] = shown
        return snapshot


_READABLE: dict[bytes, dict[str, Any]] = {}
"""Each value read out so far, by its pickled bytes: most scenarios end with the same few values, and
most explorations of a workflow with the same ones as the last (about 0.7 ms a value to read out)."""
_READABLE_SIZE = 1024
_SCRATCH: list[Any] = []
_SCRATCH_LOCK = threading.Lock()


def _read_out(value: bytes, item: Any) -> dict[str, Any]:
    """Read a pickled value as a client would, on a scratch server of its own; remembered."""
    import fakeredis

    with _SCRATCH_LOCK:  # one key on one scratch server: one value at a time
        if not _SCRATCH:
            server = fakeredis.FakeServer()
            _SCRATCH.extend((server, fakeredis.FakeRedis(server=server)))
        server, client = _SCRATCH
        with server.lock:
            server.dbs[0][b"value"] = item(pickle.loads(value))
        try:
            shown = redis_value(client, b"value")
        finally:
            client.delete(b"value")
        if len(_READABLE) >= _READABLE_SIZE:
            _READABLE.clear()
        _READABLE[value] = shown
    return shown


def _left(expireat: float | None, now: float) -> float | None:
    return None if expireat is None else max(expireat - now, 0.0)


def redis_value(client: Any, key: bytes) -> dict[str, Any]:
    """One key's type and value, as JSON-comparable data."""
    kind = client.type(key).decode()
    if kind == "string":
        value: Any = client.get(key)
    elif kind == "list":
        value = client.lrange(key, 0, -1)
    elif kind == "hash":
        # JSON keys are text
        value = {field.decode(errors="replace"): v for field, v in sorted(client.hgetall(key).items())}
    elif kind == "set":
        value = sorted(client.smembers(key))
    elif kind == "zset":
        value = client.zrange(key, 0, -1, withscores=True)
    else:
        value = f"<{kind}>"
    return {"type": kind, "value": json.loads(json.dumps(value, default=_text))}


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value).__name__)


class FakeRedisFor:
    """The override for a Redis type: a client of the world's server, configured like the real one.

    ``durableflow`` hands it each factory it replaces (``for_resource``); the
    factory's client is built once (redis-py connects lazily) to read its
    options, so a workflow decoding responses gets text, as it would.
    """

    def __init__(self, world: Any, asyncio: bool) -> None:
        self._world = world
        self._asyncio = asyncio
        self._options: dict[Callable[[], Any], dict[str, Any]] = {}

    @property
    def learnt(self) -> Mapping[Callable[[], Any], dict[str, Any]]:
        """The options learnt so far, by the factory they were learnt from."""
        return self._options

    def __call__(self) -> Any:
        """A resource whose factory is the Redis class itself (``Resource(redis.Redis)``) matches this
        override as its factory, not its type, so ``durableflow`` calls it instead of ``for_resource``."""
        return self._world.redis_client(asyncio=self._asyncio)

    def for_resource(self, factory: Callable[[], Any]) -> Callable[[], Any]:
        options = self.options(factory)
        self._world.served_redis_options = options
        return lambda: self._world.redis_client(options, self._asyncio)

    def options(self, factory: Callable[[], Any]) -> dict[str, Any]:
        """How the client ``factory`` builds decodes and which database it uses: learnt once per factory
        (building a redis-py client costs more than a short run), then remembered by every life."""
        options = self._options.get(factory)
        if options is None:
            kwargs = getattr(getattr(_template(factory), "connection_pool", None), "connection_kwargs", {})
            options = self._options[factory] = {
                "decode_responses": bool(kwargs.get("decode_responses")),
                "db": int(kwargs.get("db", 0)),
            }
        return options


def _template(factory: Callable[[], Any]) -> Any:
    try:
        with _lib_version_once():
            client = factory()
    except Exception:  # a factory that needs the real server: fall back to redis-py's defaults
        return None
    if inspect.iscoroutine(client):  # an async factory: not worth a loop to learn its options
        client.close()
        return None
    return client


@contextmanager
def _lib_version_once() -> Iterator[None]:
    """redis-py reads its own version from the installed package's metadata for every client it builds, a
    few milliseconds each time: while a factory builds the client to learn from, it reads it once a process."""
    try:
        import redis.utils
    except ImportError:
        yield
        return
    read = getattr(redis.utils, "get_lib_version", None)
    if read is None:
        yield
        return
    redis.utils.get_lib_version = lambda: _once(read)
    try:
        yield
    finally:
        redis.utils.get_lib_version = read


@functools.cache
def _once(read: Callable[[], Any]) -> Any:
    return read()


def served(fakeredis: Any) -> Any:
    """The shared world's fakeredis, serving: on a Unix socket by one thread (``_redisserver``), or where
    fakeredis does not look as that expects (or no directory has a path short enough for a socket's), on
    fakeredis's own TCP server. ``stop()`` ends it."""
    from ._redisserver import UnixRedisServer, internals, socket_directory

    parts = internals()
    directory = socket_directory("durableflow-redis-", "redis.sock") if hasattr(socket, "AF_UNIX") else None
    if parts is None or directory is None:
        if directory is not None:
            os.rmdir(directory)
        server = tcp_server(fakeredis)
        server.start()
        return server
    fake_server = fakeredis.FakeServer(server_type="redis", version=(8, 0))
    return UnixRedisServer(fake_server, parts, _quiet_internal(), directory)


def endpoint(address: str | tuple[str, int]) -> dict[str, Any]:
    """A redis-py client's options for the world's server at ``address``: a Unix socket's path, or TCP."""
    if isinstance(address, str):
        return {"unix_socket_path": address}
    return {"host": address[0], "port": address[1]}


def tcp_server(fakeredis: Any) -> Any:
    """A fakeredis server on a loopback port that answers without Nagle's delay.

    It writes each reply of a pipeline (or of MULTI/EXEC) as a small write of
    its own; with Nagle, every one after the first waits for the client's
    delayed ACK, 40 ms a round trip instead of a tenth of one.
    """

    class Server(fakeredis.TcpFakeServer):  # type: ignore[misc]
        def get_request(self) -> tuple[socket.socket, Any]:
            connection, address = super().get_request()
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return connection, address

        def start(self) -> None:
            self._wake = os.pipe()
            self._thread = threading.Thread(target=self._serve, daemon=True, name="durableflow-redis")
            self._thread.start()

        def _serve(self) -> None:
            # woken by ``stop`` at once: ``serve_forever`` notices a shutdown only at its next poll,
            # half its interval of wall time at the end of every exploration
            while self._wake[0] not in select.select([self.fileno(), self._wake[0]], [], [])[0]:
                self._handle_request_noblock()

        def stop(self) -> None:
            event = getattr(self, "_shutdown_event", None)
            if event is not None:  # fakeredis's own: the connections' handlers end
                event.set()
            os.write(self._wake[1], b"x")
            self._thread.join()
            self.server_close()  # joins the handlers
            for fd in self._wake:
                os.close(fd)

        def shutdown(self) -> None:  # ``serve_forever``'s stop would wait for a loop that never ran
            self.stop()

    server = Server(("127.0.0.1", 0), server_type="redis")
    server.RequestHandlerClass = _chunked(server.RequestHandlerClass)
    return server


def _chunked(handler: type) -> type:
    """fakeredis's connection handler, reading what the client sent at once rather than line by line.

    The stock handler hands the server each line of a command (five for a one-field HSET) and polls for
    a reply after each: about a millisecond of the test's process for each life that connects, most of
    it there. Here all the bytes that arrived go in one piece, and the replies are read out as before.
    Its connection also skips introducing itself to the server (``CLIENT SETINFO``, twice), which a
    real server would never see. Left as it is with a fakeredis that does not look as expected.
    """
    module = sys.modules.get(handler.__module__)
    names = ("RaiseErrorTypes", "_INTERNAL_CONNECTION_KWARGS", "FakeRedisConnection", "Writer", "fcntl")
    if module is None or not all(hasattr(module, name) for name in names) or "handle" not in vars(handler):
        return handler
    raised, kwargs, connection_class, writer_class, fcntl = (getattr(module, name) for name in names)
    poll = getattr(module, "_POLL_INTERVAL", 0.01)

    class Chunked(handler):  # type: ignore[misc]
        def setup(self) -> None:
            socketserver.StreamRequestHandler.setup(self)
            fd = self.connection.fileno()  # non-blocking as the stock handler makes it
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
            self.writer = writer_class(self.client_address, self.wfile, self)
            self.current_client = self.server.clients.get(self.client_address)
            if self.current_client is None:
                self.current_client = self.server.clients[self.client_address] = connection_class(
                    server=self.server.fake_server,
                    writer=self.writer,
                    client_info={
                        "laddr": self.connection.getsockname(),
                        "addr": self.connection.getpeername(),
                        "fd": fd,
                    },
                    **kwargs,
                    **_quiet_internal(),
                )

        def handle(self) -> None:
            client, connection = self.current_client, self.connection
            while not self.server._shutdown_event.is_set():
                try:
                    if client.can_read():
                        try:
                            response = client.read_response()
                        except raised as exc:  # an error reply: sent, and the connection served on
                            response = exc
                        self.writer.dump(response)
                        continue
                    try:
                        data = connection.recv(65536)
                    except BlockingIOError:
                        select.select([connection], [], [], poll)
                        continue
                    if not data:
                        break
                    client.get_socket().sendall(data)
                except ConnectionError:
                    break
                except Exception as exc:
                    self.writer.dump(exc)
                    break

    return Chunked


@functools.cache
def _quiet_internal() -> dict[str, Any]:
    """What keeps fakeredis's own connection behind a socket from introducing itself to its server."""
    import redis.connection

    parameters = {
        name
        for cls in redis.connection.Connection.__mro__
        if "__init__" in vars(cls)
        for name in inspect.signature(vars(cls)["__init__"]).parameters
    }
    if "driver_info" in parameters:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None} if "lib_name" in parameters else {}


@functools.cache
def quiet_connect(client_cls: type) -> dict[str, Any]:
    """Options that keep a client from introducing itself (``CLIENT SETINFO``, two round trips) as it connects
    to the world's server: a life connects once, and runs only a few commands."""
    parameters = inspect.signature(client_cls).parameters
    quiet: dict[str, Any] = {}
    if "driver_info" in parameters:
        quiet["driver_info"] = None
    elif "lib_name" in parameters:
        quiet.update(lib_name=None, lib_version=None)
    if "maint_notifications_config" in parameters:  # redis-py 7+: a cluster's maintenance news, for a fake
        from redis.maint_notifications import MaintNotificationsConfig

        quiet["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return quiet


def client_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A served client's options: the real client's decoding and database, raw bytes on db 0 by default."""
    return {"decode_responses": False, "db": 0, **(options or {})}


def _is_redis(annotation: object) -> bool:
    module = getattr(annotation, "__module__", "") or ""
    return isinstance(annotation, type) and module.split(".")[0] == "redis"


def may_be_redis(resource: Any, annotation: object) -> bool:
    """A Redis-typed resource, or one typed loosely (``Any``) whose factory does not say it builds something
    else: the engine fakes what such a factory built if it is a Redis client, so the world must serve one."""
    if annotation is not Any and annotation is not object and isinstance(annotation, type):
        return _is_redis(annotation)
    try:
        built = typing.get_type_hints(resource.factory).get("return")
    except Exception:  # a hint naming what cannot be imported here: nothing learnt from it
        built = None
    return built is None or _is_redis(built)


def redis_fakes(fakes: dict[object, Callable[[], Any]]) -> dict[object, tuple[Callable[[], Any], bool]]:
    """Take out of ``fakes`` those that build a fakeredis client (``fakeredis.FakeRedis``, or the ``fake_redis``
    fixture, whose class says ``fake_redis = True``): a client of a server of its own would keep its keys out
    of the comparison, so the world serves them one of its server, decoding as the fake does. Each as (its
    factory, whether it is asynchronous)."""
    found: dict[object, tuple[Callable[[], Any], bool]] = {}
    for key, factory in list(fakes.items()):
        if inspect.isclass(factory) and factory.__module__.split(".")[0] != "fakeredis":
            continue  # a class of the user's: not built here, where building may count
        try:
            built = factory()
        except Exception:  # a fake that needs its test's setup: left as the user's fake
            continue
        if type(built).__module__.split(".")[0] == "fakeredis" or getattr(type(built), "fake_redis", False):
            import redis.asyncio

            found[key] = (factory, isinstance(built, redis.asyncio.Redis))
            del fakes[key]
    return found


@dataclass(frozen=True)
class LikeFake:
    """What another interpreter gets for a fakeredis fake's factory (which may hold what cannot be pickled,
    such as the ``fake_redis`` fixture): a factory of a fakeredis client decoding as the fake does."""

    options: tuple[tuple[str, Any], ...]
    is_async: bool

    def __call__(self) -> Any:
        import fakeredis

        return (fakeredis.FakeAsyncRedis if self.is_async else fakeredis.FakeRedis)(**dict(self.options))
